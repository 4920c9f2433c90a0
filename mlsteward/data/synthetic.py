"""Built-in synthetic patient cohort for the ``heart_disease`` demo model.

Why synthetic: the demo must run offline, at any size, without patient data, and the tests need
ground truth a real data set cannot give (the exact risk function, controlled drift). Everything
is drawn from one seeded numpy generator, so the same seed always yields the same frame.

The cohort itself -- its columns, their ranges and how patients, visits and readings are drawn
-- is described in ``synthetic_cohort``; the label's known risk function in ``synthetic_risk``.
This module is the public face: :func:`generate_cohort`, :func:`generate_batch`, the controlled
shifts and writing the result to a file.

Controlled shifts (:class:`Shift`), for drift and fairness monitoring
---------------------------------------------------------------------
Applied in this order: covariate shift of the features, then labels from the (possibly
concept-shifted) risk function, then label distortion, then prevalence resampling. Each stage
draws from its own seeded stream, so a shift changes only what it is meant to change: the same
seed with and without a concept shift gives identical features.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlsteward.data.synthetic_cohort import (
    CATEGORIES,
    ENTITY,
    FEATURE_DTYPES,
    FEATURES,
    LABEL,
    NUMERIC_RANGES,
    TIMESTAMP,
    finish_column,
    sigmoid,
    simulate_visits,
)
from mlsteward.data.synthetic_risk import RISK_VISIT_NOISE_SD, risk_logit

DEFAULT_START = "2024-01-01"
DEFAULT_MONTHS = 18
#: The day the default 18-month reference cohort ends: the natural start of a monitoring batch.
DEFAULT_BATCH_START = "2025-07-01"
#: Batch patients are new patients: their ids start far above any reference cohort's.
BATCH_ID_OFFSET = 1_000_000_000
VISITS_PER_PATIENT = 3

_N_STREAMS = 8  # visits, patients, measurements, symptoms, label, distortion, resample, spare


@dataclass(frozen=True)
class Shift:
    """A controlled departure from the reference cohort, for drift and fairness tests.

    Attributes:
        covariate: Numeric column -> additive shift in units of that column's standard deviation
            in the same (unshifted) sample, e.g. ``{"bmi": 1.0}`` moves the BMI mean up by about
            one sd. Only the named column moves (derived columns keep their values) and the
            shifted values are rounded and clipped into the config range again. Labels are
            computed from the shifted features, so this is a pure covariate shift: P(y | x)
            stays the same, while the positive rate follows the features.
        prevalence: Target positive rate in (0, 1). Achieved by **resampling rows**: a larger
            pool is generated and exactly ``round(prevalence * n_rows)`` positives and the rest
            negatives are drawn from it without replacement. That is a textbook label shift:
            P(x | y) is unchanged, so the feature distributions move with the class mix (more
            positives bring more asymptomatic chest pain, higher ST depression ...), and the
            rate is hit exactly up to rounding.
        concept: 0 = the reference risk function, 1 = :data:`CONCEPT_SHIFTED_COEFFICIENTS`
            (symptom terms flip sign, age and sex drop out); values in between interpolate.
            Features are unchanged; only how labels follow from them changes.
        label_distortion: A systematically biased label for one group, e.g.
            ``{"column": "sex", "value": "F", "flip_positive_rate": 0.5}`` turns half of the
            women's positive labels into 0 (under-diagnosis), leaving every other row alone.
    """

    covariate: dict[str, float] = field(default_factory=dict)
    prevalence: float | None = None
    concept: float = 0.0
    label_distortion: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for col, k in self.covariate.items():
            if col not in NUMERIC_RANGES:
                raise ValueError(
                    f"covariate shift: {col!r} is not a numeric feature "
                    f"(numeric features: {sorted(NUMERIC_RANGES)})"
                )
            if not math.isfinite(float(k)):
                raise ValueError(f"covariate shift for {col!r} must be finite, got {k!r}")
        if self.prevalence is not None and not 0.0 < float(self.prevalence) < 1.0:
            raise ValueError(f"prevalence must be strictly between 0 and 1, got {self.prevalence}")
        if not 0.0 <= float(self.concept) <= 1.0:
            raise ValueError(f"concept must be between 0 and 1, got {self.concept}")
        if self.label_distortion is not None:
            d = self.label_distortion
            expected = {"column", "value", "flip_positive_rate"}
            if set(d) != expected:
                raise ValueError(
                    f"label_distortion needs exactly the keys {sorted(expected)}, got {sorted(d)}"
                )
            if d["column"] not in FEATURE_DTYPES:
                raise ValueError(f"label_distortion: {d['column']!r} is not a feature column")
            cats = CATEGORIES.get(d["column"])
            if cats is not None and d["value"] not in cats:
                raise ValueError(
                    f"label_distortion: {d['value']!r} is not a category of {d['column']!r} "
                    f"({list(cats)})"
                )
            if not 0.0 <= float(d["flip_positive_rate"]) <= 1.0:
                raise ValueError("label_distortion: flip_positive_rate must be between 0 and 1")


def _labelled_pool(
    n_rows: int,
    n_patients: int,
    streams: list[np.random.SeedSequence],
    span: int,
    shift: Shift,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Features with covariate shift applied, then labels (concept shift, label distortion)."""
    cols, pidx, t, frailty = simulate_visits(n_rows, n_patients, streams, span)
    for col, k in shift.covariate.items():
        x = cols[col]
        cols[col] = finish_column(col, x + float(k) * float(np.std(x)))

    rl = np.random.default_rng(streams[4])
    logit = risk_logit(cols, shift.concept) + frailty + rl.normal(0.0, RISK_VISIT_NOISE_SD, n_rows)
    y = (rl.random(n_rows) < sigmoid(logit)).astype(np.int64)

    if shift.label_distortion is not None:
        d = shift.label_distortion
        u = np.random.default_rng(streams[5]).random(n_rows)
        flip = (
            (np.asarray(cols[d["column"]]) == d["value"])
            & (y == 1)
            & (u < float(d["flip_positive_rate"]))
        )
        y[flip] = 0
    cols[LABEL] = y
    return cols, pidx, t


def _to_utc(ts: str | pd.Timestamp) -> pd.Timestamp:
    out = pd.Timestamp(ts)
    out = out.tz_localize("UTC") if out.tz is None else out.tz_convert("UTC")
    return out.floor("s")


def _generate(
    n_rows: int,
    seed: int,
    start: pd.Timestamp,
    end: pd.Timestamp,
    shift: Shift | None,
    id_offset: int,
) -> pd.DataFrame:
    if int(n_rows) < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    n_rows = int(n_rows)
    span = int((end - start).total_seconds())
    if span < 1:
        raise ValueError(f"the time window {start} .. {end} is empty")
    shift = shift or Shift()
    streams = np.random.SeedSequence(int(seed)).spawn(_N_STREAMS)
    n_patients = max(1, math.ceil(n_rows / VISITS_PER_PATIENT))

    if shift.prevalence is None:
        cols, pidx, t = _labelled_pool(n_rows, n_patients, streams, span, shift)
    else:
        target = float(shift.prevalence)
        cols, pidx, t = _resampled_to_prevalence(n_rows, target, n_patients, streams, span, shift)

    patient_id = (int(id_offset) + 1 + pidx).astype(np.int64)
    micros = start.value // 1_000 + t.astype(np.int64) * 1_000_000
    order = np.lexsort((patient_id, micros))
    timestamps = pd.Series(micros[order].astype("datetime64[us]")).dt.tz_localize("UTC")
    frame = pd.DataFrame({ENTITY: patient_id[order], TIMESTAMP: timestamps})
    for col in (*FEATURES, LABEL):
        frame[col] = cols[col][order]
    return frame


def _resampled_to_prevalence(
    n_rows: int,
    target: float,
    n_patients: int,
    streams: list[np.random.SeedSequence],
    span: int,
    shift: Shift,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Label shift by resampling: draw a big enough pool, then exactly k positives."""
    k = round(target * n_rows)
    factor = 1.3 * max(target / 0.35, (1.0 - target) / 0.55, 1.0)
    while True:
        pool = math.ceil(n_rows * factor) + 200
        cols, pidx, t = _labelled_pool(pool, n_patients, streams, span, shift)
        pos = np.flatnonzero(cols[LABEL] == 1)
        neg = np.flatnonzero(cols[LABEL] == 0)
        if len(pos) >= k and len(neg) >= n_rows - k:
            break
        factor *= 2
    rr = np.random.default_rng(streams[6])
    keep = np.concatenate(
        [rr.choice(pos, k, replace=False), rr.choice(neg, n_rows - k, replace=False)]
    )
    return {c: v[keep] for c, v in cols.items()}, pidx[keep], t[keep]


# -- public API ----------------------------------------------------------------------------------
def generate_cohort(
    n_rows: int = 50_000,
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
    months: int = DEFAULT_MONTHS,
    shift: Shift | None = None,
    id_offset: int = 0,
) -> pd.DataFrame:
    """The reference patient cohort: ``n_rows`` visits of about ``n_rows / 3`` patients.

    Args:
        n_rows: Exact number of rows (visits).
        seed: Everything is derived from it; the same seed gives an identical frame.
        start: Window start; naive times are taken as UTC.
        months: Window length in calendar months.
        shift: Optional controlled shift, see :class:`Shift`.
        id_offset: Patient ids are ``id_offset + 1 ... id_offset + n_patients``.

    Returns:
        A frame with :data:`COLUMNS`, sorted by event_timestamp then patient_id, with a
        fresh RangeIndex.
    """
    begin = _to_utc(start)
    if int(months) < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    return _generate(
        n_rows, seed, begin, begin + pd.DateOffset(months=int(months)), shift, id_offset
    )


def generate_batch(
    n_rows: int = 5_000,
    seed: int = 1,
    start: str | pd.Timestamp = DEFAULT_BATCH_START,
    days: int = 30,
    shift: Shift | None = None,
    id_offset: int = BATCH_ID_OFFSET,
) -> pd.DataFrame:
    """A later batch of visits (default: the 30 days after the reference window), for drift tests.

    Same generator as :func:`generate_cohort`, over a window of ``days`` days. Batch patients
    are new patients (ids above ``id_offset``); give several batches different seeds and, if
    their ids must not repeat, different offsets.

    Args:
        n_rows: Exact number of rows.
        seed: Use a different seed from the reference cohort's, or the batch replays it.
        start: Window start; naive times are taken as UTC.
        days: Window length in days.
        shift: Optional controlled shift, see :class:`Shift`.
        id_offset: Patient ids are ``id_offset + 1 ...``.

    Returns:
        A frame shaped exactly like :func:`generate_cohort`'s.
    """
    begin = _to_utc(start)
    if int(days) < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    return _generate(n_rows, seed, begin, begin + pd.Timedelta(days=int(days)), shift, id_offset)


def write_dataset(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as parquet (``.parquet``/``.pq``) or CSV (``.csv``), creating parent dirs.

    The file appears atomically (written next to the target, then renamed), so a watcher never
    ingests half a file. In CSV, datetime columns are written as ISO 8601 in UTC with an explicit
    offset (``2024-01-01T08:30:00+00:00``; naive columns are taken to be UTC already), so the
    time zone survives a round trip through text.

    Args:
        df: The frame to write (its index is not written).
        path: Target file; the suffix picks the format.

    Returns:
        The absolute path written.
    """
    target = Path(path).expanduser().resolve()
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ValueError(f"{target}: unsupported suffix {suffix!r} (use .parquet, .pq or .csv)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix == ".csv":
            out = df.copy()
            for col in out.columns:
                if pd.api.types.is_datetime64_any_dtype(out[col]):
                    out[col] = _iso_utc(out[col])
            out.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def append_dataset(df: pd.DataFrame, path: str | Path) -> Path:
    """Add rows to an existing dataset file (or create it), as an upstream table grows.

    The whole file is rewritten atomically through :func:`write_dataset`, so a reader sees the
    old or the new file, never a partial one. Columns must match the file's exactly: a batch
    with a different layout is a different dataset, not new rows of this one.
    """
    target = Path(path).expanduser().resolve()
    if not target.exists():
        return write_dataset(df, target)
    if target.suffix.lower() == ".csv":
        old = pd.read_csv(target)
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]) and col in old.columns:
                old[col] = pd.to_datetime(old[col], utc=True, format="ISO8601")
    else:
        old = pd.read_parquet(target)
    if list(old.columns) != list(df.columns):
        raise ValueError(
            f"{target}: cannot append rows with columns {list(df.columns)} to a file with "
            f"columns {list(old.columns)}"
        )
    return write_dataset(
        pd.concat([old, df.astype(old.dtypes.to_dict())], ignore_index=True), target
    )


def _iso_utc(s: pd.Series) -> pd.Series:
    """ISO 8601 strings in UTC with a ``+00:00`` offset; sub-second digits only when present."""
    utc = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    fractional = bool((utc.dt.microsecond.fillna(0) != 0).any())
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if fractional else "%Y-%m-%dT%H:%M:%S"
    return utc.dt.strftime(fmt) + "+00:00"

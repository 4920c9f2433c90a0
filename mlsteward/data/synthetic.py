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
seed with and without a concept shift gives identical features. These steps are the same for
every built-in dataset (``synthetic_engine``, ``synthetic_shift``; the registry of them is
``builtin``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mlsteward.data.synthetic_cohort import (
    CATEGORIES,
    ENTITY,
    FEATURES,
    LABEL,
    NUMERIC_RANGES,
    TIMESTAMP,
    finish_column,
    simulate_visits,
)
from mlsteward.data.synthetic_draws import bernoulli
from mlsteward.data.synthetic_engine import (
    BATCH_ID_OFFSET,
    DEFAULT_BATCH_START,
    DEFAULT_MONTHS,
    DEFAULT_START,
    SyntheticDataset,
)
from mlsteward.data.synthetic_risk import RISK_VISIT_NOISE_SD, risk_logit
from mlsteward.data.synthetic_shift import BaseShift, ShiftRules

__all__ = [
    "BATCH_ID_OFFSET",
    "DEFAULT_BATCH_START",
    "DEFAULT_MONTHS",
    "DEFAULT_START",
    "HEART_DISEASE",
    "VISITS_PER_PATIENT",
    "Shift",
    "append_dataset",
    "generate_batch",
    "generate_cohort",
    "write_dataset",
]

VISITS_PER_PATIENT = 3


class Shift(BaseShift):
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
        outcome_scale: Not for this binary label (refused); see :class:`BaseShift`.
    """

    rules = ShiftRules.of(NUMERIC_RANGES, CATEGORIES, FEATURES)


def _outcome(
    cols: dict[str, np.ndarray], frailty: np.ndarray, concept: float, rng: np.random.Generator
) -> np.ndarray:
    """Bernoulli labels from the known risk function, the patient's frailty and visit noise."""
    return bernoulli(rng, risk_logit(cols, concept) + frailty, RISK_VISIT_NOISE_SD)


#: The heart-disease cohort as a built-in dataset (the functions below are its public face).
HEART_DISEASE = SyntheticDataset(
    entity=ENTITY,
    timestamp=TIMESTAMP,
    label=LABEL,
    columns=FEATURES,
    visits_per_entity=VISITS_PER_PATIENT,
    shift_type=Shift,
    simulate=simulate_visits,
    finish=finish_column,
    outcome=_outcome,
    pool_shares=(0.35, 0.55),
)


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
    return HEART_DISEASE.generate_cohort(n_rows, seed, start, months, shift, id_offset)


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
    return HEART_DISEASE.generate_batch(n_rows, seed, start, days, shift, id_offset)


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

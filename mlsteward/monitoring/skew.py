"""Training-serving skew: the features the service answered with, against what Feast's offline
store says they were at the same moment.

A model is trained on point-in-time rows from the offline store and answers online requests
with values from the online store. The two should agree: the online store is loaded from the
same source (``features.materialize``). When they do not (a materialization that did not run,
an online write that bypassed the source, a stale value past its TTL, a source backfilled after
the fact, a type lost on the way), the model answers on inputs it was never trained on, and no
drift test notices, because both sides may look alike as distributions. So this check works
row by row: for each served row it asks the offline store, through the project's point-in-time
retrieval (``features.retrieval.get_training_frame``: Feast's semantics, the TTL and the
created-timestamp tie-break included, never a join of our own), what the features were for that
entity at the serve time, and compares value by value.

Which rows: the prediction service's rows read from the online store. The log tells them apart
without a column of its own: a row the service scored from client-supplied ``instances`` has no
entity id (the service logs ``None``), and a batch-scoring row (``monitoring.scoring``, features
from the offline store or a file) has no ``request_id``. Of those in the window the newest
``max_rows`` are checked (``read_served``: the features of the older rows are never read), so
memory follows ``max_rows``, not the log. The point-in-time moment is ``scored_at``, the serve
time, which the service also writes as the row's event time.

How values compare, per feature: numbers are equal within a relative tolerance of the offline
value (``|served - offline| <= tolerance * |offline|``); booleans and categories must be equal
(both as the raw values the log and the offline store hold, never the model's integer codes).
A row where the served value exists and the offline store has none is a mismatch of its own
kind (``missing_offline``), counted apart from values that differ (``differing``); both count
towards the mismatch rate the alert rule reads. Two missing values agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig
from mlsteward.errors import MlstewardError
from mlsteward.features.dtypes import registered_feature_dtypes
from mlsteward.features.retrieval import ROW_ID, get_training_frame
from mlsteward.features.store import get_store
from mlsteward.monitoring.prediction_log import (
    BATCH_ID,
    SCORED_AT,
    TS_TYPE,
    batch_files,
    open_dataset,
    utc_ts,
    window_filter,
)

RULE = "skew"
REQUEST_ID = "request_id"
"""Set by the prediction service on every row it logs; batch scoring never writes it."""
MODEL_VERSION = "model_version"
WORST_ENTITIES = 5
"""Entities listed per feature: enough to start looking, few enough for a notification."""
NUMBER_KINDS = ("int", "float")
_FILES_PER_SCAN = 512
DIFFERING = "differing"
MISSING_OFFLINE = "missing_offline"


@dataclass(frozen=True)
class WorstEntity:
    """One entity whose served value of a feature disagreed most with the offline store:
    its worst row (the largest difference; a missing offline value after every differing
    number) and how many of its checked rows disagreed."""

    entity: Any
    served_at: str
    served: Any
    offline: Any
    kind: str
    abs_diff: float | None
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "served_at": self.served_at,
            "served": self.served,
            "offline": self.offline,
            "kind": self.kind,
            "abs_diff": self.abs_diff,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class FeatureSkew:
    """One feature over the checked rows.

    ``mean_abs_diff`` and ``max_abs_diff`` are the size of a disagreement: over the rows whose
    numbers differ (beyond the tolerance), in the feature's units; None for booleans,
    categories, or when no number differs.
    """

    feature: str
    kind: str
    rows: int
    differing: int
    missing_offline: int
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    worst: list[WorstEntity] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return self.differing + self.missing_offline

    @property
    def mismatch_rate(self) -> float | None:
        """Share of checked rows that disagree either way; None with no rows to compare."""
        return self.mismatches / self.rows if self.rows else None

    def to_dict(self) -> dict[str, Any]:
        rows = self.rows
        return {
            "feature": self.feature,
            "kind": self.kind,
            "rows": rows,
            "mismatches": self.mismatches,
            "mismatch_rate": self.mismatch_rate,
            DIFFERING: self.differing,
            "differing_rate": self.differing / rows if rows else None,
            MISSING_OFFLINE: self.missing_offline,
            "missing_offline_rate": self.missing_offline / rows if rows else None,
            "mean_abs_diff": self.mean_abs_diff,
            "max_abs_diff": self.max_abs_diff,
            "worst_entities": [w.to_dict() for w in self.worst],
        }


@dataclass
class SkewResult:
    """One skew check of a model's served rows.

    ``rows_in_window`` counts the window's rows read from the online store; ``rows_checked``
    the newest of them that were compared (at most ``max_rows``). ``excluded`` counts the
    window's other rows: ``request`` (features the client sent) and ``batch`` (batch scoring).
    ``rows_without_offline`` are checked rows for which the offline store had no value for any
    feature (no row of the entity at that time, or none within the TTL).
    """

    model: str
    since: str
    until: str
    tolerance: float
    max_mismatch_rate: float
    max_rows: int
    rows_in_window: int
    rows_checked: int
    excluded: dict[str, int]
    rows_without_offline: int
    features: dict[str, FeatureSkew]
    versions: dict[str, int] = field(default_factory=dict)
    not_logged: list[str] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return self.rows_checked < self.rows_in_window

    @property
    def skewed(self) -> list[str]:
        """Features whose mismatch rate is above the rule's limit, in config order."""
        return [
            name
            for name, f in self.features.items()
            if f.mismatch_rate is not None and f.mismatch_rate > self.max_mismatch_rate
        ]

    def scope(self) -> str:
        """Which rows were checked, in words."""
        if not self.rows_in_window:
            return f"no online predictions logged between {self.since} and {self.until}"
        which = (
            f"the newest {self.rows_checked:,} of {self.rows_in_window:,}"
            if self.sampled
            else f"all {self.rows_checked:,}"
        )
        return f"{which} online predictions logged between {self.since} and {self.until}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "since": self.since,
            "until": self.until,
            "tolerance": self.tolerance,
            "max_mismatch_rate": self.max_mismatch_rate,
            "max_rows": self.max_rows,
            "rows_in_window": self.rows_in_window,
            "rows_checked": self.rows_checked,
            "sampled": self.sampled,
            "scope": self.scope(),
            "excluded": dict(self.excluded),
            "rows_without_offline": self.rows_without_offline,
            "versions": dict(self.versions),
            "skewed": self.skewed,
            "not_logged": list(self.not_logged),
            "features": {name: f.to_dict() for name, f in self.features.items()},
        }

    def observations(self, cfg: ModelConfig, version: str | None) -> list[Observation]:
        """One verdict per feature for the ``skew`` rule (subject: the feature); no verdict
        (``breached`` None) for a feature with no rows to compare."""
        limit = cfg.alerts.rules.skew.max_mismatch_rate
        out = []
        for name, f in self.features.items():
            rate = f.mismatch_rate
            details = {
                **f.to_dict(),
                "tolerance": self.tolerance,
                "rows_in_window": self.rows_in_window,
                "rows_checked": self.rows_checked,
                "scope": self.scope(),
                "since": self.since,
                "until": self.until,
            }
            out.append(
                Observation(
                    rule=RULE,
                    breached=None if rate is None else rate > limit,
                    summary=_summary(f, limit, self),
                    value=rate,
                    limit=limit,
                    subject=name,
                    version=version,
                    details=details,
                )
            )
        return out


def _summary(f: FeatureSkew, limit: float, result: SkewResult) -> str:
    if f.rows == 0:
        return f"skew in {f.feature}: nothing to compare ({result.scope()})"
    rate = f.mismatches / f.rows
    parts = []
    if f.differing:
        size = f" (largest difference {f.max_abs_diff:.4g})" if f.max_abs_diff is not None else ""
        parts.append(f"{f.differing:,} differ{size}")
    if f.missing_offline:
        parts.append(f"{f.missing_offline:,} have no offline value")
    how = f": {', '.join(parts)}" if parts else ""
    verdict = "skew in" if rate > limit else "no skew in"
    return (
        f"{verdict} {f.feature}: {rate:.2%} of {f.rows:,} served rows disagree with the offline "
        f"store at their serve time{how} (limit {limit:.2%})"
    )


# -- the check -----------------------------------------------------------------------------------
def check_skew(
    cfg: ModelConfig,
    *,
    now: datetime | None = None,
    since: datetime | None = None,
    max_rows: int | None = None,
    tolerance: float | None = None,
) -> SkewResult:
    """Compare the newest served rows of the window with the offline store, point in time.

    Args:
        cfg: The model (its ``alerts.rules.skew`` gives the window, row cap and tolerance).
        now: End of the window (exclusive; default: now). Naive times are UTC.
        since: Start of the window (default: ``now - window_hours``); a watch after a
            promotion passes the promotion's time.
        max_rows: Override of the rule's ``max_rows``: the newest rows checked.
        tolerance: Override of the rule's relative tolerance for numbers.

    Raises:
        MlstewardError: ``max_rows`` below 1, a logged feature column that cannot be read as
            its type, or Feast refused the retrieval (the model was never applied).
    """
    rule = cfg.alerts.rules.skew
    until = utc_ts(now or datetime.now(UTC))
    start = utc_ts(since) if since is not None else until - timedelta(hours=rule.window_hours)
    cap = max_rows if max_rows is not None else rule.max_rows
    if cap < 1:
        raise MlstewardError(f"{cfg.name}: max_rows {cap} must be at least 1 to check skew")
    tol = rule.tolerance if tolerance is None else tolerance
    served, counts, not_logged = read_served(cfg, start, until, cap)
    store = get_store()
    kinds = registered_feature_dtypes(store, cfg)
    logged = [n for n in cfg.feature_names if n not in not_logged]
    entity = cfg.source.entity
    n = served.num_rows
    if n:
        offline = get_training_frame(
            cfg,
            pd.DataFrame(
                {
                    ROW_ID: np.arange(n, dtype=np.int64),
                    entity: served.column(entity).to_numpy(),
                    cfg.timestamp_column: served.column(SCORED_AT).to_pandas(),
                }
            ),
            with_label=False,
            with_attributes=False,
            store=store,
        )
    else:
        offline = pd.DataFrame(columns=[entity, *logged])
    features = compare_features(
        served,
        offline,
        entity=entity,
        served_at=served.column(SCORED_AT),
        kinds={name: kinds.get(name, "float") for name in logged},
        tolerance=tol,
        model=cfg.name,
    )
    without = (
        int(offline[logged].isna().all(axis=1).sum()) if n and logged else 0
    )  # rows with no offline value for any feature
    versions: dict[str, int] = {}
    if n and MODEL_VERSION in served.column_names:
        for value in pc.value_counts(served.column(MODEL_VERSION)).to_pylist():
            versions[str(value["values"])] = int(value["counts"])
    return SkewResult(
        model=cfg.name,
        since=start.isoformat(),
        until=until.isoformat(),
        tolerance=tol,
        max_mismatch_rate=rule.max_mismatch_rate,
        max_rows=cap,
        rows_in_window=counts["online"],
        rows_checked=n,
        excluded={"request": counts["request"], "batch": counts["batch"]},
        rows_without_offline=without,
        features=features,
        versions=versions,
        not_logged=not_logged,
    )


def read_served(
    cfg: ModelConfig, since: pd.Timestamp, until: pd.Timestamp, max_rows: int
) -> tuple[pa.Table, dict[str, int], list[str]]:
    """The newest ``max_rows`` online-store rows with ``since <= scored_at < until``, newest
    first, with the window's row counts by origin and the features no logged batch holds.

    Two passes over the window's files, neither holding more than it keeps: the first reads
    three columns (serve time, entity id, request id) a record batch at a time, counts the
    rows by origin and keeps the online rows' serve times, whose ``max_rows``-th newest is the
    cut-off; the second reads the features of the online rows at or after the cut-off, from
    the files that hold such rows only.
    """
    entity = cfg.source.entity
    counts = {"online": 0, "request": 0, "batch": 0}
    files = batch_files(cfg.name, since, until)
    if not files:
        return _empty(cfg), counts, []
    schema = open_dataset(files).schema
    not_logged = [n for n in cfg.feature_names if n not in schema.names]
    window = window_filter(since, until)
    keys = [c for c in (SCORED_AT, entity, REQUEST_ID) if c in schema.names]
    served_at: list[np.ndarray] = []
    newest_in: dict[str, int] = {}  # file -> its newest online serve time
    for path, batch in _scan(files, schema, keys, window):
        has_id = _valid(batch, entity)
        online = has_id & _valid(batch, REQUEST_ID)
        found = int(online.sum())
        counts["online"] += found
        counts["request"] += batch.num_rows - int(has_id.sum())
        counts["batch"] += int(has_id.sum()) - found
        if found:
            times = batch.column(SCORED_AT).cast(pa.int64()).to_numpy()[online]
            served_at.append(times)
            top = int(times.max())
            newest_in[path] = max(newest_in.get(path, top), top)
    if not counts["online"]:
        return _empty(cfg), counts, not_logged
    times = np.concatenate(served_at)
    del served_at
    cap = min(max_rows, len(times))
    cutoff = int(np.partition(times, len(times) - cap)[len(times) - cap])
    del times
    features = [n for n in cfg.feature_names if n in schema.names]
    extra = [c for c in (MODEL_VERSION, BATCH_ID) if c in schema.names]
    columns = list(dict.fromkeys([entity, SCORED_AT, REQUEST_ID, *extra, *features]))
    newest = (
        window
        & (ds.field(SCORED_AT) >= pa.scalar(cutoff, pa.int64()).cast(TS_TYPE))
        & ds.field(entity).is_valid()
        & ds.field(REQUEST_ID).is_valid()
    )
    recent = [f for f in files if newest_in.get(str(f), cutoff - 1) >= cutoff]
    table = pa.Table.from_batches(
        [batch for _, batch in _scan(recent, schema, columns, newest)],
        schema=pa.schema([schema.field(c) for c in columns]),
    )
    # newest first; rows of one request share their serve time, so the rest only fixes an order
    order = [(SCORED_AT, "descending")] + [
        (c, "ascending") for c in (BATCH_ID, REQUEST_ID, entity) if c in columns
    ]
    table = table.take(pc.sort_indices(table, sort_keys=order)[:cap])
    return table, counts, not_logged


def _scan(
    files: list[Path], schema: pa.Schema, columns: list[str], flt: ds.Expression
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Each record batch of ``files`` (as ``schema`` unifies them) with the file it came from.

    A few hundred files at a time: a pyarrow dataset keeps every scanned file's parquet
    metadata while it lives, and a service that writes its log every second leaves tens of
    thousands of small files a day (18,700 of them held 1.1 GB in one dataset).
    """
    for start in range(0, len(files), _FILES_PER_SCAN):
        part = ds.dataset(
            [str(f) for f in files[start : start + _FILES_PER_SCAN]],
            schema=schema,
            format="parquet",
        )
        for tagged in part.scanner(columns=columns, filter=flt).scan_batches():
            yield tagged.fragment.path, tagged.record_batch


def _valid(batch: pa.RecordBatch, column: str) -> np.ndarray:
    """Where ``column`` has a value (nowhere when the batch lacks it)."""
    if column not in batch.schema.names:
        return np.zeros(batch.num_rows, dtype=bool)
    return np.asarray(batch.column(column).is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _empty(cfg: ModelConfig) -> pa.Table:
    return pa.table(
        {
            cfg.source.entity: pa.array([], pa.int64()),
            SCORED_AT: pa.array([], pa.timestamp("us", tz="UTC")),
        }
    )


# -- the comparison ------------------------------------------------------------------------------
Values: TypeAlias = pa.Array | pa.ChunkedArray | pd.Series


def compare_features(
    served: pa.Table | pd.DataFrame,
    offline: pd.DataFrame,
    *,
    entity: str,
    served_at: Values,
    kinds: dict[str, str],
    tolerance: float,
    model: str = "",
    worst: int = WORST_ENTITIES,
) -> dict[str, FeatureSkew]:
    """Per feature of ``kinds`` (name -> ``int``/``float``/``bool``/``category``), the served
    column against the offline one, row by row (both in the same row order).

    Raises:
        MlstewardError: a column holds values that cannot be read as its feature's kind.
    """
    n = len(served) if isinstance(served, pd.DataFrame) else served.num_rows
    if len(offline) != n:
        raise ValueError(f"{n} served rows against {len(offline)} offline rows")
    entities = _arrow(served[entity]) if n else pa.array([])
    times = _arrow(served_at)
    out = {}
    for name, kind in kinds.items():
        if not n:
            out[name] = FeatureSkew(name, kind, 0, 0, 0)
            continue
        out[name] = _compare_one(
            name, kind, served[name], offline[name], entities, times, tolerance, model, worst
        )
    return out


def _arrow(values: Values) -> pa.Array:
    if isinstance(values, pd.Series):
        return pa.array(values, from_pandas=True)
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


def _numbers(values: Values, name: str, side: str, model: str) -> np.ndarray:
    """float64, NaN where missing (booleans as 0/1)."""
    arr = _arrow(values)
    try:
        if arr.type != pa.float64():
            arr = pc.cast(arr, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MlstewardError(
            f"{model}: the {side} values of feature {name!r} ({arr.type}) are not numbers: {exc}"
        ) from None
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _texts(values: Values) -> pa.Array:
    arr = _arrow(values)
    return arr if arr.type == pa.string() else pc.cast(arr, pa.string())


def _compare_one(
    name: str,
    kind: str,
    served: Values,
    offline: Values,
    entities: pa.Array,
    times: pa.Array,
    tolerance: float,
    model: str,
    worst: int,
) -> FeatureSkew:
    abs_diff: np.ndarray | None = None
    if kind == "category":
        s, o = _texts(served), _texts(offline)
        s_na = s.is_null().to_numpy(zero_copy_only=False)
        o_na = o.is_null().to_numpy(zero_copy_only=False)
        equal = pc.fill_null(pc.equal(s, o), False).to_numpy(zero_copy_only=False)
        differs = ~o_na & (s_na | ~equal)
        s_values: Any = s
        o_values: Any = o
    else:
        s_num = _numbers(served, name, "served", model)
        o_num = _numbers(offline, name, "offline", model)
        s_na, o_na = np.isnan(s_num), np.isnan(o_num)
        with np.errstate(invalid="ignore"):
            gap = np.abs(s_num - o_num)
            allowed = tolerance * np.abs(o_num) if kind in NUMBER_KINDS else 0.0
            differs = ~o_na & (s_na | (gap > allowed))
        if kind in NUMBER_KINDS:
            abs_diff = gap
        s_values, o_values = s_num, o_num
    missing = o_na & ~s_na
    mean_gap = max_gap = None
    if abs_diff is not None:
        sized = differs & ~s_na
        if sized.any():
            mean_gap, max_gap = float(abs_diff[sized].mean()), float(abs_diff[sized].max())
    return FeatureSkew(
        feature=name,
        kind=kind,
        rows=len(differs),
        differing=int(differs.sum()),
        missing_offline=int(missing.sum()),
        mean_abs_diff=mean_gap,
        max_abs_diff=max_gap,
        worst=_worst(kind, differs, missing, s_values, o_values, abs_diff, entities, times, worst),
    )


def _worst(
    kind: str,
    differs: np.ndarray,
    missing: np.ndarray,
    served: Any,
    offline: Any,
    abs_diff: np.ndarray | None,
    entities: pa.Array,
    times: pa.Array,
    k: int,
) -> list[WorstEntity]:
    """The ``k`` entities with the worst disagreeing rows: differing numbers by size, then
    missing offline values; among equals, the entity with more such rows, then the newest."""
    bad = np.flatnonzero(differs | missing)
    if not len(bad) or k <= 0:
        return []
    take = pa.array(bad)
    frame = pd.DataFrame(
        {
            "entity": entities.take(take).to_pandas(),
            "time": times.take(take).to_pandas(),
            "missing": missing[bad],
            "gap": abs_diff[bad] if abs_diff is not None else np.zeros(len(bad)),
            "at": bad,
        }
    )
    frame["rows"] = frame.groupby("entity", dropna=False)["at"].transform("size")
    frame = frame.sort_values(
        ["missing", "gap", "rows", "time"], ascending=[True, False, False, False], kind="stable"
    ).drop_duplicates("entity")
    top = frame.head(k)
    out = []
    for ent, time, miss, gap, at, rows in zip(
        top["entity"].tolist(),
        top["time"].tolist(),
        top["missing"].tolist(),
        top["gap"].tolist(),
        top["at"].tolist(),
        top["rows"].tolist(),
        strict=True,
    ):
        out.append(
            WorstEntity(
                entity=_plain(ent),
                served_at=pd.Timestamp(time).isoformat(),
                served=_value(kind, served, at),
                offline=_value(kind, offline, at),
                kind=MISSING_OFFLINE if miss else DIFFERING,
                abs_diff=None if abs_diff is None or miss else _finite(gap),
                rows=int(rows),
            )
        )
    return out


def _value(kind: str, values: Any, at: int) -> Any:
    """One value as JSON takes it, in the feature's own type."""
    if isinstance(values, pa.Array):
        return values[at].as_py()
    x = float(values[at])
    if math.isnan(x):
        return None
    if kind == "bool":
        return bool(x)
    if kind == "int" and x.is_integer():
        return int(x)
    return x


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value

"""Append-only prediction log, read later by drift detection and performance monitoring.

Layout under ``settings.predictions_dir(model)``::

    date=YYYY-MM-DD/batch-<id>.parquet   one file per scored batch (UTC date of scored_at)
    labels/ingest-<id>.parquet           one file per ingest of later-arriving outcomes

Why this shape:

* **Files are never rewritten.** A batch is written under a hidden temporary name in its final
  directory, flushed to disk, then published with ``os.link`` (atomic, and it refuses to
  replace an existing file, so a reused batch id fails loudly instead of overwriting history).
  Readers only glob ``batch-*.parquet``: a half-written file is never visible. Two processes
  appending at once write different files, so nothing needs a lock.
* **Labels never touch prediction files.** Outcomes arrive later; each ingest is its own
  parquet file and is joined to predictions at read time on (entity, event time). A key
  labelled again later takes the newest label.
* **Fast at millions of rows.** Reads prune whole day directories by name from the time window
  first, then let ``pyarrow.dataset`` push the ``scored_at`` filter down to row-group
  statistics and read only the requested columns. Schemas are unified by name across files, so
  batches scored with different ``top_k`` (different explanation columns) read together, with
  nulls where a batch has no such column.
* **The time window is on ``scored_at``, not event time.** Drift compares what the model was
  asked recently with the training reference; ``scored_at`` is when that happened, is set by us
  (never late, never backfilled by a source), is the same for a whole batch and is what the
  files are partitioned by, so a window reads only the days it covers. Event time stays in
  every row for point-in-time joins such as label matching.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mlsteward.config.settings import predictions_dir

SCORED_AT = "scored_at"
BATCH_ID = "batch_id"
LABEL = "label"
LABEL_INGESTED_AT = "label_ingested_at"
LABEL_INGEST_ID = "label_ingest_id"
LABELS_DIR = "labels"
_META_ENTITY = b"mlsteward.entity"
_META_TIMESTAMP = b"mlsteward.timestamp"
_META_LABEL = b"mlsteward.label"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TS_TYPE = pa.timestamp("us", tz="UTC")


# -- helpers -------------------------------------------------------------------------------------
def new_id(now: datetime | None = None) -> str:
    """Unique, time-sortable id: UTC time to the microsecond plus 12 random hex digits."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{stamp:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}"


def _check_id(kind: str, value: str) -> str:
    if not _ID_PATTERN.match(value):
        raise ValueError(
            f"{kind} {value!r}: use letters, digits, '_', '.', '-' (max 128, no leading symbol)"
        )
    return value


def _utc_ts(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _utc_series(s: pd.Series) -> pd.Series:
    """Any datetime-like column as ``datetime64[us, UTC]`` (naive values are taken as UTC), so
    every file has the same timestamp type and joins compare like with like."""
    s = pd.to_datetime(s, utc=True)
    return s.astype("datetime64[us, UTC]")


def _normalise_times(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = _utc_series(out[col])
    return out


def _publish(table: pa.Table, path: Path) -> Path:
    """Write to a hidden temporary name beside ``path``, fsync, then link it into place.

    ``os.link`` is atomic and fails if ``path`` exists, so published files are never replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(
                f"{path} already exists: the prediction log is append-only, use a new id"
            ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _day_dir(root: Path, day: date) -> Path:
    return root / f"date={day.isoformat()}"


def _batch_files(model: str, since: pd.Timestamp | None, until: pd.Timestamp | None) -> list[Path]:
    """Published batch files whose day can hold rows in [since, until), in time order."""
    root = predictions_dir(model)
    files: list[Path] = []
    for d in sorted(root.glob("date=*")):
        try:
            day = date.fromisoformat(d.name.removeprefix("date="))
        except ValueError:
            continue
        if since is not None and day < since.date():
            continue
        if until is not None and day > until.date():
            continue
        files.extend(sorted(d.glob("batch-*.parquet")))
    return files


def _dataset(files: list[Path]) -> ds.Dataset:
    schema = pa.unify_schemas(
        [pq.read_schema(f) for f in files], promote_options="permissive"
    ).remove_metadata()
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet")


# -- predictions ---------------------------------------------------------------------------------
def append(model: str, scored: pd.DataFrame, *, batch_id: str | None = None) -> Path:
    """Add one scored batch to the log and return the file written.

    Every row gets a ``batch_id`` column (unless present). Datetime columns are stored as
    ``timestamp[us, UTC]``. A batch whose ``scored_at`` spans several UTC days (``score_frame``
    never produces one) is written as one file per day under the same id, so day pruning stays
    exact; the first day's file is returned.

    Raises:
        ValueError: no ``scored_at`` column, a missing ``scored_at`` value, or a bad id.
        FileExistsError: the batch id was used before (files are never rewritten).
    """
    frame = _normalise_times(scored).reset_index(drop=True)
    return append_table(model, pa.Table.from_pandas(frame, preserve_index=False), batch_id=batch_id)


def append_table(model: str, table: pa.Table, *, batch_id: str | None = None) -> Path:
    """:func:`append` for a batch already in Arrow form (the online service's log writer
    process builds its rows straight into Arrow, without pandas).

    ``scored_at`` must be ``timestamp[us, UTC]``, as :func:`append` stores it.
    """
    if SCORED_AT not in table.column_names:
        raise ValueError(f"{model}: a logged batch needs a {SCORED_AT!r} column")
    if table.schema.field(SCORED_AT).type != _TS_TYPE:
        raise ValueError(
            f"{model}: {SCORED_AT!r} must be {_TS_TYPE}, not {table.schema.field(SCORED_AT).type}"
        )
    batch_id = _check_id("batch_id", batch_id or new_id())
    missing = table.column(SCORED_AT).null_count
    if missing:
        raise ValueError(f"{model}: {missing} row(s) lack {SCORED_AT}")
    if BATCH_ID not in table.column_names:
        table = table.append_column(BATCH_ID, pa.array([batch_id] * table.num_rows, pa.string()))
    root = predictions_dir(model)
    name = f"batch-{batch_id}.parquet"
    days = pc.cast(table.column(SCORED_AT), pa.date32())
    unique_days = (
        sorted(pc.unique(days).to_pylist()) if table.num_rows else [datetime.now(UTC).date()]
    )
    targets = {day: _day_dir(root, day) / name for day in unique_days}
    taken = [str(p) for p in targets.values() if p.exists()]
    if taken:
        raise FileExistsError(f"{taken} already exist: the prediction log is append-only")
    written = [
        _publish(
            table if len(unique_days) == 1 else table.filter(pc.equal(days, pa.scalar(day))),
            path,
        )
        for day, path in targets.items()
    ]
    return written[0]


def batch_exists(model: str, batch_id: str) -> bool:
    """Whether a batch with this id was published (an append whose outcome is unknown)."""
    name = f"batch-{_check_id('batch_id', batch_id)}.parquet"
    return any(predictions_dir(model).glob(f"date=*/{name}"))


def read(
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Logged predictions with ``since <= scored_at < until`` (naive times mean UTC).

    Rows come in file order (day, then batch id, which starts with the write time). An empty
    log gives an empty frame.

    Raises:
        ValueError: a requested column is in no logged batch.
    """
    lo = _utc_ts(since) if since is not None else None
    hi = _utc_ts(until) if until is not None else None
    files = _batch_files(model, lo, hi)
    if not files:
        return pd.DataFrame(columns=columns or [])
    dataset = _dataset(files)
    if columns is not None:
        unknown = [c for c in columns if c not in dataset.schema.names]
        if unknown:
            raise ValueError(
                f"{model}: column(s) {unknown} are not in the prediction log "
                f"(known: {dataset.schema.names})"
            )
    return dataset.to_table(columns=columns, filter=_window_filter(lo, hi)).to_pandas()


# -- labels --------------------------------------------------------------------------------------
def _label_files(model: str) -> list[Path]:
    return sorted((predictions_dir(model) / LABELS_DIR).glob("ingest-*.parquet"))


def _label_key_names(model: str, files: list[Path]) -> tuple[str, str]:
    names: set[tuple[bytes, bytes]] = set()
    for f in files:
        meta = pq.read_schema(f).metadata or {}
        names.add((meta[_META_ENTITY], meta[_META_TIMESTAMP]))
    if len(names) != 1:
        raise ValueError(f"{model}: label ingests disagree on their key columns: {sorted(names)}")
    entity, timestamp = (n.decode() for n in names.pop())
    return entity, timestamp


def _read_labels(model: str) -> tuple[pd.DataFrame, str, str] | None:
    """Every ingested label, newest per (entity, event time), with the key column names."""
    files = _label_files(model)
    if not files:
        return None
    entity, timestamp = _label_key_names(model, files)
    frame = _dataset(files).to_table().to_pandas()
    frame = frame.sort_values([LABEL_INGESTED_AT, LABEL_INGEST_ID], kind="mergesort")
    frame = frame.drop_duplicates([entity, timestamp], keep="last")
    return frame, entity, timestamp


def _logged_keys(
    model: str, entity: str, timestamp: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """Distinct (entity, event time) keys of logged predictions with event time in [lo, hi]."""
    files = _batch_files(model, None, None)
    if not files:
        return pd.DataFrame(columns=[entity, timestamp])
    dataset = _dataset(files)
    missing = [c for c in (entity, timestamp) if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{model}: the prediction log has no column(s) {missing} to join on")
    flt = (ds.field(timestamp) >= pa.scalar(lo.to_pydatetime(), type=_TS_TYPE)) & (
        ds.field(timestamp) <= pa.scalar(hi.to_pydatetime(), type=_TS_TYPE)
    )
    keys = dataset.to_table(columns=[entity, timestamp], filter=flt).to_pandas()
    return keys.drop_duplicates()


def attach_labels(
    model: str, labels: pd.DataFrame, *, entity: str, timestamp: str, label: str
) -> dict[str, Any]:
    """Store later-arriving outcomes and report how many match logged predictions.

    Keys are (entity, event time) with the column names of the logged predictions. Every label
    is stored (an unmatched one may belong to predictions logged later, and is counted, never
    silently dropped); within one ingest a repeated key keeps its last row. Prediction files are
    never touched: labels join at read time. Label values are validated by the caller's data
    contract; this function only checks that the columns exist.

    Returns:
        ``matched``, ``unmatched`` and ``duplicates`` (repeats within this ingest, dropped),
        ``relabelled`` (keys labelled by an earlier ingest; the newest label wins), ``stored``,
        ``path`` of the written file (None if nothing was stored) and up to 10
        ``unmatched_examples`` as ``[entity, iso time]``.

    Raises:
        ValueError: a named column is missing from ``labels``.
    """
    missing = [c for c in (entity, timestamp, label) if c not in labels.columns]
    if missing:
        raise ValueError(f"{model}: labels lack column(s) {missing}")
    frame = labels[[entity, timestamp, label]].reset_index(drop=True)
    frame[timestamp] = _utc_series(frame[timestamp])
    dupes = frame.duplicated([entity, timestamp], keep="last")
    frame = frame[~dupes].reset_index(drop=True)
    result: dict[str, Any] = {
        "matched": 0,
        "unmatched": 0,
        "duplicates": int(dupes.sum()),
        "relabelled": 0,
        "stored": 0,
        "path": None,
        "unmatched_examples": [],
    }
    if frame.empty:
        return result

    valid_ts = frame[timestamp].dropna()
    keys = (
        _logged_keys(model, entity, timestamp, valid_ts.min(), valid_ts.max())
        if len(valid_ts)
        else pd.DataFrame(columns=[entity, timestamp])
    )
    if len(keys) and frame[entity].dtype != keys[entity].dtype:
        try:
            frame[entity] = frame[entity].astype(keys[entity].dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{model}: label entity {entity!r} ({frame[entity].dtype}) cannot be compared "
                f"with the logged {keys[entity].dtype}"
            ) from exc
    if len(keys):
        keys = keys.assign(_logged=True)
        joined = frame.merge(keys, on=[entity, timestamp], how="left")
        hit = joined["_logged"].eq(True).to_numpy()
    else:
        hit = np.zeros(len(frame), dtype=bool)
    previous = _read_labels(model)
    if previous is not None:
        old = previous[0][[previous[1], previous[2]]].rename(
            columns={previous[1]: entity, previous[2]: timestamp}
        )
        old = old.assign(_seen=True)
        if len(old) and old[entity].dtype != frame[entity].dtype:
            old[entity] = old[entity].astype(frame[entity].dtype)
        result["relabelled"] = int(
            frame.merge(old, on=[entity, timestamp], how="left")["_seen"].eq(True).sum()
        )

    ingest_id = new_id()
    stored = frame.rename(columns={label: LABEL})
    stored[LABEL_INGESTED_AT] = _utc_series(
        pd.Series(pd.Timestamp.now(tz="UTC"), index=stored.index)
    )
    stored[LABEL_INGEST_ID] = ingest_id
    table = pa.Table.from_pandas(stored, preserve_index=False)
    table = table.replace_schema_metadata(
        {
            **(table.schema.metadata or {}),
            _META_ENTITY: entity.encode(),
            _META_TIMESTAMP: timestamp.encode(),
            _META_LABEL: label.encode(),
        }
    )
    path = _publish(table, predictions_dir(model) / LABELS_DIR / f"ingest-{ingest_id}.parquet")
    misses = frame[~hit]
    result.update(
        matched=int(hit.sum()),
        unmatched=int((~hit).sum()),
        stored=len(frame),
        path=str(path),
        unmatched_examples=[
            [e.item() if hasattr(e, "item") else e, None if pd.isna(t) else t.isoformat()]
            for e, t in misses[[entity, timestamp]].head(10).itertuples(index=False)
        ],
    )
    return result


def read_with_labels(
    model: str,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Predictions in the ``scored_at`` window with their outcome in a ``label`` column.

    ``label`` is NaN (and ``label_ingested_at`` NaT) where no outcome has arrived yet; when a
    key was labelled more than once the newest ingest wins.
    """
    labelled = _read_labels(model)
    if labelled is None:
        preds = read(model, since=since, until=until, columns=columns)
        preds[LABEL] = pd.Series(float("nan"), index=preds.index, dtype="float64")
        preds[LABEL_INGESTED_AT] = pd.Series(pd.NaT, index=preds.index, dtype="datetime64[us, UTC]")
        return preds
    frame, entity, timestamp = labelled
    wanted = None if columns is None else list(dict.fromkeys([*columns, entity, timestamp]))
    preds = read(model, since=since, until=until, columns=wanted)
    if preds.empty:
        preds[LABEL] = pd.Series(dtype="float64")
        preds[LABEL_INGESTED_AT] = pd.Series(dtype="datetime64[us, UTC]")
        return preds
    right = frame[[entity, timestamp, LABEL, LABEL_INGESTED_AT]]
    if right[entity].dtype != preds[entity].dtype:
        right = right.astype({entity: preds[entity].dtype})
    out = preds.merge(right, on=[entity, timestamp], how="left", validate="many_to_one")
    if columns is not None:
        out = out[[*columns, LABEL, LABEL_INGESTED_AT]]
    return out


# -- bounded window sample (drift) ----------------------------------------------------------------
PRESAMPLE_OVERSAMPLE = 2.0
"""Rows pre-sampled per final row: the exact stratified cut downstream (``drift._sample``) then
chooses ``max_rows`` from twice as many, so each label stratum keeps its exact share."""
PRESAMPLE_KEY = "batch file path + row position in the file"
_RATE_SLACK = 1.25  # Bernoulli pre-filter rate over cap/N: falls short of cap rows ~never
_SCAN_BATCH_ROWS = 65_536
_U64 = np.uint64
_MASK64 = (1 << 64) - 1


@dataclass
class WindowSample:
    """A prediction-log window read for drift, whole or as a bounded seeded pre-sample.

    Attributes:
        frame: Every row of the window (``presample`` is None), or the uniform pre-sample of
            at most ``cap`` rows; outcomes joined in ``label`` either way.
        labelled: When pre-sampled and not every row has an outcome: a pre-sample drawn from
            the labelled rows alone (same key hash), so sparse outcomes in a large window still
            give up to ``cap`` labelled rows. None otherwise.
        rows: Rows in the window (exact, before any sampling).
        labelled_rows: Rows in the window with an outcome (exact).
        presample: How the pre-sample was drawn (JSON-ready), or None when nothing was sampled.
        columns_read: The log columns the scan projected (nothing else was decoded).
        peak_retained_rows: Most rows held at once by the two pre-sample buffers (the sum of
            their peaks; each <= ``cap + max(batch_rows, cap // 4)`` + one batch), not counting
            the record batch being scanned: the figure the memory bound is on.
    """

    frame: pd.DataFrame
    labelled: pd.DataFrame | None
    rows: int
    labelled_rows: int
    presample: dict[str, Any] | None
    columns_read: list[str]
    peak_retained_rows: int = 0


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 with good avalanche, vectorised (numpy
    uint64 arithmetic wraps modulo 2**64, which is what the mix needs)."""
    with np.errstate(over="ignore"):
        z = x + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _file_key(seed: int, relpath: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{relpath}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def row_hashes(seed: int, relpath: str, ordinals: np.ndarray) -> np.ndarray:
    """The seeded uint64 hash of rows ``ordinals`` of the batch file ``relpath``.

    Why this key: a logged row has no id of its own (a serving request id covers several
    rows), but batch files are never rewritten, so (file path under the model's log, row
    position in the file) names a row forever. The same seed gives the same hash on any
    machine; another seed gives an unrelated one.
    """
    base = _U64(_file_key(seed, relpath))
    with np.errstate(over="ignore"):
        return _splitmix64(base + ordinals.astype(np.uint64))


class _BottomK:
    """The ``k`` rows with the smallest hashes seen so far, holding at most ``k + slack`` rows
    plus the batch just added (``peak`` counts what was held).

    Bottom-k by a random hash is a uniform sample without replacement whose result does not
    depend on the order batches arrive in. Rows at or above ``limit`` are dropped on arrival;
    each trim (once more than ``k + slack`` rows are held) lowers ``limit`` to the k-th smallest
    hash kept, so later batches keep fewer: over a window of N rows a trim happens about
    ``k / slack * ln(N / k)`` times.
    """

    def __init__(self, k: int, limit: int, slack: int) -> None:
        self.k = k
        self.slack = slack
        self.limit = limit  # keep hashes < limit; 2**64 keeps all
        self.hashes: list[np.ndarray] = []
        self.order: list[np.ndarray] = []  # (file index, row ordinal) packed, for log order
        self.batches: list[pa.RecordBatch] = []
        self.size = 0
        self.peak = 0  # most rows held at once, the trimmed copy included

    def add(self, hashes: np.ndarray, order: np.ndarray, batch: pa.RecordBatch) -> None:
        keep = hashes < _U64(self.limit) if self.limit <= _MASK64 else np.ones(len(hashes), bool)
        if not keep.any():
            return
        self.hashes.append(hashes[keep])
        self.order.append(order[keep])
        self.batches.append(batch.filter(pa.array(keep)))
        self.size += int(keep.sum())
        self.peak = max(self.peak, self.size)
        if self.size > self.k + self.slack:
            self.trim()

    def trim(self) -> None:
        """Keep the k smallest hashes. Column by column, each old column released as soon as
        its kept rows are copied, so a trim adds about one column, not a second table."""
        if self.size <= self.k:
            return
        h = np.concatenate(self.hashes)
        pick = pa.array(np.sort(np.argpartition(h, self.k - 1)[: self.k]))
        old = pa.Table.from_batches(self.batches)  # zero-copy view of the batches
        self.batches = []
        names, columns = old.column_names, []
        for _ in names:
            columns.append(old.column(0).take(pick).combine_chunks())
            old = old.remove_column(0)
        picked = pick.to_numpy()
        self.hashes, self.order = [h[picked]], [np.concatenate(self.order)[picked]]
        self.batches = pa.Table.from_arrays(columns, names=names).to_batches()
        self.size = self.k
        self.limit = int(self.hashes[0].max())  # strictly below the k-th smallest from now on

    def result(self, schema: pa.Schema) -> pa.Table:
        """The kept rows in log order (file, then row), as a table."""
        self.trim()
        if not self.batches:
            return schema.empty_table()
        table = pa.Table.from_batches(self.batches, schema=schema)
        return table.take(pa.array(np.argsort(np.concatenate(self.order), kind="stable")))


def _window_filter(lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> ds.Expression | None:
    flt = None
    if lo is not None:
        flt = ds.field(SCORED_AT) >= pa.scalar(lo.to_pydatetime(), type=_TS_TYPE)
    if hi is not None:
        upper = ds.field(SCORED_AT) < pa.scalar(hi.to_pydatetime(), type=_TS_TYPE)
        flt = upper if flt is None else flt & upper
    return flt


def _label_keys(
    labelled: tuple[pd.DataFrame, str, str] | None, entity_type: pa.DataType | None
) -> np.ndarray:
    """Sorted 64-bit hashes of the (entity, event time) keys that have a non-null outcome.

    Only used to route rows into the labelled pre-sample; the outcome itself is joined exactly
    afterwards (a hash collision can only put an unlabelled row among the candidates, and such
    a row is dropped after the join).
    """
    if labelled is None:
        return np.zeros(0, np.uint64)
    frame, entity, timestamp = labelled
    keys = frame.loc[frame[LABEL].notna(), [entity, timestamp]]
    if entity_type is not None:
        keys = keys.astype({entity: entity_type.to_pandas_dtype()})
    return np.sort(_key_hashes(keys, timestamp))


def _key_hashes(keys: pd.DataFrame, timestamp: str) -> np.ndarray:
    """64-bit hashes of (entity, event time) rows, the time always as ``datetime64[us, UTC]``
    so a key hashes the same from a label ingest and from any logged batch."""
    keys = keys.assign(**{timestamp: _utc_series(keys[timestamp])})
    return pd.util.hash_pandas_object(keys, index=False).to_numpy()


def _join_labels(
    preds: pd.DataFrame, labelled: tuple[pd.DataFrame, str, str] | None
) -> pd.DataFrame:
    """``preds`` with ``label`` / ``label_ingested_at`` joined on (entity, event time)."""
    if labelled is None or preds.empty:
        preds = preds.copy()
        preds[LABEL] = pd.Series(float("nan"), index=preds.index, dtype="float64")
        preds[LABEL_INGESTED_AT] = pd.Series(pd.NaT, index=preds.index, dtype="datetime64[us, UTC]")
        return preds
    frame, entity, timestamp = labelled
    right = frame[[entity, timestamp, LABEL, LABEL_INGESTED_AT]]
    if right[entity].dtype != preds[entity].dtype:
        right = right.astype({entity: preds[entity].dtype})
    return preds.merge(right, on=[entity, timestamp], how="left", validate="many_to_one")


def sample_window(
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: list[str],
    max_rows: int,
    seed: int = 0,
    oversample: float = PRESAMPLE_OVERSAMPLE,
    batch_rows: int = _SCAN_BATCH_ROWS,
) -> WindowSample:
    """The window drift compares, in memory bounded by ``max_rows`` rather than the window.

    1. Count the window's rows from the ``scored_at`` column alone (Parquet statistics answer
       most files without decoding anything).
    2. Up to ``cap = ceil(oversample * max_rows)`` rows: exactly :func:`read_with_labels` on
       ``columns`` (nothing sampled here; drift's exact stratified cut does the rest, as before).
    3. Above it: scan the window's files one record batch at a time, decoding only
       ``columns`` (plus the label key and ``scored_at``), and keep the ``cap`` rows whose seeded
       :func:`row_hashes` are smallest (a uniform sample without replacement), and likewise
       up to ``cap`` of the rows that have an outcome. Outcomes are joined onto those rows
       only. Each of the two buffers holds at most ``cap + max(batch_rows, cap // 4)`` rows
       plus one batch (and one column more while it trims).

    Same log, window and seed: the same rows, in log order. Columns in ``columns`` that no
    batch logged are left out (the caller's checks name them).

    Raises:
        ValueError: ``max_rows`` < 1 or ``oversample`` < 1.
    """
    if max_rows < 1 or oversample < 1:
        raise ValueError(f"max_rows must be >= 1 and oversample >= 1, got {max_rows}, {oversample}")
    cap = math.ceil(oversample * max_rows)
    lo = _utc_ts(since) if since is not None else None
    hi = _utc_ts(until) if until is not None else None
    files = _batch_files(model, lo, hi)
    if not files:
        frame = read_with_labels(model, since=since, until=until, columns=list(columns))
        return WindowSample(frame, None, 0, 0, None, [])
    dataset = _dataset(files)
    present = [c for c in dict.fromkeys(columns) if c in dataset.schema.names]
    flt = _window_filter(lo, hi)
    fragments = list(dataset.get_fragments())
    per_file = [f.count_rows(filter=flt) if flt is not None else f.count_rows() for f in fragments]
    total = int(sum(per_file))
    if total <= cap:
        frame = read_with_labels(model, since=since, until=until, columns=present)
        n_lab = int(frame[LABEL].notna().sum())
        files = _label_files(model)
        keys = [*present, *_label_key_names(model, files)] if files else present
        read_cols = [c for c in dict.fromkeys([*keys, SCORED_AT]) if c in dataset.schema.names]
        return WindowSample(frame, None, total, n_lab, None, read_cols)

    labelled = _read_labels(model)
    entity = timestamp = None
    if labelled is not None:
        entity, timestamp = labelled[1], labelled[2]
        missing = [c for c in (entity, timestamp) if c not in dataset.schema.names]
        if missing:
            raise ValueError(f"{model}: the prediction log has no column(s) {missing} to join on")
    wanted = [*present, *(c for c in (entity, timestamp) if c is not None)]
    read_cols = list(dict.fromkeys([*wanted, SCORED_AT]))
    out_cols = list(dict.fromkeys(wanted))
    label_keys = _label_keys(
        labelled, dataset.schema.field(entity).type if entity is not None else None
    )
    rate = min(1.0, _RATE_SLACK * cap / total)
    slack = max(batch_rows, cap // 4)
    every = _BottomK(cap, _MASK64 + 1 if rate >= 1 else int(rate * 2.0**64), slack)
    with_label = _BottomK(cap, _MASK64 + 1, slack)
    root = predictions_dir(model)
    n_lab = 0
    for i, (fragment, count) in enumerate(zip(fragments, per_file, strict=True)):
        if count == 0:
            continue
        relpath = Path(fragment.path).relative_to(root).as_posix()
        offset = 0
        for batch in fragment.to_batches(
            schema=dataset.schema,
            columns=read_cols,
            batch_size=batch_rows,
            batch_readahead=0,
            fragment_readahead=0,
            use_threads=False,
        ):
            n = batch.num_rows
            ordinals = np.arange(offset, offset + n, dtype=np.int64)
            offset += n
            if flt is not None:
                mask = _in_window(batch.column(SCORED_AT), lo, hi)
                if not mask.all():
                    batch, ordinals = batch.filter(pa.array(mask)), ordinals[mask]
            if batch.num_rows == 0:
                continue
            batch = batch.select(out_cols)
            hashes = row_hashes(seed, relpath, ordinals)
            order = (np.int64(i) << np.int64(40)) | ordinals
            every.add(hashes, order, batch)
            if len(label_keys):
                keys = pa.Table.from_batches([batch.select([entity, timestamp])]).to_pandas()
                key_hash = _key_hashes(keys, timestamp)
                pos = np.minimum(np.searchsorted(label_keys, key_hash), len(label_keys) - 1)
                has = label_keys[pos] == key_hash
                n_lab += int(has.sum())
                if has.any():
                    sel = pa.array(has)
                    with_label.add(hashes[has], order[has], batch.filter(sel))
    schema = dataset.schema
    out_schema = pa.schema([schema.field(c) for c in out_cols])
    sample = _join_labels(every.result(out_schema).to_pandas(), labelled)
    lab_frame: pd.DataFrame | None = None
    lab_record: dict[str, Any] | None = None
    if n_lab and n_lab < total:
        lab_frame = _join_labels(with_label.result(out_schema).to_pandas(), labelled)
        lab_frame = lab_frame[lab_frame[LABEL].notna()]
        if n_lab > cap:
            lab_record = {
                "rows_in_window": n_lab,
                "rows": len(lab_frame),
                "method": f"the {cap:,} labelled rows with the smallest seeded key hash",
                "seed": seed,
                "key": PRESAMPLE_KEY,
            }
    columns_out = [*present, LABEL, LABEL_INGESTED_AT]
    sample = sample[columns_out]
    if lab_frame is not None:
        lab_frame = lab_frame[columns_out]
    record = {
        "rows_in_window": total,
        "labelled_rows_in_window": n_lab,
        "rows": len(sample),
        "rate": rate,
        "seed": seed,
        "key": PRESAMPLE_KEY,
        "method": (
            f"rows kept when their seeded key hash falls below rate {rate:.4g}, then the "
            f"{cap:,} with the smallest hash"
        ),
        "labelled": lab_record,
    }
    peak = every.peak + with_label.peak  # an upper bound: the two peaks need not coincide
    return WindowSample(sample, lab_frame, total, n_lab, record, read_cols, peak)


def _in_window(
    scored_at: pa.Array | pa.ChunkedArray, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> np.ndarray:
    """Boolean mask of ``lo <= scored_at < hi`` (the same bounds as :func:`read`'s filter)."""
    values = pc.cast(scored_at, _TS_TYPE)
    mask = pa.array(np.ones(len(values), dtype=bool))
    if lo is not None:
        mask = pc.and_(mask, pc.greater_equal(values, pa.scalar(lo.to_pydatetime(), _TS_TYPE)))
    if hi is not None:
        mask = pc.and_(mask, pc.less(values, pa.scalar(hi.to_pydatetime(), _TS_TYPE)))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)

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

A window too large to read whole for drift is pre-sampled by ``window_sample``, which reads the
files through the primitives here (``batch_files``, ``open_dataset``, ``window_filter``,
``read_labels``).
"""

from __future__ import annotations

import os
import re
import uuid
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
TS_TYPE = pa.timestamp("us", tz="UTC")
"""How every time column is stored: microseconds, UTC."""


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


def utc_ts(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_series(s: pd.Series) -> pd.Series:
    """Any datetime-like column as ``datetime64[us, UTC]`` (naive values are taken as UTC), so
    every file has the same timestamp type and joins compare like with like."""
    s = pd.to_datetime(s, utc=True)
    return s.astype("datetime64[us, UTC]")


def _normalise_times(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = utc_series(out[col])
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


def batch_files(model: str, since: pd.Timestamp | None, until: pd.Timestamp | None) -> list[Path]:
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


def open_dataset(files: list[Path]) -> ds.Dataset:
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


def append_table(
    model: str, table: pa.Table, *, batch_id: str | None = None, resume: bool = False
) -> Path:
    """:func:`append` for a batch already in Arrow form (the online service's log writer
    process builds its rows straight into Arrow, without pandas).

    ``scored_at`` must be ``timestamp[us, UTC]``, as :func:`append` stores it.

    ``resume`` is for a writer retrying its own batch after a failure or a crash (the online
    service's, whose batch ids come from its write-ahead segments): the days an earlier
    attempt published are kept as they are and only the missing ones are written. Without
    it, a batch cut off by a full disk between two days' files would, on retry, be refused
    as a whole and lose its second day. Its first day's path is returned either way.
    """
    if SCORED_AT not in table.column_names:
        raise ValueError(f"{model}: a logged batch needs a {SCORED_AT!r} column")
    if table.schema.field(SCORED_AT).type != TS_TYPE:
        raise ValueError(
            f"{model}: {SCORED_AT!r} must be {TS_TYPE}, not {table.schema.field(SCORED_AT).type}"
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
    if taken and not resume:
        raise FileExistsError(f"{taken} already exist: the prediction log is append-only")
    for day, path in targets.items():
        if resume and path.exists():
            continue
        _publish(
            table if len(unique_days) == 1 else table.filter(pc.equal(days, pa.scalar(day))),
            path,
        )
    return next(iter(targets.values()))


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
    lo = utc_ts(since) if since is not None else None
    hi = utc_ts(until) if until is not None else None
    files = batch_files(model, lo, hi)
    if not files:
        return pd.DataFrame(columns=columns or [])
    dataset = open_dataset(files)
    if columns is not None:
        unknown = [c for c in columns if c not in dataset.schema.names]
        if unknown:
            raise ValueError(
                f"{model}: column(s) {unknown} are not in the prediction log "
                f"(known: {dataset.schema.names})"
            )
    return dataset.to_table(columns=columns, filter=window_filter(lo, hi)).to_pandas()


def window_filter(lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> ds.Expression | None:
    flt = None
    if lo is not None:
        flt = ds.field(SCORED_AT) >= pa.scalar(lo.to_pydatetime(), type=TS_TYPE)
    if hi is not None:
        upper = ds.field(SCORED_AT) < pa.scalar(hi.to_pydatetime(), type=TS_TYPE)
        flt = upper if flt is None else flt & upper
    return flt


# -- labels --------------------------------------------------------------------------------------
def label_files(model: str) -> list[Path]:
    return sorted((predictions_dir(model) / LABELS_DIR).glob("ingest-*.parquet"))


def label_key_names(model: str, files: list[Path]) -> tuple[str, str]:
    names: set[tuple[bytes, bytes]] = set()
    for f in files:
        meta = pq.read_schema(f).metadata or {}
        names.add((meta[_META_ENTITY], meta[_META_TIMESTAMP]))
    if len(names) != 1:
        raise ValueError(f"{model}: label ingests disagree on their key columns: {sorted(names)}")
    entity, timestamp = (n.decode() for n in names.pop())
    return entity, timestamp


def read_labels(model: str) -> tuple[pd.DataFrame, str, str] | None:
    """Every ingested label, newest per (entity, event time), with the key column names."""
    files = label_files(model)
    if not files:
        return None
    entity, timestamp = label_key_names(model, files)
    frame = open_dataset(files).to_table().to_pandas()
    frame = frame.sort_values([LABEL_INGESTED_AT, LABEL_INGEST_ID], kind="mergesort")
    frame = frame.drop_duplicates([entity, timestamp], keep="last")
    return frame, entity, timestamp


def _logged_keys(
    model: str, entity: str, timestamp: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """Distinct (entity, event time) keys of logged predictions with event time in [lo, hi]."""
    files = batch_files(model, None, None)
    if not files:
        return pd.DataFrame(columns=[entity, timestamp])
    dataset = open_dataset(files)
    missing = [c for c in (entity, timestamp) if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{model}: the prediction log has no column(s) {missing} to join on")
    flt = (ds.field(timestamp) >= pa.scalar(lo.to_pydatetime(), type=TS_TYPE)) & (
        ds.field(timestamp) <= pa.scalar(hi.to_pydatetime(), type=TS_TYPE)
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
    frame[timestamp] = utc_series(frame[timestamp])
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

    frame, hit = _match_logged(model, frame, entity, timestamp)
    result["relabelled"] = _relabelled(model, frame, entity, timestamp)
    path = _store_labels(model, frame, entity, timestamp, label)
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


def _match_logged(
    model: str, frame: pd.DataFrame, entity: str, timestamp: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Which labels match a logged prediction; the entity column cast to the logged type."""
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
    if not len(keys):
        return frame, np.zeros(len(frame), dtype=bool)
    keys = keys.assign(_logged=True)
    joined = frame.merge(keys, on=[entity, timestamp], how="left")
    return frame, joined["_logged"].eq(True).to_numpy()


def _relabelled(model: str, frame: pd.DataFrame, entity: str, timestamp: str) -> int:
    """How many of these keys an earlier ingest labelled already."""
    previous = read_labels(model)
    if previous is None:
        return 0
    old = previous[0][[previous[1], previous[2]]].rename(
        columns={previous[1]: entity, previous[2]: timestamp}
    )
    old = old.assign(_seen=True)
    if len(old) and old[entity].dtype != frame[entity].dtype:
        old[entity] = old[entity].astype(frame[entity].dtype)
    return int(frame.merge(old, on=[entity, timestamp], how="left")["_seen"].eq(True).sum())


def _store_labels(model: str, frame: pd.DataFrame, entity: str, timestamp: str, label: str) -> Path:
    """Publish one ingest's labels as its own file, the key column names in its metadata."""
    ingest_id = new_id()
    stored = frame.rename(columns={label: LABEL})
    stored[LABEL_INGESTED_AT] = utc_series(
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
    return _publish(table, predictions_dir(model) / LABELS_DIR / f"ingest-{ingest_id}.parquet")


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
    labelled = read_labels(model)
    if labelled is None:
        return join_labels(read(model, since=since, until=until, columns=columns), None)
    _, entity, timestamp = labelled
    wanted = None if columns is None else list(dict.fromkeys([*columns, entity, timestamp]))
    preds = read(model, since=since, until=until, columns=wanted)
    out = join_labels(preds, labelled)
    if columns is not None and not preds.empty:
        out = out[[*columns, LABEL, LABEL_INGESTED_AT]]
    return out


def join_labels(
    preds: pd.DataFrame, labelled: tuple[pd.DataFrame, str, str] | None
) -> pd.DataFrame:
    """``preds`` with ``label`` / ``label_ingested_at`` joined on (entity, event time) from
    :func:`read_labels`' answer (NaN / NaT where no outcome has arrived, or none ever did)."""
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

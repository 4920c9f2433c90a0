"""A prediction-log window read for drift in memory bounded by the sample, not the window.

Drift compares at most ``cfg.drift.max_rows`` rows per side, but a window of the log can hold
millions. Above a cap, :func:`sample_window` scans the window's batch files one record batch at
a time and keeps a seeded uniform pre-sample (the rows with the smallest :func:`row_hashes`),
plus one of the labelled rows alone, so memory is bounded by the cap; drift's exact stratified
cut (``drift_sampling``) then chooses from it. The same log, window and seed give the same rows
on any machine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from mlsteward.config.settings import predictions_dir
from mlsteward.monitoring.prediction_log import (
    LABEL,
    LABEL_INGESTED_AT,
    SCORED_AT,
    TS_TYPE,
    batch_files,
    join_labels,
    label_files,
    label_key_names,
    open_dataset,
    read_labels,
    read_with_labels,
    utc_series,
    utc_ts,
    window_filter,
)

PRESAMPLE_OVERSAMPLE = 2.0
"""Rows pre-sampled per final row: the exact stratified cut downstream
(``drift_sampling.sample_side``) then chooses ``max_rows`` from twice as many, so each label
stratum keeps its exact share."""
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
    keys = keys.assign(**{timestamp: utc_series(keys[timestamp])})
    return pd.util.hash_pandas_object(keys, index=False).to_numpy()


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
    lo = utc_ts(since) if since is not None else None
    hi = utc_ts(until) if until is not None else None
    files = batch_files(model, lo, hi)
    if not files:
        frame = read_with_labels(model, since=since, until=until, columns=list(columns))
        return WindowSample(frame, None, 0, 0, None, [])
    dataset = open_dataset(files)
    present = [c for c in dict.fromkeys(columns) if c in dataset.schema.names]
    flt = window_filter(lo, hi)
    fragments = list(dataset.get_fragments())
    per_file = [f.count_rows(filter=flt) if flt is not None else f.count_rows() for f in fragments]
    total = int(sum(per_file))
    if total <= cap:
        return _whole_window(model, since, until, present, dataset.schema.names, total)

    labelled = read_labels(model)
    plan = _scan_plan(model, dataset.schema, present, labelled, lo, hi, flt is not None)
    rate = min(1.0, _RATE_SLACK * cap / total)
    slack = max(batch_rows, cap // 4)
    every = _BottomK(cap, _MASK64 + 1 if rate >= 1 else int(rate * 2.0**64), slack)
    with_label = _BottomK(cap, _MASK64 + 1, slack)
    root = predictions_dir(model)
    n_lab = 0
    for i, (fragment, count) in enumerate(zip(fragments, per_file, strict=True)):
        if count:
            relpath = Path(fragment.path).relative_to(root).as_posix()
            n_lab += _scan_file(
                plan, dataset.schema, fragment, i, relpath, seed, batch_rows, every, with_label
            )
    out_schema = pa.schema([dataset.schema.field(c) for c in plan.out_cols])
    sample = join_labels(every.result(out_schema).to_pandas(), labelled)
    lab_frame, lab_record = _labelled_presample(
        with_label, out_schema, labelled, n_lab, total, cap, seed
    )
    columns_out = [*present, LABEL, LABEL_INGESTED_AT]
    return WindowSample(
        sample[columns_out],
        lab_frame[columns_out] if lab_frame is not None else None,
        total,
        n_lab,
        _presample_record(total, n_lab, len(sample), rate, seed, cap, lab_record),
        plan.read_cols,
        every.peak + with_label.peak,  # an upper bound: the two peaks need not coincide
    )


def _presample_record(
    total: int,
    n_lab: int,
    rows: int,
    rate: float,
    seed: int,
    cap: int,
    labelled: dict[str, Any] | None,
) -> dict[str, Any]:
    """How the pre-sample was drawn, as the drift result and its HTML report record it."""
    return {
        "rows_in_window": total,
        "labelled_rows_in_window": n_lab,
        "rows": rows,
        "rate": rate,
        "seed": seed,
        "key": PRESAMPLE_KEY,
        "method": f"rows kept when their seeded key hash falls below rate {rate:.4g}, then the "
        f"{cap:,} with the smallest hash",
        "labelled": labelled,
    }


def _whole_window(
    model: str,
    since: datetime | None,
    until: datetime | None,
    present: list[str],
    logged: list[str],
    total: int,
) -> WindowSample:
    """A window no larger than the cap: every row, read as :func:`read_with_labels` reads it."""
    frame = read_with_labels(model, since=since, until=until, columns=present)
    n_lab = int(frame[LABEL].notna().sum())
    files = label_files(model)
    keys = [*present, *label_key_names(model, files)] if files else present
    read_cols = [c for c in dict.fromkeys([*keys, SCORED_AT]) if c in logged]
    return WindowSample(frame, None, total, n_lab, None, read_cols)


@dataclass(frozen=True)
class _ScanPlan:
    """What a scan of the window's files reads, keeps and hashes (the same for every file)."""

    read_cols: list[str]  # decoded from the files: the kept columns and ``scored_at``
    out_cols: list[str]  # kept in the pre-samples
    lo: pd.Timestamp | None
    hi: pd.Timestamp | None
    filtered: bool  # the window has a bound, so rows outside it are dropped
    label_keys: np.ndarray  # sorted key hashes of the labelled (entity, event time) pairs
    entity: str | None
    timestamp: str | None


def _scan_plan(
    model: str,
    schema: pa.Schema,
    present: list[str],
    labelled: tuple[pd.DataFrame, str, str] | None,
    lo: pd.Timestamp | None,
    hi: pd.Timestamp | None,
    filtered: bool,
) -> _ScanPlan:
    """The columns to read and keep (the label key too, when outcomes exist) and the keys of
    the labelled rows."""
    entity = timestamp = None
    if labelled is not None:
        entity, timestamp = labelled[1], labelled[2]
        missing = [c for c in (entity, timestamp) if c not in schema.names]
        if missing:
            raise ValueError(f"{model}: the prediction log has no column(s) {missing} to join on")
    wanted = [*present, *(c for c in (entity, timestamp) if c is not None)]
    return _ScanPlan(
        read_cols=list(dict.fromkeys([*wanted, SCORED_AT])),
        out_cols=list(dict.fromkeys(wanted)),
        lo=lo,
        hi=hi,
        filtered=filtered,
        label_keys=_label_keys(labelled, schema.field(entity).type if entity is not None else None),
        entity=entity,
        timestamp=timestamp,
    )


def _scan_file(
    plan: _ScanPlan,
    schema: pa.Schema,
    fragment: ds.Fragment,
    index: int,
    relpath: str,
    seed: int,
    batch_rows: int,
    every: _BottomK,
    with_label: _BottomK,
) -> int:
    """Offer one batch file's rows in the window to both pre-samples, one record batch at a
    time; returns how many of them have an outcome."""
    n_lab = 0
    offset = 0
    for batch in fragment.to_batches(
        schema=schema,
        columns=plan.read_cols,
        batch_size=batch_rows,
        batch_readahead=0,
        fragment_readahead=0,
        use_threads=False,
    ):
        n = batch.num_rows
        ordinals = np.arange(offset, offset + n, dtype=np.int64)
        offset += n
        if plan.filtered:
            mask = _in_window(batch.column(SCORED_AT), plan.lo, plan.hi)
            if not mask.all():
                batch, ordinals = batch.filter(pa.array(mask)), ordinals[mask]
        if batch.num_rows == 0:
            continue
        batch = batch.select(plan.out_cols)
        hashes = row_hashes(seed, relpath, ordinals)
        order = (np.int64(index) << np.int64(40)) | ordinals
        every.add(hashes, order, batch)
        if len(plan.label_keys) and plan.entity is not None and plan.timestamp is not None:
            keys = pa.Table.from_batches([batch.select([plan.entity, plan.timestamp])]).to_pandas()
            key_hash = _key_hashes(keys, plan.timestamp)
            pos = np.minimum(np.searchsorted(plan.label_keys, key_hash), len(plan.label_keys) - 1)
            has = plan.label_keys[pos] == key_hash
            n_lab += int(has.sum())
            if has.any():
                with_label.add(hashes[has], order[has], batch.filter(pa.array(has)))
    return n_lab


def _labelled_presample(
    with_label: _BottomK,
    schema: pa.Schema,
    labelled: tuple[pd.DataFrame, str, str] | None,
    n_lab: int,
    total: int,
    cap: int,
    seed: int,
) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    """The labelled rows' own pre-sample, when only some rows have an outcome, and its record
    (None when it kept every labelled row)."""
    if not n_lab or n_lab >= total:
        return None, None
    lab_frame = join_labels(with_label.result(schema).to_pandas(), labelled)
    lab_frame = lab_frame[lab_frame[LABEL].notna()]
    if n_lab <= cap:
        return lab_frame, None
    return lab_frame, {
        "rows_in_window": n_lab,
        "rows": len(lab_frame),
        "method": f"the {cap:,} labelled rows with the smallest seeded key hash",
        "seed": seed,
        "key": PRESAMPLE_KEY,
    }


def _in_window(
    scored_at: pa.Array | pa.ChunkedArray, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> np.ndarray:
    """Boolean mask of ``lo <= scored_at < hi`` (the same bounds as :func:`read`'s filter)."""
    values = pc.cast(scored_at, TS_TYPE)
    mask = pa.array(np.ones(len(values), dtype=bool))
    if lo is not None:
        mask = pc.and_(mask, pc.greater_equal(values, pa.scalar(lo.to_pydatetime(), TS_TYPE)))
    if hi is not None:
        mask = pc.and_(mask, pc.less(values, pa.scalar(hi.to_pydatetime(), TS_TYPE)))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)

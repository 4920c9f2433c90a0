"""Online predictions into the prediction log, off the request path, losing none.

Requests pickle their rows, append them to the write-ahead file (``mlsteward.serving.wal``:
before the answer leaves, the rows are in the kernel's page cache, so a killed service loses
none) and onto a bounded in-memory queue, and return; one writer thread hands them in
batches, at most ``flush_seconds`` after they were queued, to a child process that
appends them to the prediction log (``mlsteward.monitoring.prediction_log``, the files drift
detection reads; see ``mlsteward.serving.logproc`` for why a process). Each batch is one
write-ahead segment and is published under the segment's name, and the segment is deleted
once the batch is published; a start replays what a crashed service left.

A disk that refuses writes (full, over quota, read-only, failing) makes predict answer 503
at once, naming the log and the reason, instead of hanging: no row is queued that the
write-ahead file does not hold, and ``failure`` says why for ``/healthz``. The writer keeps
retrying the rows it holds and probes the disk with a real write; when the disk takes
writes again the failure clears by itself and the held rows are written. When the queue is
full (a slow disk), a request waits for room at most ``room_wait_seconds`` and then gets a
503 saying the log is behind, rather than waiting without bound. ``close`` writes
everything still queued; the service calls it on shutdown, which uvicorn runs on SIGTERM
after the last in-flight request has finished.

Rows are written typed as batch scoring stores them (integers as int64,
booleans as bool, categories as string), so online and batch files read back together with
one schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlsteward.config.settings import predictions_dir
from mlsteward.monitoring import prediction_log
from mlsteward.serving.features import FieldError, RequestRejected
from mlsteward.serving.logproc import LogProcess, LogWriteFailed
from mlsteward.serving.wal import Orphan, Segment, WriteAheadLog, orphans, wal_root

log = logging.getLogger("mlsteward.serving")

# As batch scoring stores them (pandas Int64/float64/boolean/string), so both read as one.
_ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "category": pa.string(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),  # datetimes, or integer microseconds since 1970
}
RETRY_SECONDS = 1.0
FSYNC_SECONDS = 0.1
# A request's whole answer must come within 5 s even when the log cannot keep up; scoring
# and the network take the rest.
ROOM_WAIT_SECONDS = 2.0


class PredictionLogUnavailable(RequestRejected):
    """A 503 naming the prediction log: it cannot be written, or it is too far behind."""

    def __init__(self, message: str) -> None:
        super().__init__(503, [FieldError(("body",), message, "unavailable")])
        self.message = message


class _Pickled:
    """Queued rows of one model, pickled as they were queued (see ``logproc`` for why)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.rows = 0

    def add(self, blob: bytes, rows: int) -> None:
        self.data += blob
        self.rows += rows


@dataclass
class _Batch:
    """Rows taken for one file, under the id of the write-ahead segment that holds them;
    ``done`` deletes the segment once the file is published."""

    model: str
    batch_id: str
    data: bytes | bytearray
    rows: int
    done: Callable[[], None]


@dataclass
class Replay:
    """What a start found in the write-ahead files of services that did not stop cleanly."""

    rows: int = 0
    segments: int = 0
    torn_bytes: int = 0
    seconds: float = 0.0


def _unlinker(path: Path) -> Callable[[], None]:
    def done() -> None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    return done


def _orphan_done(orphan: Orphan, segment: Segment) -> Callable[[], None]:
    def done() -> None:
        with contextlib.suppress(OSError):
            orphan.published(segment)

    return done


class PredictionLogWriter:
    def __init__(
        self,
        max_rows: int,
        flush_seconds: float,
        on_depth: Callable[[str, int], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
        *,
        fsync_seconds: float = FSYNC_SECONDS,
        on_fsync_lag: Callable[[str, float], None] | None = None,
        log_dir: Callable[[str], Path] = predictions_dir,
        room_wait_seconds: float = ROOM_WAIT_SECONDS,
    ) -> None:
        self.max_rows = max_rows
        self._sink = LogProcess()
        self.flush_seconds = flush_seconds
        self.room_wait_seconds = room_wait_seconds
        self._log_dir = log_dir
        self._on_depth = on_depth or (lambda model, depth: None)
        self._on_written = on_written or (lambda model, rows: None)
        self._types: dict[str, dict[str, pa.DataType]] = {}
        self._queues: dict[str, _Pickled] = {}
        self._unwritten: list[_Batch] = []  # taken, not yet published: retried in order
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._wal = WriteAheadLog(
            prediction_log.new_id(),
            lambda model: wal_root(log_dir(model)),
            fsync_seconds,
            on_lag=on_fsync_lag,
            on_sync_error=self._fail,
        )
        self.failures = 0
        self.failure: str | None = None  # why the log cannot be written now, for /healthz
        self.replay = Replay()

    def register(self, model: str, kinds: Mapping[str, str]) -> None:
        """Column types for a model's rows, by kind (int/float/bool/category/string/
        timestamp); other columns take the type of their values (datetimes must be
        timezone-aware UTC)."""
        with self._cond:
            self._types[model] = {c: _ARROW_TYPES[k] for c, k in kinds.items()}
            if model not in self._queues:
                self._queues[model] = _Pickled()
                # the depth's series starts at 0, not at the first prediction: a queue that has
                # never been empty since the series began reads as one that never drains
                self._on_depth(model, 0)

    def start(self) -> None:
        """Replay what crashed services left in the registered models' write-ahead files,
        open this one's, and start the writer and fsync threads. The replay is written before
        this returns (before the service answers anyone); if the disk refuses it, the rows
        stay held and the failure is reported until they are written."""
        started = time.monotonic()
        self._sink.start()
        with self._cond:
            models = list(self._queues)
        for model in models:
            self._adopt(model)
        for model in models:
            try:
                with self._wal.lock:
                    self._wal.model(model)
            except OSError as exc:
                self._fail(model, exc)
        if self._unwritten:
            self._write([])
        self.replay.seconds = time.monotonic() - started
        if self.replay.segments:
            log.warning(
                "replayed %d prediction(s) from %d write-ahead segment(s) of a service that did "
                "not stop cleanly in %.2f s (%d torn byte(s) dropped)", self.replay.rows,
                self.replay.segments, self.replay.seconds, self.replay.torn_bytes,
            )  # fmt: skip
        self._wal.start()
        self._thread.start()

    def _adopt(self, model: str) -> None:
        """Take over the segments of ``model`` that no live service holds, as batches to
        publish under their own ids."""
        try:
            found = list(orphans(wal_root(self._log_dir(model))))
        except OSError as exc:
            self._fail(model, exc)
            return
        for orphan in found:
            for segment in orphan.segments:
                data = b"".join(r.blob for r in segment.records)
                self.replay.rows += segment.rows
                self.replay.segments += 1
                self.replay.torn_bytes += segment.torn_bytes
                # every record of a model's segment names it; trust the records over the
                # directory in case a model's log was moved
                owner = segment.records[0].model
                self._unwritten.append(
                    _Batch(owner, segment.batch_id, data, segment.rows,
                           _orphan_done(orphan, segment))
                )  # fmt: skip
                with self._cond:
                    self._pending += segment.rows

    def depth(self) -> int:
        return self._pending

    def offer(self, model: str, rows: list[dict[str, Any]], blob: bytes | None = None) -> bool:
        """Queue the rows if there is room for all of them (a request's rows stay together),
        after appending them to the write-ahead file; ``blob`` is their pickle, if the caller
        has it already.

        Raises:
            PredictionLogUnavailable: the log cannot be written (the rows are not queued).
        """
        if blob is None:
            blob = pickle.dumps(rows, protocol=5)
        with self._cond:
            if self._closing:
                raise RuntimeError("the prediction log is closed")
            if self.failure is not None:
                raise PredictionLogUnavailable(self.failure)
            if self._pending and self._pending + len(rows) > self.max_rows:
                return False
            try:
                self._wal.append(model, len(rows), blob)
            except OSError as exc:
                raise PredictionLogUnavailable(self._fail(model, exc)) from None
            queue = self._queues.get(model)
            if queue is None:
                queue = self._queues[model] = _Pickled()
            queue.add(blob, len(rows))
            self._pending += len(rows)
            self._on_depth(model, queue.rows)
            if self._pending >= self.max_rows // 2:
                self._cond.notify()
        return True

    async def put(self, model: str, rows: list[dict[str, Any]]) -> None:
        """Queue the rows, waiting (without blocking the event loop) while the queue is full,
        at most ``room_wait_seconds``.

        Raises:
            PredictionLogUnavailable: the log cannot be written, or it stayed full.
        """
        blob = pickle.dumps(rows, protocol=5)
        if self.offer(model, rows, blob):
            return
        deadline = time.monotonic() + self.room_wait_seconds
        delay = 0.001
        while True:
            await asyncio.sleep(delay)
            if self.offer(model, rows, blob):
                return
            if time.monotonic() >= deadline:
                raise PredictionLogUnavailable(
                    f"prediction log is behind: {self._pending} prediction(s) wait to be "
                    f"written ({self._log_dir(model)}); retry later"
                )
            delay = min(delay * 2, 0.05)

    def _fail(self, model: str, exc: OSError | LogWriteFailed | str) -> str:
        """Record why the log cannot be written; returns the message predict answers with."""
        if isinstance(exc, str):
            reason = exc
        else:
            code = exc.errno
            detail = exc.reason if isinstance(exc, LogWriteFailed) else (exc.strerror or str(exc))
            reason = os.strerror(code) if code else detail
        message = f"prediction log cannot be written: {reason} ({self._log_dir(model)})"
        with self._cond:
            if self.failure != message:
                log.error("%s", message)
            self.failure = message
        return message

    def _take(self) -> list[_Batch]:
        """Swap out every non-empty queue, each with the write-ahead segment that holds the
        same rows (the caller holds the lock). A model whose next segment cannot be made
        keeps its queue and segment for the next try."""
        taken = []
        for model, queue in self._queues.items():
            if not queue.rows:
                continue
            try:
                sealed = self._wal.rotate(model)
            except OSError as exc:
                self._fail(model, exc)
                continue
            batch_id = sealed.name.removesuffix(".wal")
            taken.append(_Batch(model, batch_id, queue.data, queue.rows, _unlinker(sealed)))
            self._queues[model] = _Pickled()
            self._on_depth(model, 0)
        return taken

    def _write(self, taken: list[_Batch]) -> bool:
        """Publish what was taken, and anything left unwritten before; False if a write failed.

        Room in the queue is given back only once rows are written, so a failing disk fills
        the queue instead of buffering without bound.
        """
        self._unwritten.extend(taken)
        retried = False
        while self._unwritten:
            batch = self._unwritten[0]
            try:
                self._sink.write(
                    batch.model, batch.batch_id, self._types.get(batch.model, {}), batch.data,
                    batch.rows,
                )  # fmt: skip
            except LogWriteFailed as exc:
                self.failures += 1
                if exc.errno is not None:  # the disk refused: predict says so until it takes writes
                    self._fail(batch.model, exc)
                # otherwise a bug in building the file: the rows are kept and retried, and only
                # a queue that fills up turns requests away
                log.error("could not write %d prediction(s) of %s (%s); retrying", batch.rows,
                          batch.model, exc.reason)  # fmt: skip
                return False
            except (OSError, EOFError, TimeoutError) as exc:
                # the child died or hung: a new one is started for the next attempt, at once
                # the first time (a killed writer is no reason to turn requests away)
                self.failures += 1
                if not retried:
                    retried = True
                    continue
                self._fail(batch.model, f"the log writer process failed ({exc!r})")
                return False
            self._unwritten.pop(0)
            batch.done()
            with self._cond:
                self._pending -= batch.rows
            self._on_written(batch.model, batch.rows)
        return True

    def _recover(self) -> bool:
        """After a failure, with every held batch written: whether the disk takes writes again
        (a real write and fsync beside each model's segments); the failure clears if so."""
        seen = self.failure
        try:
            with self._cond:
                models = list(self._queues)
            for model in models:
                with self._wal.lock:
                    wal = self._wal.model(model)
                wal.probe()
        except OSError as exc:
            self._fail(model, exc)
            return False
        with self._cond:
            if self.failure == seen:
                self.failure = None
        log.warning("the prediction log is written again")
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and self._pending < self.max_rows // 2:
                    self._cond.wait(self.flush_seconds)
                if self._closing:
                    return  # close() writes the rest from its own thread
                taken = self._take()
            ok = True
            if taken or self._unwritten:
                ok = self._write(taken)
            if ok and self.failure is not None:
                ok = self._recover()
            if not ok:
                time.sleep(RETRY_SECONDS)

    def close(self, timeout: float = 30.0) -> int:
        """Stop the writer and write every queued row; returns how many were left unwritten
        (they stay in the write-ahead file, and the next start writes them)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with self._cond:
                    taken = self._take()
                if self._write(taken):
                    return 0
                if time.monotonic() >= deadline:
                    left = sum(b.rows for b in self._unwritten)
                    left += sum(q.rows for q in self._queues.values())
                    log.error(
                        "%d prediction(s) could not be written before shutdown; they stay in "
                        "the write-ahead files and the next start writes them",
                        left,
                    )
                    return left
                time.sleep(RETRY_SECONDS)
        finally:
            self._wal.close()
            self._sink.close()

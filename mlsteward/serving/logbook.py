"""Online predictions into the prediction log, off the request path, losing none.

Requests pickle their rows onto a bounded in-memory queue and return; one writer thread hands
them in batches, at most ``flush_seconds`` after they were queued, to a child process that
appends them to the prediction log (``mlsteward.monitoring.prediction_log``, the files drift
detection
reads; see ``mlsteward.serving.logproc`` for why a process). When the queue is full, requests
wait for room instead of dropping rows (``put`` yields to the event loop meanwhile), so a slow
disk slows answers down rather than leaving silent holes in the log drift relies on. A failed
write keeps its rows and retries. ``close`` writes everything still queued; the service calls
it on shutdown, which uvicorn runs on SIGTERM after the last in-flight request has finished.

Rows are written typed as batch scoring stores them (integers as int64,
booleans as bool, categories as string), so online and batch files read back together with
one schema.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from mlsteward.monitoring import prediction_log
from mlsteward.serving.logproc import LogProcess

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


class _Pickled:
    """Queued rows of one model, pickled as they were queued (see ``logproc`` for why)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.rows = 0

    def add(self, blob: bytes, rows: int) -> None:
        self.data += blob
        self.rows += rows


class PredictionLogWriter:
    def __init__(
        self,
        max_rows: int,
        flush_seconds: float,
        on_depth: Callable[[str, int], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self._sink = LogProcess()
        self.flush_seconds = flush_seconds
        self._on_depth = on_depth or (lambda model, depth: None)
        self._on_written = on_written or (lambda model, rows: None)
        self._types: dict[str, dict[str, pa.DataType]] = {}
        self._queues: dict[str, _Pickled] = {}
        self._unwritten: list[tuple[str, str, _Pickled]] = []  # (model, batch id, rows) to retry
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.failures = 0

    def register(self, model: str, kinds: Mapping[str, str]) -> None:
        """Column types for a model's rows, by kind (int/float/bool/category/string/
        timestamp); other columns take the type of their values (datetimes must be
        timezone-aware UTC)."""
        with self._cond:
            self._types[model] = {c: _ARROW_TYPES[k] for c, k in kinds.items()}
            self._queues.setdefault(model, _Pickled())

    def start(self) -> None:
        self._sink.start()
        self._thread.start()

    def depth(self) -> int:
        return self._pending

    def offer(self, model: str, rows: list[dict[str, Any]], blob: bytes | None = None) -> bool:
        """Queue the rows if there is room for all of them (a request's rows stay together);
        ``blob`` is their pickle, if the caller has it already."""
        if blob is None:
            blob = pickle.dumps(rows, protocol=5)
        with self._cond:
            if self._closing:
                raise RuntimeError("the prediction log is closed")
            if self._pending and self._pending + len(rows) > self.max_rows:
                return False
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
        """Queue the rows, waiting (without blocking the event loop) while the queue is full."""
        delay = 0.001
        blob = pickle.dumps(rows, protocol=5)
        while not self.offer(model, rows, blob):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _take(self) -> list[tuple[str, _Pickled]]:
        """Swap out every non-empty queue (the caller holds the lock)."""
        taken = []
        for model, queue in self._queues.items():
            if queue.rows:
                taken.append((model, queue))
                self._queues[model] = _Pickled()
                self._on_depth(model, 0)
        return taken

    def _write(self, taken: list[tuple[str, _Pickled]]) -> bool:
        """Append what was taken, and anything left unwritten before; False if a write failed.

        Room in the queue is given back only once rows are written, so a failing disk makes
        requests wait instead of buffering without bound.
        """
        self._unwritten.extend((model, prediction_log.new_id(), q) for model, q in taken)
        while self._unwritten:
            model, batch_id, queue = self._unwritten[0]
            try:
                self._sink.write(
                    model, batch_id, self._types.get(model, {}), queue.data, queue.rows
                )
            except Exception as exc:
                self.failures += 1
                log.error("could not write %d prediction(s) of %s (%s); retrying", queue.rows,
                          model, exc)  # fmt: skip
                return False
            self._unwritten.pop(0)
            with self._cond:
                self._pending -= queue.rows
            self._on_written(model, queue.rows)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and self._pending < self.max_rows // 2:
                    self._cond.wait(self.flush_seconds)
                if self._closing:
                    return  # close() writes the rest from its own thread
                taken = self._take()
            if (taken or self._unwritten) and not self._write(taken):
                time.sleep(RETRY_SECONDS)

    def close(self, timeout: float = 30.0) -> int:
        """Stop the writer and write every queued row; returns how many were left unwritten."""
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
                    left = sum(q.rows for _, _, q in self._unwritten)
                    log.error("%d prediction(s) could not be written before shutdown", left)
                    return left
                time.sleep(RETRY_SECONDS)
        finally:
            self._sink.close()

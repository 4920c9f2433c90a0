"""Online predictions into the prediction log, off the request path, losing none.

Requests put their rows on a bounded in-memory queue and return; one writer thread appends
them to the prediction log (``mlsteward.prediction_log``, the files drift detection reads) in
batches, at most ``flush_seconds`` after they were queued. When the queue is full, requests
wait for room instead of dropping rows (``put`` yields to the event loop meanwhile), so a slow
disk slows answers down rather than leaving silent holes in the log drift relies on. A failed
write keeps its rows and retries. ``close`` writes everything still queued; the service calls
it on shutdown, which uvicorn runs on SIGTERM after the last in-flight request has finished.

Rows are typed as batch scoring types them (integers as nullable Int64, booleans as boolean,
categories as string), so online and batch files read back together with one schema.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from mlsteward import prediction_log

log = logging.getLogger("mlsteward.serving")

_PANDAS_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "category": "string"}
RETRY_SECONDS = 1.0


class PredictionLogWriter:
    def __init__(
        self,
        max_rows: int,
        flush_seconds: float,
        on_depth: Callable[[str, int], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self._on_depth = on_depth or (lambda model, depth: None)
        self._on_written = on_written or (lambda model, rows: None)
        self._dtypes: dict[str, dict[str, str]] = {}
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.failures = 0

    def register(self, model: str, dtypes: Mapping[str, str]) -> None:
        """Column types for a model's rows: feature kinds (int/float/bool/category) or pandas
        dtypes for the other columns."""
        with self._cond:
            self._dtypes[model] = {c: _PANDAS_DTYPES.get(k, k) for c, k in dtypes.items()}
            self._queues.setdefault(model, deque())

    def start(self) -> None:
        self._thread.start()

    def depth(self) -> int:
        return self._pending

    def offer(self, model: str, rows: list[dict[str, Any]]) -> bool:
        """Queue the rows if there is room for all of them (a request's rows stay together)."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the prediction log is closed")
            if self._pending and self._pending + len(rows) > self.max_rows:
                return False
            self._queues.setdefault(model, deque()).extend(rows)
            self._pending += len(rows)
            self._on_depth(model, len(self._queues[model]))
            if self._pending >= self.max_rows // 2:
                self._cond.notify()
        return True

    async def put(self, model: str, rows: list[dict[str, Any]]) -> None:
        """Queue the rows, waiting (without blocking the event loop) while the queue is full."""
        delay = 0.001
        while not self.offer(model, rows):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _take(self) -> dict[str, list[dict[str, Any]]]:
        taken = {}
        for model, q in self._queues.items():
            if q:
                taken[model] = list(q)
                q.clear()
                self._on_depth(model, 0)
        self._pending = 0
        return taken

    def _write(self, batches: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """Append each model's rows; returns what could not be written."""
        failed = {}
        for model, rows in batches.items():
            try:
                frame = pd.DataFrame.from_records(rows)
                for col, dtype in self._dtypes.get(model, {}).items():
                    if col in frame.columns:
                        frame[col] = frame[col].astype(dtype)
                prediction_log.append(model, frame)
                self._on_written(model, len(rows))
            except Exception:
                self.failures += 1
                log.exception("could not write %d prediction(s) of %s; retrying", len(rows), model)
                failed[model] = rows
        return failed

    def _requeue(self, failed: dict[str, list[dict[str, Any]]]) -> None:
        with self._cond:
            for model, rows in failed.items():
                self._queues[model].extendleft(reversed(rows))
                self._pending += len(rows)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and self._pending < self.max_rows // 2:
                    self._cond.wait(self.flush_seconds)
                if self._closing:
                    return  # close() writes the rest from its own thread
                batches = self._take()
            failed = self._write(batches) if batches else {}
            if failed:
                self._requeue(failed)
                time.sleep(RETRY_SECONDS)

    def close(self, timeout: float = 30.0) -> int:
        """Stop the writer and write every queued row; returns how many were left unwritten."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                batches = self._take()
            failed = self._write(batches) if batches else {}
            if not failed:
                return 0
            self._requeue(failed)
            if time.monotonic() >= deadline:
                left = sum(len(r) for r in failed.values())
                log.error("%d prediction(s) could not be written before shutdown", left)
                return left
            time.sleep(RETRY_SECONDS)

"""The process that writes the service's prediction-log files.

Building a second's rows into Arrow and writing them as parquet (with fsync) costs a few ms
of CPU, and in the service's own process every step of it competes for the GIL with the
event loop: at one client it pushed the 90th-99th percentile latencies up by 15-60 % in
measurements. Here the service only pickles the queued columns (one C call) and waits for
the answer with the GIL released; the conversion and the disk are another process's.

The service sends ``(model, batch_id, types, columns)`` and gets ``("ok", rows)`` back once
the file is published, or ``("error", reason)``; it keeps the rows until it has the "ok" and
retries with the same ``batch_id``, so an answer lost with a crashed child never writes a
batch twice (the log refuses an existing batch id; when that batch's file is there, the
attempt counts as written).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa

log = logging.getLogger("mlsteward.serving")
ANSWER_TIMEOUT_SECONDS = 120.0
NICENESS = 10
_STOP = b""


def _table(types: dict[str, pa.DataType], columns: dict[str, list[Any]]) -> pa.Table:
    try:
        return pa.table({n: pa.array(v, type=types.get(n)) for n, v in columns.items()})
    except (pa.ArrowException, TypeError, ValueError) as exc:
        # Values are checked before they are queued, so this is a bug; the rows are kept, as
        # text, rather than lost or retried for ever.
        log.error("prediction-log rows did not fit their types (%s); stored as text", exc)
        return pa.table(
            {n: pa.array([None if x is None else str(x) for x in v], pa.string())
             for n, v in columns.items()}
        )  # fmt: skip


def serve(conn: Connection) -> None:
    """Child process main loop: one batch in, one file out, one answer back."""
    # The service flushes on SIGTERM and then closes the pipe: a signal sent to the whole
    # process group must not stop this process before the last batch arrives.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Background work: when the cores are busy, requests go first (a lower share of CPU only
    # delays the writes, and a full queue then slows requests down rather than losing rows).
    os.nice(NICENESS)
    from mlsteward import prediction_log

    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if payload == _STOP:
            return
        model, batch_id, types, columns = pickle.loads(payload)
        try:
            table = _table(types, columns)
            prediction_log.append_table(model, table, batch_id=batch_id)
            answer: tuple[str, Any] = ("ok", table.num_rows)
        except Exception as exc:
            if isinstance(exc, FileExistsError) and prediction_log.batch_exists(model, batch_id):
                answer = ("ok", 0)  # an earlier attempt wrote it; its answer was lost
            else:
                answer = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(answer)


class LogProcess:
    """The service's side: starts the child (again, if it died) and hands it batches."""

    def __init__(self, answer_timeout: float = ANSWER_TIMEOUT_SECONDS) -> None:
        self.answer_timeout = answer_timeout
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._discard()
        ctx = multiprocessing.get_context("spawn")  # the service has threads: never fork it
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(theirs,), name="prediction-log", daemon=True)
        proc.start()
        theirs.close()
        self._proc, self._conn = proc, ours

    def write(
        self, model: str, batch_id: str, types: dict[str, Any], columns: dict[str, list[Any]]
    ) -> int:
        """Write one batch; returns its rows. Raises if it was not (surely) written."""
        self.start()
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps((model, batch_id, types, columns), protocol=5))
            if not self._conn.poll(self.answer_timeout):
                raise TimeoutError(f"no answer from the log writer in {self.answer_timeout:g} s")
            status, detail = self._conn.recv()
        except (OSError, EOFError, TimeoutError):
            self._discard()  # dead or stuck: the next attempt starts a new one
            raise
        if status != "ok":
            raise RuntimeError(detail)
        return int(detail)

    def close(self, timeout: float = 10.0) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send_bytes(_STOP)
            self._proc.join(timeout)
        self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        self._proc, self._conn = None, None

"""The process that writes the service's prediction-log files.

Building a second's rows into Arrow and writing them as parquet (with fsync) costs a few ms
of CPU, and in the service's own process every step of it competes for the GIL with the
event loop: at one client it pushed the 90th-99th percentile latencies up by 15-60 % in
measurements. So the service does none of it. Each request pickles its rows as it queues
them (~1.5 us a request, while they are still in the CPU's cache); a batch is then one byte string,
which the service's writer thread passes down the pipe with the GIL released. Pickling a
second's rows at flush time instead held the GIL for 1-3 ms (thousands of objects scattered
over the heap, datetimes the dearest), and the request that arrived meanwhile waited as long.
Here the rows are unpickled, put into columns, converted and written.

The service sends a header ``(model, batch_id, types, rows)`` and then the batch's bytes (the
rows' pickles, one after the other) and gets ``("ok", rows)`` back once the file is
published, or ``("error", (errno, reason))`` (``errno`` None unless the disk refused: a full
disk is told apart from a bug by it); it keeps the rows until it has the "ok" and
retries with the same ``batch_id``, so an answer lost with a crashed child never writes a
batch twice (the log refuses an existing batch id; a retry publishes only the days of the
batch an earlier attempt did not, ``prediction_log.append_table(resume=True)``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import multiprocessing
import pickle
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa

from mlsteward.serving.helpers import background, discard, spawn

log = logging.getLogger("mlsteward.serving")
ANSWER_TIMEOUT_SECONDS = 120.0
_STOP = b""


class Columns:
    """Rows turned into one list per column, for Arrow's one-call-per-column conversion."""

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {}
        self.rows = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        data = self.data
        for row in rows:
            n = self.rows
            for name, value in row.items():
                col = data.get(name)
                if col is None:  # a column first seen now (e.g. SHAP columns): earlier rows null
                    col = data[name] = [None] * n
                col.append(value)
            self.rows = n + 1
            if len(row) < len(data):  # a column this row lacks
                for col in data.values():
                    if len(col) == n:
                        col.append(None)


def columns_of(payload: bytes) -> dict[str, list[Any]]:
    """The columns of a batch: ``payload`` is pickled lists of row dicts, back to back."""
    columns = Columns()
    stream = io.BytesIO(payload)
    while stream.tell() < len(payload):
        columns.add(pickle.load(stream))
    return columns.data


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
    # The service flushes on SIGTERM and then closes the pipe: the last batch arrives after the
    # signal. A lower share of CPU only delays the writes (a full queue then slows requests
    # down rather than losing rows).
    background()
    from mlsteward.monitoring import prediction_log

    while True:
        try:
            header = conn.recv_bytes()
            if header == _STOP:
                return
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the service went away (mid-batch or not): it keeps its rows
        model, batch_id, types, rows = pickle.loads(header)
        answer: tuple[str, Any]
        try:
            table = _table(types, columns_of(payload))
            if table.num_rows != rows:
                raise ValueError(f"the batch holds {table.num_rows} rows, not {rows}")
            prediction_log.append_table(model, table, batch_id=batch_id, resume=True)
            answer = ("ok", table.num_rows)
        except FileExistsError as exc:
            if prediction_log.batch_exists(model, batch_id):
                answer = ("ok", 0)  # another process published the same batch meanwhile
            else:  # something else in the way, such as a file where a day directory goes
                answer = ("error", (exc.errno, exc.strerror or str(exc)))
        except OSError as exc:  # the disk refused; errno tells the service it was the disk
            answer = ("error", (exc.errno or errno.EIO, exc.strerror or str(exc)))
        except Exception as exc:
            answer = ("error", (None, f"{type(exc).__name__}: {exc}"))
        conn.send(answer)


class LogWriteFailed(RuntimeError):
    """The child could not publish a batch; ``errno`` set when the disk refused the write."""

    def __init__(self, errno: int | None, reason: str) -> None:
        super().__init__(reason)
        self.errno = errno
        self.reason = reason


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
        self._proc, self._conn = spawn(serve, "prediction-log")

    def write(
        self,
        model: str,
        batch_id: str,
        types: dict[str, Any],
        payload: bytes | bytearray,
        rows: int,
    ) -> int:
        """Write one batch of ``rows`` pickled rows; returns its rows. Raises if it was not
        (surely) written."""
        self.start()
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps((model, batch_id, types, rows), protocol=5))
            self._conn.send_bytes(payload)
            if not self._conn.poll(self.answer_timeout):
                raise TimeoutError(f"no answer from the log writer in {self.answer_timeout:g} s")
            status, detail = self._conn.recv()
        except (OSError, EOFError, TimeoutError):
            self._discard()  # dead or stuck: the next attempt starts a new one
            raise
        if status != "ok":
            code, reason = detail
            raise LogWriteFailed(code, reason)
        return int(detail)

    def close(self, timeout: float = 10.0) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send_bytes(_STOP)
            self._proc.join(timeout)
        self._discard()

    def _discard(self) -> None:
        discard(self._proc, self._conn)
        self._proc, self._conn = None, None

"""The embedded audit store: one SQLite file (default ``<MLSTEWARD_HOME>/audit/audit.db``).

Why it is safe with several writers: every append is one ``BEGIN IMMEDIATE`` transaction, which
takes SQLite's single write lock before reading the head marker, so two processes (or threads)
can never both build on the same head; the other waits (busy timeout) and then builds on the new
head. ``seq`` is the primary key as a backstop. The file runs in WAL mode, so readers (queries,
``verify``) never block writers and see a consistent snapshot; ``synchronous=FULL`` because an
acknowledged governance decision must survive a power cut.

Tables: ``audit`` (the records, see ``records.COLUMNS``; indexes on (model, seq),
(model, action, seq), (action, seq) and ts) and ``audit_head`` (one row: seq, hash and ts of the
last record, written in the same transaction as each append, so removing records from the end
is detectable). Triggers refuse UPDATE and DELETE on ``audit``: that stops mistakes, not someone
who edits the file; the hash chain is what catches those.

``lock(name)`` is an ``fcntl.flock`` on ``locks/<name>.lock`` next to the database: mutual
exclusion between processes (and threads) on one host, released when the block ends or the
process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlsteward.audit.base import Fence, Statements, _ChainStore, finder
from mlsteward.audit.chain import Segment, scan
from mlsteward.audit.records import AuditError, chain_rows

SCHEME = "sqlite:///"
_SQL = Statements("audit", "?")
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        model TEXT,
        version TEXT,
        reason TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_model_seq ON audit (model, seq)",
    "CREATE INDEX IF NOT EXISTS audit_model_action_seq ON audit (model, action, seq)",
    "CREATE INDEX IF NOT EXISTS audit_action_seq ON audit (action, seq)",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts)",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        ts TEXT NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
)

_ABANDONED: list[sqlite3.Connection] = []
"""Connections inherited through fork: never used or closed in the child (SQLite forbids it)."""


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/x.db`` or ``sqlite:////abs/x.db`` -> the file's path."""
    if not url.startswith(SCHEME) or len(url) == len(SCHEME):
        raise AuditError(f"not a SQLite audit URL: {url!r} (expected sqlite:///path/to/audit.db)")
    path = url[len(SCHEME) :].split("?", 1)[0]
    if path == ":memory:":
        raise AuditError("the audit store needs a file (sqlite:///:memory: is not shared)")
    return Path(path).expanduser()


def lock_file_name(name: str) -> str:
    """A safe, collision-free file name for a lock name such as ``promote:heart_disease``."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}.lock"


class SQLiteAuditStore(_ChainStore):
    """Append-only, hash-chained audit trail in a SQLite file (see the module doc).

    One connection per store object, guarded by a lock, so a store can be shared by threads;
    after a fork the child opens its own connection.
    """

    _sql = _SQL
    _helper_module = __name__
    _db_error = sqlite3.Error

    def __init__(
        self, url: str, *, busy_timeout: float = 60.0, verify_workers: int | None = None
    ) -> None:
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        super().__init__(url, verify_workers=verify_workers)

    def __repr__(self) -> str:
        return f"SQLiteAuditStore({self.url!r})"

    @property
    def _where(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ connection

    def _open(self, *, read_only: bool = False) -> sqlite3.Connection:
        try:
            if read_only:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro",
                    uri=True,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                _set_wal(conn, self.busy_timeout)
                conn.execute("PRAGMA synchronous = FULL")
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"cannot open the audit database {self.path}: {exc}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        """The store's connection (caller holds ``_mutex``); reopened in a forked child."""
        if self._closed:
            raise AuditError(f"the audit store {self.url} is closed")
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        conn = self._open()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in (*_SCHEMA, _SQL.fence_schema):
                conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"cannot create the audit tables in {self.path}: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _snapshot(self) -> sqlite3.Connection:
        """A read-only connection inside one read transaction."""
        conn = self._open(read_only=True)
        try:
            conn.execute("BEGIN")
        except BaseException:
            conn.close()
            raise
        return conn

    # ------------------------------------------------------------------ writing

    def _write(self, chunk: list, *, bulk: bool = False) -> list[tuple]:
        """One ``BEGIN IMMEDIATE`` transaction: SQLite's write lock is taken before the head
        marker is read."""
        with self._mutex:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = chain_rows(chunk, self._read_head(conn))
                    conn.executemany(_SQL.insert, rows)
                    last = rows[-1]
                    conn.execute(_SQL.set_head, (last[0], last[9], last[1]))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"cannot append to the audit trail {self.path}: {exc}") from exc
        return rows

    # ------------------------------------------------------------------ reading

    def _scan(
        self, conn: sqlite3.Connection, after: int, upto: int, expect_head: str | None
    ) -> Segment:
        return _scan(conn, after, upto, expect_head)

    # ------------------------------------------------------------------ locking

    def _fence(self, statement: str, name: str) -> int:
        """Take the next fencing token (``next_fence``) or read the newest (``read_fence``)."""
        with self._mutex:
            conn = self._connection()
            try:
                row = conn.execute(statement, (name,)).fetchone()
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read the fencing token of {name!r}: {exc}") from exc
        return int(row[0]) if row else 0

    @contextmanager
    def lock(self, name: str, timeout: float = 60.0) -> Iterator[Fence]:
        """Hold the named lock (across processes on this host) for the ``with`` block.

        Not re-entrant: taking a lock this thread already holds waits for ``timeout``.

        Raises:
            AuditError: the lock was not free within ``timeout`` seconds.
        """
        if not name:
            raise AuditError("a lock needs a name, e.g. 'promote:heart_disease'")
        directory = self.path.parent / "locks"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / lock_file_name(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            pause = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AuditError(
                            f"timed out after {timeout:g} s waiting for lock {name!r} "
                            f"({path}); another process holds it"
                        ) from None
                    time.sleep(min(pause, remaining))
                    pause = min(pause * 2, 0.05)
            try:
                yield Fence(
                    name,
                    self._fence(_SQL.next_fence, name),
                    lambda: self._fence(_SQL.read_fence, name),
                )
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL, retrying: the switch can report "database is locked" at once, without
    waiting for the busy timeout, while other processes create the same file."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def _scan(conn: sqlite3.Connection, after: int, upto: int, expect_head: str | None) -> Segment:
    cursor = conn.execute(_SQL.range, (after, upto))
    return scan(cursor, expect_head=expect_head, find_seq=finder(conn, _SQL))


def scan_range(url: str, after: int, upto: int, expect_head: str | None) -> Segment:
    """Check records ``after < seq <= upto`` (run by a verify helper process)."""
    conn = sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        return _scan(conn, after, upto, expect_head)
    finally:
        conn.close()

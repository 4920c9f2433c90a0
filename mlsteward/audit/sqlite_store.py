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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

from mlsteward.audit.records import (
    COLUMNS,
    Action,
    AuditError,
    AuditRecord,
    Segment,
    VerifyResult,
    chain_row,
    check_limit,
    finish,
    make_entry,
    plan_segments,
    query_filters,
    run_segments,
    scan,
)

SCHEME = "sqlite:///"
_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM audit"
_INSERT = "INSERT INTO audit (" + ", ".join(COLUMNS) + ") VALUES (" + ", ".join("?" * 10) + ")"
_SET_HEAD = (
    "INSERT INTO audit_head (id, seq, hash, ts) VALUES (1, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, ts = excluded.ts"
)
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


class SQLiteAuditStore:
    """Append-only, hash-chained audit trail in a SQLite file (see the module doc).

    One connection per store object, guarded by a lock, so a store can be shared by threads;
    after a fork the child opens its own connection.
    """

    def __init__(
        self, url: str, *, busy_timeout: float = 60.0, verify_workers: int | None = None
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self.verify_workers = verify_workers
        self._mutex = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._closed = False
        with self._mutex:
            self._connection()

    def __repr__(self) -> str:
        return f"SQLiteAuditStore({self.url!r})"

    def __enter__(self) -> SQLiteAuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"cannot create the audit tables in {self.path}: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True

    # ------------------------------------------------------------------ writing

    def append(
        self,
        action: str | Action,
        *,
        model: str | None = None,
        version: str | int | None = None,
        reason: str = "",
        actor: str | None = None,
        details: dict | None = None,
    ) -> AuditRecord:
        """Add one record at the end of the chain and return it as stored."""
        entry = make_entry(
            action, model=model, version=version, reason=reason, actor=actor, details=details
        )
        with self._mutex:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    head = self._head(conn)
                    row = chain_row(entry, head)
                    conn.execute(_INSERT, row)
                    conn.execute(_SET_HEAD, (row[0], row[9], row[1]))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"cannot append to the audit trail {self.path}: {exc}") from exc
        return AuditRecord.from_row(row)

    def _bulk_append(self, items: Iterable[Mapping], batch: int = 100_000) -> int:
        """Append many records fast, with the real chain (benchmarks, imports).

        Each item holds ``append``'s keyword arguments plus ``action`` and, optionally, ``ts``
        (canonical text; it never goes back). One transaction per ``batch`` records.
        """
        count = 0
        chunk: list = []
        for item in items:
            fields = dict(item)
            ts = fields.pop("ts", None)
            chunk.append((make_entry(**fields), ts))
            if len(chunk) >= batch:
                count += self._write_batch(chunk)
                chunk = []
        if chunk:
            count += self._write_batch(chunk)
        return count

    def _write_batch(self, chunk: list) -> int:
        with self._mutex:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                head = self._head(conn)
                rows = []
                for entry, ts in chunk:
                    row = chain_row(entry, head, ts)
                    rows.append(row)
                    head = (row[0], row[9], row[1])
                conn.executemany(_INSERT, rows)
                if head is not None:
                    conn.execute(_SET_HEAD, (head[0], head[1], head[2]))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(chunk)

    def _head(self, conn: sqlite3.Connection) -> tuple[int, str, str] | None:
        head = conn.execute("SELECT seq, hash, ts FROM audit_head WHERE id = 1").fetchone()
        if head is None and conn.execute("SELECT 1 FROM audit LIMIT 1").fetchone():
            raise AuditError(
                f"the audit trail {self.path} has records but no head marker: it was tampered "
                "with outside the audit store; run verify and restore it from a backup"
            )
        return head

    # ------------------------------------------------------------------ reading

    def query(
        self,
        *,
        model: str | None = None,
        action: str | Action | None = None,
        since: datetime | date | str | None = None,
        version: str | int | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Matching records, oldest first; with ``limit``, the last ``limit`` of them."""
        check_limit(limit)
        if limit == 0:
            return []
        where, params = query_filters(
            model=model, action=action, since=since, version=version, placeholder="?", table="audit"
        )
        if limit is None:
            sql = f"{_SELECT}{where} ORDER BY seq"
        else:
            sql = f"{_SELECT}{where} ORDER BY seq DESC LIMIT {int(limit)}"
        rows = self._fetch(sql, params)
        if limit is not None:
            rows.reverse()
        from_row = AuditRecord.from_row
        return [from_row(row) for row in rows]

    def last(
        self, *, model: str | None = None, action: str | Action | None = None
    ) -> AuditRecord | None:
        """The newest record matching the filters, or None."""
        where, params = query_filters(
            model=model, action=action, since=None, version=None, placeholder="?", table="audit"
        )
        rows = self._fetch(f"{_SELECT}{where} ORDER BY seq DESC LIMIT 1", params)
        return AuditRecord.from_row(rows[0]) if rows else None

    def _fetch(self, sql: str, params: list) -> list[tuple]:
        with self._mutex:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read the audit trail {self.path}: {exc}") from exc

    def verify(self, expect_head: str | None = None) -> VerifyResult:
        """Recompute every hash and link from the first record (see ``records``).

        Reads on its own read-only connection inside one read transaction, so appends from
        other threads and processes carry on meanwhile and the head marker and records come
        from one snapshot. Large chains are split into seq ranges checked by helper processes
        in parallel (``verify_workers``: None = by size and free cores, 1 = one pass here).
        """
        with self._mutex:
            self._connection()  # the tables exist
        conn = self._open(read_only=True)
        try:
            conn.execute("BEGIN")
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            first, last = conn.execute("SELECT MIN(seq), MAX(seq) FROM audit").fetchone()
            find_seq = _finder(conn)
            segments = run_segments(
                plan_segments(first, last, self.verify_workers),
                store_module=__name__,
                url=self.url,
                expect_head=expect_head,
                scan_here=lambda after, upto: _scan(conn, after, upto, expect_head),
            )
            return finish(segments, head=head, expect_head=expect_head, find_seq=find_seq)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot verify the audit trail {self.path}: {exc}") from exc
        finally:
            conn.close()

    # ------------------------------------------------------------------ locking

    @contextmanager
    def lock(self, name: str, timeout: float = 60.0) -> Iterator[None]:
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
                yield
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


def _finder(conn: sqlite3.Connection) -> Callable[[str], int | None]:
    def find_seq(digest: str) -> int | None:
        found = conn.execute("SELECT seq FROM audit WHERE hash = ? LIMIT 1", (digest,)).fetchone()
        return found[0] if found else None

    return find_seq


def _scan(conn: sqlite3.Connection, after: int, upto: int, expect_head: str | None) -> Segment:
    cursor = conn.execute(f"{_SELECT} WHERE seq > ? AND seq <= ? ORDER BY seq", (after, upto))
    return scan(cursor, expect_head=expect_head, find_seq=_finder(conn))


def scan_range(url: str, after: int, upto: int, expect_head: str | None) -> Segment:
    """Check records ``after < seq <= upto`` (run by a verify helper process)."""
    conn = sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        return _scan(conn, after, upto, expect_head)
    finally:
        conn.close()

"""What the SQLite and PostgreSQL stores share: the statements both dialects write alike, the
query filters, and ``_ChainStore``, the store logic above the connection.

``_ChainStore`` builds entries and places them in the chain, answers ``query``/``last``, runs
``verify`` (head marker, seq bounds, segments scanned here and in helper processes) and keeps the
one-connection-per-store bookkeeping. A backend subclass keeps only what really differs: how it
connects and creates its tables (``_connection``), how one write transaction is serialised and
written (``_write``), how a read snapshot is opened (``_snapshot``) and streamed (``_scan``), and
``lock``.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from mlsteward.audit.chain import Segment, VerifyResult, finish
from mlsteward.audit.records import (
    COLUMNS,
    Action,
    AuditError,
    AuditRecord,
    action_value,
    make_entry,
    parse_since,
)
from mlsteward.audit.verify_pool import plan_segments, run_segments


class Statements:
    """The statements both dialects write alike, for one records table (``<table>_head`` holds
    the head marker) and the driver's parameter placeholder (``?`` or ``%s``)."""

    def __init__(self, table: str, placeholder: str) -> None:
        p = placeholder
        h = f"{table}_head"
        cols = ", ".join(COLUMNS)
        self.table, self.head_table, self.placeholder = table, h, p
        self.select = f"SELECT {cols} FROM {table}"
        self.insert = f"INSERT INTO {table} ({cols}) VALUES ({', '.join([p] * len(COLUMNS))})"
        self.read_head = f"SELECT seq, hash, ts FROM {h} WHERE id = 1"
        self.set_head = (
            f"INSERT INTO {h} (id, seq, hash, ts) VALUES (1, {p}, {p}, {p}) ON CONFLICT (id) "
            "DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, ts = EXCLUDED.ts"
        )
        self.any_record = f"SELECT 1 FROM {table} LIMIT 1"
        self.find_seq = f"SELECT seq FROM {table} WHERE hash = {p} LIMIT 1"
        self.bounds = f"SELECT MIN(seq), MAX(seq) FROM {table}"
        self.range = f"{self.select} WHERE seq > {p} AND seq <= {p} ORDER BY seq"
        self.fence_table = f"{table}_fences"
        self.next_fence = (
            f"INSERT INTO {self.fence_table} (name, token) VALUES ({p}, 1) ON CONFLICT (name) "
            f"DO UPDATE SET token = {self.fence_table}.token + 1 RETURNING token"
        )
        self.read_fence = f"SELECT token FROM {self.fence_table} WHERE name = {p}"
        self.fence_schema = (
            f"CREATE TABLE IF NOT EXISTS {self.fence_table} "
            "(name TEXT PRIMARY KEY, token BIGINT NOT NULL)"
        )


class Fence:
    """A held lock's fencing token: a number that grows by one each time the lock is taken.

    A lock can be lost while its holder still runs: a PostgreSQL connection drops (the server
    releases its advisory lock) and a second promoter takes it. Before an irreversible write
    outside the audit store (moving an MLflow alias), the holder calls :meth:`check`: the token
    still being the newest proves nobody took the lock since, and a failing check stops the
    write. ``read`` returns the lock's newest token, raising ``AuditError`` when the lock's
    connection is gone.
    """

    def __init__(self, name: str, token: int, read: Callable[[], int]) -> None:
        self.name, self.token, self._read = name, token, read

    def check(self) -> None:
        """Raises:
        AuditError: the lock was lost or taken by another holder since this one got it."""
        current = self._read()
        if current != self.token:
            raise AuditError(
                f"lock {self.name!r} was taken by another holder (fencing token {self.token}, "
                f"now {current}); stopping before changing anything"
            )


def finder(conn: Any, sql: Statements) -> Callable[[str], int | None]:
    """``find_seq`` for the chain check: which stored record carries a given hash."""

    def find_seq(digest: str) -> int | None:
        found = conn.execute(sql.find_seq, (digest,)).fetchone()
        return found[0] if found else None

    return find_seq


def query_filters(
    *,
    model: str | None,
    action: str | Action | None,
    since: dt.datetime | dt.date | str | None,
    version: str | int | None,
    placeholder: str,
    table: str,
) -> tuple[str, list]:
    """``WHERE`` clause (or ``""``) and parameters for ``query``/``last``, for either store.

    ``since`` also becomes a lower bound on ``seq``: ``ts`` never decreases along the chain
    (``chain_row`` clamps it), so the first record at or after ``since`` in ``ts`` order (one
    index probe) starts the range, and a model's records are then read from the (model, seq)
    index from there instead of all of them being filtered by time.
    """
    clauses: list[str] = []
    params: list = []
    if model is not None:
        clauses.append(f"model = {placeholder}")
        params.append(model)
    if action is not None:
        clauses.append(f"action = {placeholder}")
        params.append(action_value(action))
    if version is not None:
        clauses.append(f"version = {placeholder}")
        params.append(str(version))
    if since is not None:
        bound = parse_since(since)
        clauses.append(
            f"seq >= (SELECT seq FROM {table} WHERE ts >= {placeholder} ORDER BY ts, seq LIMIT 1)"
        )
        clauses.append(f"ts >= {placeholder}")
        params += [bound, bound]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise AuditError(f"limit must be a non-negative integer or None, not {limit!r}")


class _ChainStore:
    """The store logic both backends share (see the module doc).

    One connection per store object (``_conn``, opened by the backend's ``_connection`` while
    ``_mutex`` is held), so a store can be shared by threads; after a fork the child opens its
    own connection. A subclass sets its own attributes, then calls ``__init__``, which opens the
    connection (and so creates the tables).
    """

    url: str
    verify_workers: int | None
    _sql: Statements
    _helper_module: str
    """The backend module whose ``scan_range`` verify helper processes run."""

    def __init__(self, url: str, *, verify_workers: int | None) -> None:
        self.url = url
        self.verify_workers = verify_workers
        self._mutex = threading.RLock()
        self._conn: Any = None
        self._pid = 0
        self._closed = False
        with self._mutex:
            self._connection()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ backend hooks

    @property
    def _db_error(self) -> type[Exception]:
        """The driver's base exception (only looked up when something failed)."""
        raise NotImplementedError

    @property
    def _where(self) -> str:
        """The audit trail as messages name it."""
        raise NotImplementedError

    def _connection(self) -> Any:
        """The store's connection (caller holds ``_mutex``), (re)opened when needed."""
        raise NotImplementedError

    def _write(self, chunk: list, *, bulk: bool = False) -> list[tuple]:
        """Place ``chunk`` ((entry, ts or None) pairs) at the end of the chain in one
        transaction and return the rows as stored."""
        raise NotImplementedError

    def _snapshot(self) -> Any:
        """A new read-only connection whose reads all see one snapshot (until it is closed)."""
        raise NotImplementedError

    def _scan(self, conn: Any, after: int, upto: int, expect_head: str | None) -> Segment:
        """Check records ``after < seq <= upto`` read on ``conn``."""
        raise NotImplementedError

    def _helper_options(self) -> dict:
        """Keyword arguments of ``scan_range`` beyond the URL and range (verify helpers)."""
        return {}

    # ------------------------------------------------------------------ connection

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
        rows = self._write([(entry, None)])
        return AuditRecord.from_row(rows[-1])

    def _bulk_append(self, items: Iterable[Mapping], batch: int = 100_000) -> int:
        """Append many records fast, with the real chain (benchmarks, imports).

        Each item holds ``append``'s keyword arguments plus ``action`` and, optionally, ``ts``
        (canonical text; it never goes back). One transaction per ``batch`` records (written
        with ``_write(..., bulk=True)``: PostgreSQL loads them with COPY).
        """
        count = 0
        chunk: list = []
        for item in items:
            fields = dict(item)
            ts = fields.pop("ts", None)
            chunk.append((make_entry(**fields), ts))
            if len(chunk) >= batch:
                count += len(self._write(chunk, bulk=True))
                chunk = []
        if chunk:
            count += len(self._write(chunk, bulk=True))
        return count

    def _read_head(self, conn: Any) -> tuple[int, str, str] | None:
        """(seq, hash, ts) of the last record, inside the write transaction."""
        head = conn.execute(self._sql.read_head).fetchone()
        if head is None and conn.execute(self._sql.any_record).fetchone():
            raise AuditError(
                f"the audit trail {self._where} has records but no head marker: it was tampered "
                "with outside the audit store; run verify and restore it from a backup"
            )
        return head

    # ------------------------------------------------------------------ reading

    def query(
        self,
        *,
        model: str | None = None,
        action: str | Action | None = None,
        since: dt.datetime | dt.date | str | None = None,
        version: str | int | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Matching records, oldest first; with ``limit``, the last ``limit`` of them."""
        check_limit(limit)
        if limit == 0:
            return []
        sql = self._sql
        where, params = query_filters(
            model=model,
            action=action,
            since=since,
            version=version,
            placeholder=sql.placeholder,
            table=sql.table,
        )
        if limit is None:
            rows = self._fetch(f"{sql.select}{where} ORDER BY seq", params)
        else:
            rows = self._fetch(f"{sql.select}{where} ORDER BY seq DESC LIMIT {int(limit)}", params)
            rows.reverse()
        from_row = AuditRecord.from_row
        return [from_row(row) for row in rows]

    def last(
        self, *, model: str | None = None, action: str | Action | None = None
    ) -> AuditRecord | None:
        """The newest record matching the filters, or None."""
        rows = self.query(model=model, action=action, limit=1)
        return rows[0] if rows else None

    def _fetch(self, statement: str, params: list) -> list[tuple]:
        with self._mutex:
            conn = self._connection()
            try:
                return conn.execute(statement, params).fetchall()
            except self._db_error as exc:
                raise AuditError(f"cannot read the audit trail {self._where}: {exc}") from exc

    def verify(self, expect_head: str | None = None) -> VerifyResult:
        """Recompute every hash and link from the first record (see ``chain``).

        Reads on its own read-only connection in one snapshot (``_snapshot``), so appends from
        other threads and processes carry on meanwhile and the head marker and records agree.
        Large chains are split into seq ranges checked by helper processes in parallel
        (``verify_workers``: None = by size and free cores, 1 = one pass here).
        """
        with self._mutex:
            self._connection()  # the tables exist
        conn = None
        try:
            conn = self._snapshot()
            sql = self._sql
            head_row = conn.execute(sql.read_head).fetchone()
            head = (head_row[0], head_row[1]) if head_row else None
            first, last = conn.execute(sql.bounds).fetchone()
            segments = run_segments(
                plan_segments(first, last, self.verify_workers),
                store_module=self._helper_module,
                url=self.url,
                expect_head=expect_head,
                scan_here=lambda after, upto: self._scan(conn, after, upto, expect_head),
                options=self._helper_options(),
            )
            return finish(segments, head=head, expect_head=expect_head, find_seq=finder(conn, sql))
        except self._db_error as exc:
            raise AuditError(f"cannot verify the audit trail {self._where}: {exc}") from exc
        finally:
            if conn is not None:
                conn.close()

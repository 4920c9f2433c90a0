"""The production audit store: PostgreSQL (``postgresql://user@host:5432/db``), via psycopg 3.

Why it is safe with several writers: every append is one transaction that first takes
``pg_advisory_xact_lock`` on a key derived from the table prefix, then reads the head marker,
inserts the record and updates the marker; the lock is released at commit, so appends from any
number of processes and hosts are serialised and the chain never forks. ``seq`` is the primary
key as a backstop. ``verify`` reads in one ``REPEATABLE READ`` snapshot on its own connection.

Tables (created if missing; ``prefix`` defaults to ``mlsteward_audit``): ``<prefix>`` for the
records (``records.COLUMNS``; ``ts`` and ``details`` are stored as the exact canonical text the
hash covers, not as timestamptz/jsonb, which would normalise them) and ``<prefix>_head`` (one
row: seq, hash and ts of the last record). Triggers refuse UPDATE, DELETE and TRUNCATE on the
records: that stops mistakes, not a superuser; the hash chain is what catches those.

``lock(name)`` is ``pg_advisory_lock(hashtextextended(name, 0))`` on a dedicated connection:
mutual exclusion across every process and host using this database, released when the block
ends or the connection dies (if the connection drops mid-block, the lock is gone with it).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from mlsteward.audit.base import Fence, Statements, _ChainStore, finder
from mlsteward.audit.chain import Segment, scan
from mlsteward.audit.reconnecting import is_alive, lost, one_line
from mlsteward.audit.records import COLUMNS, AuditError, chain_rows

DEFAULT_PREFIX = "mlsteward_audit"
RECONNECT_SECONDS = 30.0
"""How long an append whose COMMIT was cut off waits for the database to come back to learn
whether it was stored (a restart takes seconds; a failover, tens of them)."""
_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_ABANDONED: list[Any] = []
"""Connections inherited through fork: never used or closed in the child (closing would end
the parent's session)."""


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if "password" in query:
        query = urlencode(
            [(k, "***" if k == "password" else v) for k, v in parse_qsl(query)], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def conninfo(url: str) -> str:
    """A libpq URL: SQLAlchemy-style driver suffixes (``postgresql+psycopg://``) dropped."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise AuditError(f"not a PostgreSQL audit URL: {redact(url)}")
    return f"postgresql://{rest}"


def _connect(
    url: str,
    *,
    autocommit: bool = True,
    what: str = "the audit database",
    application: str = "mlsteward-audit",
) -> Any:
    kwargs: dict[str, Any] = {"autocommit": autocommit, "application_name": application}
    if "connect_timeout" not in url:
        kwargs["connect_timeout"] = 10
    try:
        return psycopg.connect(conninfo(url), **kwargs)
    except psycopg.Error as exc:
        raise AuditError(f"cannot connect to {what} {redact(url)}: {one_line(exc)}") from exc


class _Sql(Statements):
    """Statements for one table prefix (validated, so plain formatting is safe)."""

    def __init__(self, prefix: str) -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise AuditError(
                f"audit table prefix {prefix!r} must be lower-case letters, digits and _"
            )
        super().__init__(prefix, "%s")
        t, h = self.table, self.head_table
        self.append_lock_key = f"mlsteward.audit.append:{prefix}"
        self.schema_lock_key = f"mlsteward.audit.schema:{prefix}"
        self.copy = f"COPY {t} ({', '.join(COLUMNS)}) FROM STDIN"
        self.schema = (
            f"""CREATE TABLE IF NOT EXISTS {t} (
                seq BIGINT PRIMARY KEY,
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
            f"CREATE INDEX IF NOT EXISTS {t}_model_seq ON {t} (model, seq)",
            f"CREATE INDEX IF NOT EXISTS {t}_model_action_seq ON {t} (model, action, seq)",
            f"CREATE INDEX IF NOT EXISTS {t}_action_seq ON {t} (action, seq)",
            f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts, seq)",
            f"""CREATE TABLE IF NOT EXISTS {h} (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                seq BIGINT NOT NULL,
                hash TEXT NOT NULL,
                ts TEXT NOT NULL
            )""",
            self.fence_schema,
            f"""CREATE OR REPLACE FUNCTION {t}_append_only() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'audit records are append-only (% on %)',
                        TG_OP, TG_TABLE_NAME;
                END $$""",
        )
        self.triggers = {
            f"{t}_no_update_delete": (
                f"CREATE TRIGGER {t}_no_update_delete BEFORE UPDATE OR DELETE ON {t} "
                f"FOR EACH ROW EXECUTE FUNCTION {t}_append_only()"
            ),
            f"{t}_no_truncate": (
                f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {t}_append_only()"
            ),
        }
        self.schema_ready = (
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL "
            "AND to_regclass(%s) IS NOT NULL AND (SELECT count(*) FROM pg_trigger "
            "WHERE tgrelid = to_regclass(%s) AND tgname = ANY(%s)) = %s"
        )

    def ready_params(self) -> tuple:
        names = list(self.triggers)
        return (self.table, self.head_table, self.fence_table, self.table, names, len(names))


class PostgresAuditStore(_ChainStore):
    """Append-only, hash-chained audit trail in PostgreSQL (see the module doc).

    One connection per store object, guarded by a lock, so a store can be shared by threads;
    after a fork the child opens its own connection; a broken connection is reopened on the
    next call.
    """

    _helper_module = __name__
    _sql: _Sql

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        verify_workers: int | None = None,
    ) -> None:
        conninfo(url)  # reject a non-PostgreSQL URL before connecting
        self.prefix = prefix
        self._sql = _Sql(prefix)
        super().__init__(url, verify_workers=verify_workers)

    def __repr__(self) -> str:
        return f"PostgresAuditStore({redact(self.url)!r}, prefix={self.prefix!r})"

    @property
    def _db_error(self) -> type[Exception]:
        return psycopg.Error

    @property
    def _where(self) -> str:
        return f"{self._sql.table} in {redact(self.url)}"

    # ------------------------------------------------------------------ connection

    def _connection(self) -> Any:
        """The store's connection (caller holds ``_mutex``), (re)opened when needed."""
        if self._closed:
            raise AuditError(f"the audit store {redact(self.url)} is closed")
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and is_alive(conn):
            return conn
        self._drop_connection()
        conn = _connect(self.url)
        try:
            self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _ensure_schema(self, conn: Any) -> None:
        sql = self._sql
        try:
            if conn.execute(sql.schema_ready, sql.ready_params()).fetchone()[0]:
                return
            with conn.transaction():  # one creator at a time: DDL races on pg_type otherwise
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (sql.schema_lock_key,)
                )
                for statement in sql.schema:
                    conn.execute(statement)
                existing = {
                    row[0]
                    for row in conn.execute(
                        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s)",
                        (sql.table,),
                    )
                }
                for name, statement in sql.triggers.items():
                    if name not in existing:
                        conn.execute(statement)
        except psycopg.Error as exc:
            raise AuditError(
                f"cannot create the audit tables {sql.table} in {redact(self.url)}: {one_line(exc)}"
            ) from exc

    def _drop_connection(self) -> None:
        """Forget the store's connection (caller holds ``_mutex``); one inherited through fork
        is left alone."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._pid != os.getpid():
            _ABANDONED.append(conn)
            return
        with suppress(psycopg.Error):
            conn.close()

    def _snapshot(self) -> Any:
        return _snapshot_connection(self.url)

    # ------------------------------------------------------------------ writing

    def _write(self, chunk: list, *, bulk: bool = False) -> list[tuple]:
        """One transaction that first takes the append advisory lock, then reads the head
        marker; ``bulk`` loads the rows with COPY.

        A connection lost before COMMIT was sent left nothing behind: the transaction is
        written once more on a new connection. One lost while COMMIT was under way leaves the
        outcome unknown to us: the store waits for the database (``RECONNECT_SECONDS``) and
        looks for the last row's hash, so the records are neither lost nor written twice.
        """
        with self._mutex:
            for attempt in (1, 2):
                conn = self._connection()
                rows: list[tuple] = []
                committing = False
                try:
                    with conn.transaction():
                        rows = self._place(conn, chunk, bulk)
                        committing = True
                    return rows
                except psycopg.Error as exc:
                    if not lost(conn):
                        raise AuditError(
                            f"cannot append to the audit trail {self._where}: {one_line(exc)}"
                        ) from exc
                    self._drop_connection()
                    if committing and self._landed(rows[-1], exc):
                        return rows
                    if attempt == 2:
                        raise AuditError(
                            f"cannot append to the audit trail {self._where}: the connection "
                            f"was lost twice ({one_line(exc)}); nothing was written"
                        ) from exc
        raise AssertionError("unreachable")

    def _place(self, conn: Any, chunk: list, bulk: bool) -> list[tuple]:
        """Chain ``chunk`` after the head and write it, inside the caller's transaction."""
        sql = self._sql
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (sql.append_lock_key,)
        )
        rows = chain_rows(chunk, self._read_head(conn))
        if bulk:
            with conn.cursor().copy(sql.copy) as pipe:
                for row in rows:
                    pipe.write_row(row)
        else:
            for row in rows:
                conn.execute(sql.insert, row)
        last = rows[-1]
        conn.execute(sql.set_head, (last[0], last[9], last[1]))
        return rows

    def _landed(self, last: tuple, exc: Exception) -> bool:
        """Whether a transaction whose COMMIT was cut off was stored: its last row is there with
        its hash. Waits up to ``RECONNECT_SECONDS`` for the database to come back (a restart or
        a failover takes seconds) before giving up with the question unanswered."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        pause = 0.1
        while True:
            try:
                conn = self._connection()
                found = conn.execute(
                    f"SELECT 1 FROM {self._sql.table} WHERE seq = %s AND hash = %s",
                    (last[0], last[9]),
                ).fetchone()
                return found is not None
            except (AuditError, psycopg.Error) as again:
                self._drop_connection()
                if time.monotonic() + pause > deadline:
                    raise AuditError(
                        f"the audit database {redact(self.url)} went away while record "
                        f"#{last[0]} was committed ({one_line(exc)}) and did not come back within "
                        f"{RECONNECT_SECONDS:g} s ({one_line(again)}): whether it was stored is "
                        "unknown; `mlsteward audit verify` shows the trail's head once it is back"
                    ) from exc
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _fetch(self, statement: str, params: list) -> list[tuple]:
        """A read; repeated once on a new connection when the connection broke under it."""
        with self._mutex:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return conn.execute(statement, params).fetchall()
                except psycopg.Error as exc:
                    if lost(conn) and attempt == 1:
                        self._drop_connection()
                        continue
                    raise AuditError(
                        f"cannot read the audit trail {self._where}: {one_line(exc)}"
                    ) from exc
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ reading

    def _scan(self, conn: Any, after: int, upto: int, expect_head: str | None) -> Segment:
        return _scan(conn, self._sql, after, upto, expect_head)

    def _helper_options(self) -> dict:
        return {"prefix": self.prefix}

    # ------------------------------------------------------------------ locking

    @contextmanager
    def lock(self, name: str, timeout: float = 60.0) -> Iterator[Fence]:
        """Hold the named advisory lock (across processes and hosts) for the ``with`` block.

        Raises:
            AuditError: the lock was not free within ``timeout`` seconds.
        """
        if not name:
            raise AuditError("a lock needs a name, e.g. 'promote:heart_disease'")
        conn = _connect(self.url)
        try:
            try:
                if timeout <= 0:
                    got = conn.execute(
                        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)
                    ).fetchone()[0]
                else:
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        (f"{max(1, round(timeout * 1000))}ms",),
                    )
                    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (name,))
                    got = True
            except psycopg.errors.LockNotAvailable:
                got = False
            except psycopg.Error as exc:
                raise AuditError(
                    f"cannot take lock {name!r} in {redact(self.url)}: {one_line(exc)}"
                ) from exc
            if not got:
                raise AuditError(
                    f"timed out after {timeout:g} s waiting for lock {name!r} "
                    f"(PostgreSQL advisory lock in {redact(self.url)}); another process holds it"
                )
            try:
                yield Fence(
                    name,
                    _fence(conn, self._sql.next_fence, name),
                    lambda: _fence(conn, self._sql.read_fence, name),
                )
            finally:
                with suppress(psycopg.Error):  # if the connection is gone, so is the lock
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))
        finally:
            conn.close()


def _fence(conn: Any, statement: str, name: str) -> int:
    """A fencing token, on the connection that holds the advisory lock: when that connection is
    gone, so is the lock, and reading the token fails."""
    try:
        row = conn.execute(statement, (name,)).fetchone()
    except psycopg.Error as exc:
        raise AuditError(
            f"lost the lock {name!r}: its database connection failed ({one_line(exc)}); "
            "stopping before changing anything"
        ) from exc
    return int(row[0]) if row else 0


def _snapshot_connection(url: str) -> Any:
    """A read-only connection whose statements all see one snapshot (until it is closed)."""
    conn = _connect(url, autocommit=False)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def _scan(conn: Any, sql: _Sql, after: int, upto: int, expect_head: str | None) -> Segment:
    """Stream ``after < seq <= upto`` through a server-side cursor in large batches."""
    with conn.cursor(name=f"mlsteward_verify_{after}") as cursor:
        cursor.itersize = 20_000
        cursor.execute(sql.range, (after, upto))
        return scan(cursor, expect_head=expect_head, find_seq=finder(conn, sql))


def scan_range(
    url: str, after: int, upto: int, expect_head: str | None, prefix: str = DEFAULT_PREFIX
) -> Segment:
    """Check records ``after < seq <= upto`` (run by a verify helper process)."""
    conn = _snapshot_connection(url)
    try:
        return _scan(conn, _Sql(prefix), after, upto, expect_head)
    finally:
        conn.close()

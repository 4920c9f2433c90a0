"""PostgreSQL connections that outlive a restart of the server or a dropped connection.

A store keeps one connection for many calls (the API, the gateway and the prediction service
for hours). When the server restarts, fails over or ends the session
(``pg_terminate_backend``), that connection is dead, but psycopg only finds out when it next
sends a statement, and the statement then fails. Two things make the next call work instead:

- ``is_alive`` looks before sending: when the server ends a session it says so (a FATAL
  message) and closes the socket, so an idle connection whose socket has something to read is
  dead. A statement is never sent on it, so nothing is half-done and nothing needs retrying.
- ``Reconnecting.run`` opens a new connection when the old one is dead, and when a connection
  breaks *while* a statement runs (the server went away mid-call) it repeats the call once on a
  new connection if the caller says the call may be repeated (reads, and writes made idempotent);
  otherwise the call fails with one message naming the database, and the next call reconnects.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from mlsteward.audit.records import AuditError
from mlsteward.errors import MlstewardError

T = TypeVar("T")


def is_alive(conn: Any) -> bool:
    """False when ``conn`` is closed, broken, or idle with the server's goodbye waiting on its
    socket (we never LISTEN, so an idle connection has nothing else to read)."""
    if conn.closed or conn.broken:
        return False
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def lost(conn: Any) -> bool:
    """True when a failed statement took the connection with it (not a statement's own error)."""
    return bool(conn.closed or conn.broken)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class Reconnecting:
    """One connection for a store, opened again whenever it is found dead (see the module doc).

    ``connect`` makes a ready connection (it raises the store's own error when the server cannot
    be reached); ``what`` names the database in messages. Safe to share between threads (one
    call at a time); after a fork the child opens its own connection and leaves the parent's
    alone (closing it would end the parent's session).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        what: str,
        error: type[MlstewardError] = AuditError,
    ) -> None:
        self._connect = connect
        self.what = what
        self._error = error
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0
        self._closed = False
        self._abandoned: list[Any] = []

    def _live(self) -> Any:
        if self._closed:
            raise self._error(f"{self.what} is closed")
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and is_alive(conn):
            return conn
        self._forget()
        self._conn, self._pid = self._connect(), os.getpid()
        return self._conn

    def _forget(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._pid != os.getpid():
            self._abandoned.append(conn)  # the parent's session: neither used nor closed here
            return
        with suppress(psycopg.Error):
            conn.close()

    def run(self, work: Callable[[Any], T], *, repeatable: bool) -> T:
        """``work(connection)`` on a live connection.

        Raises:
            MlstewardError: (the store's error) the server cannot be reached, or the connection
                broke during ``work`` and ``work`` is not ``repeatable`` (or broke again).
            psycopg.Error: a statement's own error (a constraint, a syntax error): the
                connection is fine and the caller decides.
        """
        with self._lock:
            for attempt in (1, 2):
                conn = self._live()
                try:
                    return work(conn)
                except psycopg.Error as exc:
                    if not lost(conn):
                        raise
                    self._forget()
                    if repeatable and attempt == 1:
                        continue
                    raise self._error(
                        f"{self.what}: the connection to the database was lost during the call "
                        f"({one_line(exc)})"
                        + (
                            ""
                            if repeatable
                            else "; the change may not have been saved: check before repeating "
                            "it (the next call reconnects)"
                        )
                    ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._forget()
            self._closed = True

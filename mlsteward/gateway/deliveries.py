"""Each webhook delivery is accepted once: the replay guard.

A delivery is *claimed* by inserting its id and the SHA-256 of its signed body into a table
where both are unique; the database, not the gateway process, decides who wins, so concurrent
deliveries of one id (one gateway or several behind a load balancer) yield exactly one
acceptance. The body digest also stops a captured request from being replayed under a fresh,
unsigned delivery-id header within the timestamp window.

The store follows the audit trail's URL (``settings.audit_url()``): with the embedded SQLite
audit file, a ``webhook_deliveries.db`` beside it (kept apart because the audit file is
append-only and a claim is released when no run could be started); with
``MLSTEWARD_AUDIT_URL=postgresql://…``, a ``mlsteward_webhook_deliveries`` table in that database.
Claims are not pruned: refused-as-stale requests never reach them, so the table grows by one
small row per accepted delivery.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from mlsteward.errors import MlstewardError

TABLE = "mlsteward_webhook_deliveries"
_COLUMNS = (
    "delivery_id TEXT PRIMARY KEY, body_sha256 TEXT NOT NULL UNIQUE, "
    "event TEXT NOT NULL, received_at TEXT NOT NULL"
)


class DeliveryStoreError(MlstewardError):
    """The delivery table could not be opened or written."""


class DeliveryLog(Protocol):
    """Once-only acceptance of delivery ids; both stores offer this."""

    def claim(self, delivery_id: str, body_sha256: str, event: str) -> bool:
        """True for the first claim of this id and body; False when either was seen."""
        ...

    def release(self, delivery_id: str) -> None:
        """Forget a claim whose delivery started nothing, so the sender may retry it."""
        ...

    def close(self) -> None: ...


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SQLiteDeliveryLog:
    """Claims in a SQLite file; ``INSERT`` fails on a duplicate key (atomic across processes)."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._mutex = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS})")
        except sqlite3.Error as exc:
            raise DeliveryStoreError(f"cannot open the delivery log {path}: {exc}") from exc

    def claim(self, delivery_id: str, body_sha256: str, event: str) -> bool:
        with self._mutex:
            try:
                self._conn.execute(
                    f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?)",
                    (delivery_id, body_sha256, event, _now()),
                )
            except sqlite3.IntegrityError:
                return False
            except sqlite3.Error as exc:
                raise DeliveryStoreError(
                    f"cannot write the delivery log {self.path}: {exc}"
                ) from exc
        return True

    def release(self, delivery_id: str) -> None:
        with self._mutex:
            self._conn.execute(f"DELETE FROM {TABLE} WHERE delivery_id = ?", (delivery_id,))

    def close(self) -> None:
        with self._mutex:
            self._conn.close()


class PostgresDeliveryLog:
    """Claims in PostgreSQL; ``ON CONFLICT DO NOTHING`` reports a duplicate as no row.

    The gateway keeps this for its lifetime: a connection the server ended (a restart, a
    failover) is replaced before the next claim (``audit.reconnecting``). A claim cut off
    mid-call is not repeated blind (it may have landed, and would then read as a replay): it
    fails with one message and the sender's retry claims again.
    """

    def __init__(self, url: str) -> None:
        from mlsteward.audit.postgres_store import conninfo, redact
        from mlsteward.audit.reconnecting import Reconnecting

        self._url = conninfo(url)
        self._where = redact(url)
        self._db = Reconnecting(
            self._open, f"the delivery log in {self._where}", DeliveryStoreError
        )
        self._db.run(lambda conn: None, repeatable=True)  # reachable, table made

    def _open(self) -> Any:
        import psycopg

        from mlsteward.audit.reconnecting import one_line

        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=10, application_name="mlsteward-gateway"
            )
        except psycopg.Error as exc:
            raise DeliveryStoreError(
                f"cannot open the delivery log in {self._where}: {one_line(exc)}"
            ) from exc
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS})")
        except psycopg.Error as exc:
            conn.close()
            raise DeliveryStoreError(
                f"cannot open the delivery log in {self._where}: {one_line(exc)}"
            ) from exc
        return conn

    def claim(self, delivery_id: str, body_sha256: str, event: str) -> bool:
        row = self._db.run(
            lambda conn: conn.execute(
                f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING "
                "RETURNING delivery_id",
                (delivery_id, body_sha256, event, _now()),
            ).fetchone(),
            repeatable=False,
        )
        return row is not None

    def release(self, delivery_id: str) -> None:
        self._db.run(
            lambda conn: conn.execute(
                f"DELETE FROM {TABLE} WHERE delivery_id = %s", (delivery_id,)
            ),
            repeatable=True,
        )

    def close(self) -> None:
        self._db.close()


def delivery_log(audit_url: str | None = None) -> DeliveryLog:
    """The delivery log that goes with the audit store at ``audit_url`` (default: configured)."""
    if audit_url is None:
        from mlsteward.config.settings import audit_url as configured

        audit_url = configured()
    if audit_url.startswith("sqlite:"):
        from mlsteward.audit.sqlite_store import sqlite_path

        return SQLiteDeliveryLog(sqlite_path(audit_url).parent / "webhook_deliveries.db")
    if audit_url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return PostgresDeliveryLog(audit_url)
    raise DeliveryStoreError(
        f"no delivery log for audit store URL {audit_url.split('://', 1)[0]}://…"
    )

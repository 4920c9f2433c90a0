"""The audit trail: every governance decision as an append-only, hash-chained record.

``audit_store()`` opens the configured store (``settings.audit_url()``): a SQLite file in the
embedded profile, PostgreSQL in production. Both implement ``AuditStore``; the record format and
hashing they share live in ``records`` (whose docstring documents the canonical serialisation),
the chain check in ``chain`` (what hash chaining can and cannot detect), checking a large chain
in parallel processes in ``verify_pool``, and the store logic above the connection (appending,
querying, verifying) in ``base``.

    store = audit_store()
    store.append(Action.PROMOTED, model="heart_disease", version=7, reason="auc 0.91 >= 0.85",
                 details={"auc": 0.91, "threshold": 0.85})
    store.verify()            # VerifyResult(ok=True, records=..., head_hash=..., ...)
    with store.lock("promote:heart_disease") as fence:
        ...                   # one promotion at a time per model, across processes
        fence.check()         # before a write outside the store: nobody took the lock since
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from mlsteward.audit.base import Fence
from mlsteward.audit.chain import VerifyResult, verify_records
from mlsteward.audit.records import Action, AuditError, AuditRecord, default_actor
from mlsteward.audit.sqlite_store import SQLiteAuditStore
from mlsteward.config.settings import audit_url

__all__ = [
    "Action",
    "AuditError",
    "AuditRecord",
    "AuditStore",
    "Fence",
    "VerifyResult",
    "audit_store",
    "default_actor",
    "verify_records",
]


@runtime_checkable
class AuditStore(Protocol):
    """What both stores offer; code depends on this, not on a store class."""

    url: str

    def append(
        self,
        action: str | Action,
        *,
        model: str | None = None,
        version: str | int | None = None,
        reason: str = "",
        actor: str | None = None,
        details: dict | None = None,
    ) -> AuditRecord: ...

    def query(
        self,
        *,
        model: str | None = None,
        action: str | Action | None = None,
        since: datetime | date | str | None = None,
        version: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]: ...

    def last(
        self, *, model: str | None = None, action: str | Action | None = None
    ) -> AuditRecord | None: ...

    def verify(self, expect_head: str | None = None) -> VerifyResult: ...

    def lock(self, name: str, timeout: float = 60.0) -> AbstractContextManager[Fence]: ...

    def close(self) -> None: ...

    def __enter__(self) -> AuditStore: ...

    def __exit__(self, *exc: object) -> None: ...


def audit_store(url: str | None = None) -> AuditStore:
    """Open the audit store at ``url`` (default ``settings.audit_url()``).

    ``sqlite:///path/to/audit.db`` opens (and creates) a SQLite file; ``postgresql://…`` (also
    ``postgres://`` and ``postgresql+psycopg://``) a PostgreSQL database, creating the tables
    if missing. Each call returns a new store with its own connection; close it when done.
    """
    if url is None:
        url = audit_url()
    if url.startswith("sqlite:"):
        return SQLiteAuditStore(url)
    if url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        # psycopg costs ~0.1 s of start-up: only the production profile's store imports it
        from mlsteward.audit.postgres_store import PostgresAuditStore

        return PostgresAuditStore(url)
    raise AuditError(
        f"unsupported audit store URL {url.split('://', 1)[0]}://…; "
        "use sqlite:///path/to/audit.db or postgresql://user@host/db"
    )

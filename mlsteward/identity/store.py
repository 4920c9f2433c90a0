"""Principals, their tokens and approval tokens, in SQLite or PostgreSQL.

``identity_store()`` opens ``settings.identity_url()``: a SQLite file under the home in the
embedded profile, the audit trail's PostgreSQL database in production. Only hashes of tokens
are stored. Every change (a principal added or changed, a token created or revoked, an approval
token issued) is an audit record whose actor is the principal who made it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlsteward.audit import Action, audit_store
from mlsteward.config.names import check_model_name
from mlsteward.config.settings import identity_url
from mlsteward.errors import AuthenticationError, MlstewardError, NotFoundError
from mlsteward.identity.principals import KINDS, Principal
from mlsteward.identity.roles import Role, parse_roles
from mlsteward.identity.tokens import (
    APPROVAL_PREFIX,
    PREFIX,
    hashes_match,
    new_token,
    token_hash,
    token_id_of,
)

NAME_RULE = "letters, digits, '.', '_', '-' and '@', starting with a letter, at most 64"
MAX_TOKEN_DAYS = 366
APPROVAL_TOKEN_MINUTES = 60

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS mlsteward_principals (
        identity TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        roles TEXT NOT NULL,
        teams TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        disabled_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS mlsteward_tokens (
        token_id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT,
        revoked_by TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS mlsteward_approval_tokens (
        token_id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL,
        identity TEXT NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        used_by TEXT
    )""",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret."""

    token_id: str
    identity: str
    description: str
    created_at: str
    created_by: str
    expires_at: str
    revoked_at: str | None

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        return "expired" if self.expires_at <= _ts(_now()) else "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "identity": self.identity,
            "description": self.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "state": self.state,
        }


@dataclass(frozen=True)
class ApprovalGrant:
    """A redeemed approval token: who decided what on which version."""

    token_id: str
    identity: str
    model: str
    version: str
    decision: str
    reason: str


def check_principal_name(name: str) -> str:
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9._@-]{0,63}", name):
        raise MlstewardError(f"principal name {name!r} is not valid: use {NAME_RULE}")
    return name


def parse_identity(identity: str) -> tuple[str, str]:
    """``user:alice`` -> ("user", "alice"); a bare name is a user."""
    kind, sep, name = identity.partition(":")
    if not sep:
        kind, name = "user", identity
    if kind not in ("user", "service"):
        raise MlstewardError(f"{identity!r}: a principal is user:NAME or service:NAME")
    return kind, check_principal_name(name)


class _Connection:
    """One DB-API connection behind a lock, with ``?`` placeholders on both databases.

    On PostgreSQL the connection is opened again when the server restarted or ended it
    (``audit.reconnecting``): a read broken mid-call is asked again once; a write broken
    mid-call fails with one message and is never repeated blind.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self.postgres = not url.startswith("sqlite:")
        if self.postgres:
            from mlsteward.audit.postgres_store import redact
            from mlsteward.audit.reconnecting import Reconnecting

            self._pg = Reconnecting(
                self._open_postgres, f"the identity store in {redact(url)}", MlstewardError
            )
            self._pg.run(lambda conn: None, repeatable=True)  # reachable, tables made
        else:
            path = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self.execute(statement)

    def _open_postgres(self) -> Any:
        from mlsteward.audit.postgres_store import _connect

        conn = _connect(self.url, what="the identity database", application="mlsteward-identity")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.postgres:
            statement = sql.replace("?", "%s")

            def work(conn: Any) -> list[tuple]:
                cur = conn.execute(statement, tuple(params))
                return [tuple(r) for r in cur.fetchall()] if cur.description else []

            return self._pg.run(work, repeatable=sql.lstrip().upper().startswith("SELECT"))
        with self._lock:
            cur = self._conn.execute(sql, tuple(params))
            rows = cur.fetchall() if cur.description else []
        return [tuple(r) for r in rows]

    def close(self) -> None:
        if self.postgres:
            self._pg.close()
            return
        with self._lock:
            self._conn.close()


class IdentityStore:
    """Principals and token hashes; each change is audited with the acting principal."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or identity_url()
        self._db = _Connection(self.url)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> IdentityStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- principals -----------------------------------------------------------------------

    def add_principal(
        self,
        name: str,
        *,
        roles: str | Sequence[str],
        kind: str = "user",
        teams: Sequence[str] = (),
        by: Principal,
        replace: bool = False,
    ) -> Principal:
        """Add (or with ``replace``, change the roles and teams of) a user or service account."""
        if kind not in KINDS or kind == "local":
            raise MlstewardError(f"kind {kind!r}: a principal is a user or a service")
        check_principal_name(name)
        parsed = parse_roles(list(roles) if not isinstance(roles, str) else roles)
        team_set = frozenset(t.strip() for t in teams if t.strip())
        identity = f"{kind}:{name}"
        existing = self._principal_row(identity)
        if existing is not None and not replace:
            raise MlstewardError(
                f"{identity} exists already (roles {existing[3]}); pass --replace to change it"
            )
        roles_json = json.dumps(sorted(r.value for r in parsed))
        teams_json = json.dumps(sorted(team_set))
        if existing is None:
            self._db.execute(
                "INSERT INTO mlsteward_principals VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (identity, kind, name, roles_json, teams_json, _ts(_now()), by.actor),
            )
        else:
            self._db.execute(
                "UPDATE mlsteward_principals SET roles = ?, teams = ?, disabled_at = NULL "
                "WHERE identity = ?",
                (roles_json, teams_json, identity),
            )
        action = Action.PRINCIPAL_CHANGED if existing is not None else Action.PRINCIPAL_ADDED
        self._audit(
            action,
            by,
            f"{identity} with roles {', '.join(sorted(r.value for r in parsed))}",
            {"principal": identity, "roles": sorted(parsed), "teams": sorted(team_set)},
        )
        principal = self.get_principal(identity)
        assert principal is not None
        return principal

    def _principal_row(self, identity: str) -> tuple | None:
        rows = self._db.execute(
            "SELECT identity, kind, name, roles, teams, disabled_at FROM mlsteward_principals "
            "WHERE identity = ?",
            (identity,),
        )
        return rows[0] if rows else None

    def get_principal(self, identity: str) -> Principal | None:
        row = self._principal_row(identity)
        if row is None or row[5]:
            return None
        return Principal(
            kind=row[1],
            name=row[2],
            roles=frozenset(Role(r) for r in json.loads(row[3])),
            teams=frozenset(json.loads(row[4])),
        )

    def list_principals(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT identity, roles, teams, created_at, created_by, disabled_at "
            "FROM mlsteward_principals ORDER BY identity"
        )
        return [
            {
                "identity": r[0],
                "roles": json.loads(r[1]),
                "teams": json.loads(r[2]),
                "created_at": r[3],
                "created_by": r[4],
                "disabled": bool(r[5]),
            }
            for r in rows
        ]

    def has_principals(self) -> bool:
        return bool(self._db.execute("SELECT 1 FROM mlsteward_principals LIMIT 1"))

    # -- tokens ---------------------------------------------------------------------------

    def create_token(
        self,
        identity: str,
        *,
        by: Principal,
        expires_in_days: float = 90,
        description: str = "",
    ) -> tuple[TokenInfo, str]:
        """A new token for ``identity``: (its listing, the token itself, shown once)."""
        if not 0 < expires_in_days <= MAX_TOKEN_DAYS:
            raise MlstewardError(
                f"expires_in_days {expires_in_days} must be above 0 and at most {MAX_TOKEN_DAYS}"
            )
        if self.get_principal(identity) is None:
            raise NotFoundError(
                f"no principal {identity}: add it first with `mlsteward users add NAME --role ROLE`"
            )
        token_id, token = new_token(PREFIX)
        created = _now()
        expires = _ts(created + timedelta(days=expires_in_days))
        self._db.execute(
            "INSERT INTO mlsteward_tokens VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            (token_id, identity, token_hash(token), description, _ts(created), by.actor, expires),
        )
        self._audit(
            Action.TOKEN_CREATED,
            by,
            f"token {token_id} for {identity}, expires {expires}",
            {"token_id": token_id, "principal": identity, "expires_at": expires},
        )
        info = TokenInfo(token_id, identity, description, _ts(created), by.actor, expires, None)
        return info, token

    def list_tokens(self, identity: str | None = None) -> list[TokenInfo]:
        sql = (
            "SELECT token_id, identity, description, created_at, created_by, expires_at, "
            "revoked_at FROM mlsteward_tokens"
        )
        params: tuple = ()
        if identity:
            sql, params = sql + " WHERE identity = ?", (identity,)
        rows = self._db.execute(sql + " ORDER BY created_at, token_id", params)
        return [TokenInfo(*r) for r in rows]

    def revoke_token(self, token_id: str, *, by: Principal) -> TokenInfo:
        rows = self._db.execute(
            "SELECT identity, revoked_at FROM mlsteward_tokens WHERE token_id = ?", (token_id,)
        )
        if not rows:
            raise NotFoundError(f"no token {token_id!r} (see `mlsteward tokens list`)")
        if rows[0][1] is None:
            self._db.execute(
                "UPDATE mlsteward_tokens SET revoked_at = ?, revoked_by = ? WHERE token_id = ?",
                (_ts(_now()), by.actor, token_id),
            )
            self._audit(
                Action.TOKEN_REVOKED,
                by,
                f"token {token_id} of {rows[0][0]} revoked",
                {"token_id": token_id, "principal": rows[0][0]},
            )
        return next(t for t in self.list_tokens(rows[0][0]) if t.token_id == token_id)

    def lookup(self, token: str) -> tuple[Principal, str]:
        """The principal a bearer token proves, and the token's expiry.

        Raises:
            AuthenticationError: malformed, unknown, expired or revoked (never quoting it).
        """
        token_id = token_id_of(token, PREFIX)
        if token_id is None:
            raise AuthenticationError("the bearer token is not an mlsteward token (msw_…)")
        rows = self._db.execute(
            "SELECT identity, token_hash, expires_at, revoked_at FROM mlsteward_tokens "
            "WHERE token_id = ?",
            (token_id,),
        )
        if not rows or not hashes_match(rows[0][1], token):
            raise AuthenticationError(f"token {token_id} is not valid")
        identity, _, expires_at, revoked_at = rows[0]
        if revoked_at:
            raise AuthenticationError(f"token {token_id} was revoked at {revoked_at}")
        if expires_at <= _ts(_now()):
            raise AuthenticationError(f"token {token_id} expired at {expires_at}")
        principal = self.get_principal(identity)
        if principal is None:
            raise AuthenticationError(f"token {token_id} belongs to {identity}, who is disabled")
        from dataclasses import replace

        return replace(principal, token_id=token_id), expires_at

    # -- approval tokens -------------------------------------------------------------------

    def issue_approval_token(
        self,
        principal: Principal,
        *,
        model: str,
        version: str,
        decision: str,
        reason: str,
        minutes: int = APPROVAL_TOKEN_MINUTES,
    ) -> str:
        """A one-use token that makes a Prefect form answer count: bound to this principal,
        model, version and decision (the form's typed name is not trusted)."""
        check_model_name(model)
        if decision not in ("approve", "reject"):
            raise MlstewardError(f"decision {decision!r} must be approve or reject")
        token_id, token = new_token(APPROVAL_PREFIX)
        created = _now()
        expires = _ts(created + timedelta(minutes=minutes))
        self._db.execute(
            "INSERT INTO mlsteward_approval_tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            (
                token_id,
                token_hash(token),
                principal.identity,
                model,
                str(version),
                decision,
                reason,
                _ts(created),
                expires,
            ),
        )
        self._audit(
            Action.APPROVAL_TOKEN_ISSUED,
            principal,
            f"approval token {token_id}: {decision} {model} v{version}, expires {expires}",
            {"token_id": token_id, "decision": decision, "expires_at": expires},
            model=model,
            version=str(version),
        )
        return token

    def redeem_approval_token(
        self, token: str, *, model: str, version: str, used_by: str
    ) -> ApprovalGrant:
        """Spend an approval token for ``model`` v``version``; each counts once.

        Raises:
            AuthenticationError: malformed, unknown, for another version, expired or used.
        """
        token_id = token_id_of(token.strip(), APPROVAL_PREFIX)
        if token_id is None:
            raise AuthenticationError("the approval token is missing or malformed (mswa_…)")
        rows = self._db.execute(
            "SELECT token_hash, identity, model, version, decision, reason, expires_at, used_at "
            "FROM mlsteward_approval_tokens WHERE token_id = ?",
            (token_id,),
        )
        if not rows or not hashes_match(rows[0][0], token.strip()):
            raise AuthenticationError(f"approval token {token_id} is not valid")
        _, identity, t_model, t_version, decision, reason, expires_at, used_at = rows[0]
        if (t_model, t_version) != (model, str(version)):
            raise AuthenticationError(
                f"approval token {token_id} was issued for {t_model} v{t_version}, "
                f"not {model} v{version}"
            )
        if used_at:
            raise AuthenticationError(f"approval token {token_id} was used already at {used_at}")
        if expires_at <= _ts(_now()):
            raise AuthenticationError(f"approval token {token_id} expired at {expires_at}")
        updated = self._db.execute(
            "UPDATE mlsteward_approval_tokens SET used_at = ?, used_by = ? "
            "WHERE token_id = ? AND used_at IS NULL RETURNING token_id",
            (_ts(_now()), used_by, token_id),
        )
        if not updated:
            raise AuthenticationError(f"approval token {token_id} was used already")
        return ApprovalGrant(token_id, identity, t_model, t_version, decision, reason)

    # -- audit -----------------------------------------------------------------------------

    def _audit(
        self,
        action: Action,
        by: Principal,
        reason: str,
        details: dict[str, Any],
        *,
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        with audit_store() as audit:
            audit.append(
                action, model=model, version=version, actor=by.actor, reason=reason, details=details
            )


@contextmanager
def identity_store(url: str | None = None) -> Iterator[IdentityStore]:
    """Open the configured identity store for a block."""
    store = IdentityStore(url)
    try:
        yield store
    finally:
        store.close()

"""``authenticate``: a bearer token (ours, or an identity provider's JWT) to a principal.

On the prediction path every request authenticates, so a verified token is cached in the
process for ``CACHE_SECONDS``: a revoked token stops working within that time, never later
than its own expiry.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from mlsteward.errors import AuthenticationError
from mlsteward.identity.principals import Principal, local_principal
from mlsteward.identity.roles import Role
from mlsteward.identity.store import IdentityStore, _now, _ts
from mlsteward.identity.tokens import token_hash

CACHE_SECONDS = 5.0
CACHE_MAX = 10_000

_cache: dict[str, tuple[Principal, float, str]] = {}
_refused: dict[str, tuple[str, float]] = {}
"""Tokens refused lately (hash -> message, until): a caller repeating a bad token costs a dict
lookup, not a database query on the request path."""
_cache_lock = threading.Lock()
_stores: dict[str, IdentityStore] = {}


def _store() -> IdentityStore:
    """One store per identity URL for the process (authentication is on every request)."""
    from mlsteward.config.settings import identity_url

    url = identity_url()
    with _cache_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = IdentityStore(url)
        return store


def clear_cache() -> None:
    """Forget verified tokens (tests; after revoking in this process)."""
    with _cache_lock:
        _cache.clear()
        _refused.clear()
        for store in _stores.values():
            store.close()
        _stores.clear()


def authenticate(token: str | None) -> Principal:
    """The principal ``token`` proves.

    Raises:
        AuthenticationError: none given, or not valid (the message never quotes the token).
    """
    token = (token or "").strip()
    if not token:
        raise AuthenticationError("authentication required: send Authorization: Bearer <token>")
    key = token_hash(token)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[1] > now and hit[2] > _ts(_now()):
        return hit[0]
    miss = _refused.get(key)
    if miss is not None and miss[1] > now:
        raise AuthenticationError(miss[0])
    try:
        principal, expires_at = _verify(token)
    except AuthenticationError as exc:
        with _cache_lock:
            if len(_refused) >= CACHE_MAX:
                _refused.clear()
            _refused[key] = (str(exc), now + CACHE_SECONDS)
        raise
    with _cache_lock:
        if len(_cache) >= CACHE_MAX:
            _cache.clear()
        _cache[key] = (principal, now + CACHE_SECONDS, expires_at)
    return principal


def _verify(token: str) -> tuple[Principal, str]:
    from mlsteward.identity import oidc

    if oidc.looks_like_jwt(token):
        settings = oidc.oidc_settings()
        if settings is None:
            raise AuthenticationError(
                "a JWT was sent but no identity provider is configured (MLSTEWARD_OIDC_ISSUER)"
            )
        who = oidc.verify_jwt(token, settings)
        principal = Principal(
            kind="user",
            name=who.name,
            roles=frozenset(Role(r) for r in who.roles),
            teams=frozenset(who.teams),
            method="oidc",
        )
        from datetime import UTC, datetime

        return principal, _ts(datetime.fromtimestamp(who.expires_at, UTC))
    principal, expires_at = _store().lookup(token)
    return replace(principal, method="token"), expires_at


def cli_principal() -> Principal:
    """Who runs this command: ``MLSTEWARD_TOKEN``'s principal when set, else the local
    operator (single-user mode, recorded as unauthenticated), unless ``MLSTEWARD_AUTH=required``
    turns single-user mode off (a shared machine)."""
    token = os.environ.get("MLSTEWARD_TOKEN", "").strip()
    if token:
        return authenticate(token)
    if os.environ.get("MLSTEWARD_AUTH", "").strip().lower() == "required":
        raise AuthenticationError(
            "MLSTEWARD_AUTH=required: set MLSTEWARD_TOKEN to a token from `mlsteward tokens "
            "create` (single-user mode is off)"
        )
    return local_principal()

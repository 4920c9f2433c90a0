"""Bearer tokens: random, shown once, stored only as a SHA-256 hash.

Format ``msw_<id>_<secret>``: the id (public, listed by ``mlsteward tokens list``, used to
revoke) finds the row, the hash of the whole token proves it. A token has 256 bits of secret,
so a fast hash is enough: nothing can be guessed from it, and checking costs microseconds on
the prediction path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "msw_"
APPROVAL_PREFIX = "mswa_"


def new_token(prefix: str = PREFIX) -> tuple[str, str]:
    """(token id, the whole token)."""
    token_id = secrets.token_hex(6)
    return token_id, f"{prefix}{token_id}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id_of(token: str, prefix: str = PREFIX) -> str | None:
    """The id part of a well-formed token, None for anything else (never raises)."""
    if not token.startswith(prefix):
        return None
    parts = token[len(prefix) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12 or not parts[1]:
        return None
    return parts[0]


def hashes_match(stored: str, token: str) -> bool:
    return hmac.compare_digest(stored, token_hash(token))

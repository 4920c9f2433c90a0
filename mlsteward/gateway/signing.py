"""HMAC-SHA256 signatures over the raw request body, in GitHub's ``X-Hub-Signature-256`` form.

The signature covers the exact bytes received, before any JSON parsing, so a body cannot be
re-serialised into something that means more than what was signed. Comparison goes through
``hmac.compare_digest`` so the time taken does not reveal how many leading characters of a
forged signature were right.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(body: bytes, secret: str | bytes) -> str:
    """The header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return PREFIX + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str | bytes, signature: str | None) -> bool:
    """Whether ``signature`` (the header value, possibly missing) was made with ``secret``.

    A missing or malformed header is simply not valid; the comparison of well-formed values is
    constant-time over the whole header string.
    """
    if not signature or not signature.startswith(PREFIX):
        return False
    expected = sign(body, secret).encode("ascii")
    try:
        given = signature.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)

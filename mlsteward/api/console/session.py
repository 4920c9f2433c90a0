"""Signing in to the console with the same tokens the API takes.

A browser cannot send ``Authorization: Bearer`` on a link or a form, so the token a person
pastes once is kept in a cookie that scripts cannot read (``HttpOnly``), that no other site's
page sends (``SameSite=Strict``) and that only the console's paths receive. Every request proves
it again through ``authenticate``, so a revoked or expired token signs the browser out within
the identity cache's few seconds. Forms carry a token derived from the cookie (a keyed hash),
and a POST whose form token or ``Origin`` does not match is refused before anything is decided.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from mlsteward.errors import AuthenticationError, PermissionDeniedError
from mlsteward.identity import Principal, authenticate

COOKIE = "msw_console"
PATH = "/ui"
CSRF_FIELD = "csrf"
MAX_AGE_SECONDS = 12 * 3600
"""The browser forgets the token after a working day even if the token lives longer."""


class SignInRequired(AuthenticationError):
    """No valid console cookie: pages answer with the sign-in page (status 401)."""


def csrf_token(token: str) -> str:
    """The form token for a signed-in browser: keyed by its own bearer token, so it is
    unguessable to another site and changes when the person signs in with another token."""
    return hmac.new(token.encode(), b"mlsteward-console-form", hashlib.sha256).hexdigest()


def cookie_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE) or None


def viewer(request: Request) -> Principal:
    """The principal the console cookie proves; kept on the request for refusal records."""
    token = cookie_token(request)
    if token is None:
        raise SignInRequired("sign in with a token to use the console")
    try:
        who = authenticate(token)
    except AuthenticationError as exc:
        raise SignInRequired(f"{exc}; sign in again") from exc
    request.state.principal = who
    request.state.csrf = csrf_token(token)
    return who


Viewer = Annotated[Principal, Depends(viewer)]


def check_form(request: Request, sent: str | None) -> None:
    """Refuse a POST that did not come from a console page of this origin.

    Raises:
        PermissionDeniedError: the form token is missing or wrong, or ``Origin`` names another
            site (a forged request).
    """
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin and origin.rstrip("/") != own:
        raise PermissionDeniedError(
            f"csrf: a form posted from {origin[:80]!r} is not from this console", "csrf"
        )
    expected = getattr(request.state, "csrf", None)
    if not sent or expected is None or not hmac.compare_digest(sent, expected):
        raise PermissionDeniedError(
            "csrf: the form's token is missing or stale; reload the page and try again", "csrf"
        )

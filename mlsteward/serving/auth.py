"""Who may ask the prediction service what: one token check per protected request.

| request | needs |
| --- | --- |
| ``POST /v1/models/{model}/predict`` | ``predict``; ``route`` as well to choose ``routing_keys`` |
| ``POST /v2/models/{model}/infer`` | as predict; ``route`` too under ``/versions/{v}/`` |
| ``GET /v1/models/{model}``, ``/docs``, ``/redoc``, ``/openapi.json`` | ``read`` |
| ``GET /v2``, ``/v2/models/{model}...`` (metadata, readiness) | ``read`` |
| ``GET /metrics`` | ``read`` with ``MLSTEWARD_SERVING_METRICS_AUTH=true``, else nothing |
| ``GET /healthz``, ``/readyz``, ``/v2/health/*`` | nothing (probes; details: ``read``) |

A token comes as ``Authorization: Bearer <token>`` (what Prometheus and most HTTP clients send)
or ``X-API-Key: <token>``. ``mlsteward.identity.authenticate`` keeps a verified token for a few
seconds in the process, so on the predict path a check is a SHA-256 of the token and a dict
lookup; it is made inside the plain Starlette route, where FastAPI's dependency machinery would
cost more than the check itself. No token, or one that proves nobody, is a 401 with
``WWW-Authenticate: Bearer``; a principal without the permission is a 403 whose message names
it; both in the service's error shape. Choosing ``routing_keys`` aims a request at a canary arm
(routing hashes them), so it is a permission of its own.

With ``MLSTEWARD_SERVING_AUTH=off`` nothing is checked and nobody is named: every caller is
treated as the operator at this machine.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from mlsteward.errors import AuthenticationError, MlstewardError, PermissionDeniedError
from mlsteward.identity import Permission, Principal, authenticate, authorize

log = logging.getLogger("mlsteward.serving")

AUTHORIZATION = "authorization"
API_KEY = "x-api-key"
NO_TOKEN = (
    "authentication required: send Authorization: Bearer <token> or X-API-Key: <token> "
    "(a token from `mlsteward tokens create`)"
)
_UNAVAILABLE = "cannot check the token now: "
SCHEMES = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `mlsteward tokens create` (msw_…), or an identity "
        "provider's JWT when OIDC is configured.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same token in an X-API-Key header.",
    },
}


class Refused(Exception):
    """A request turned away before any work: its answer is ready in ``response``, in the
    service's error shape; ``message`` is the same reason for a protocol with another shape."""

    def __init__(self, response: JSONResponse, message: str) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.message = message


def token_of(headers: Headers) -> tuple[str | None, str]:
    """(the token, the header it came in); ``Authorization`` wins over ``X-API-Key``.

    Raises:
        AuthenticationError: an ``Authorization`` header that is not ``Bearer <token>``.
    """
    value = headers.get(AUTHORIZATION)
    if value is not None:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
        return token.strip(), AUTHORIZATION
    value = headers.get(API_KEY)
    if value is not None and value.strip():
        return value.strip(), API_KEY
    return None, AUTHORIZATION


class Access:
    """The service's one check; ``enabled`` is ``MLSTEWARD_SERVING_AUTH``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def check(
        self, headers: Headers, permission: Permission, model: str | None = None
    ) -> Principal | None:
        """The caller, if its token proves a principal that may ``permission`` (None with
        authentication off).

        Raises:
            Refused: with the 401, 403 or 503 to answer.
        """
        if not self.enabled:
            return None
        where = AUTHORIZATION
        try:
            token, where = token_of(headers)
            if token is None:
                raise AuthenticationError(NO_TOKEN)
            principal = authenticate(token)
            authorize(principal, permission, model)
        except AuthenticationError as exc:
            response = unauthenticated(str(exc), where, sent=headers_sent(headers))
            raise Refused(response, str(exc)) from None
        except PermissionDeniedError as exc:
            raise Refused(denied(exc, ("header", where)), str(exc)) from None
        except MlstewardError as exc:  # the identity provider's settings, for one
            raise Refused(unavailable(str(exc)), _UNAVAILABLE + str(exc)) from None
        except Exception:  # the identity store did not answer: not the caller's fault
            log.exception("cannot check a token")
            msg = "the identity store did not answer"
            raise Refused(unavailable(msg), _UNAVAILABLE + msg) from None
        return principal

    def may_route(self, principal: Principal | None, model: str) -> None:
        """Refuse ``routing_keys`` unless the caller may choose where its request goes.

        Raises:
            Refused: the 403 naming ``route``.
        """
        if not self.enabled or principal is None:
            return
        try:
            authorize(principal, Permission.ROUTE, model)
        except PermissionDeniedError as exc:
            raise Refused(denied(exc, ("body", "routing_keys")), str(exc)) from None


def headers_sent(headers: Headers) -> bool:
    return AUTHORIZATION in headers or API_KEY in headers


def _detail(loc: tuple[str, ...], msg: str, kind: str, **extra: str) -> dict[str, Any]:
    return {"detail": [{"loc": list(loc), "msg": msg, "type": kind, **extra}]}


def unauthenticated(msg: str, where: str, *, sent: bool) -> JSONResponse:
    challenge = 'Bearer error="invalid_token"' if sent else "Bearer"
    return JSONResponse(
        _detail(("header", where), msg, "unauthenticated"),
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )


def denied(exc: PermissionDeniedError, loc: tuple[str, ...]) -> JSONResponse:
    return JSONResponse(
        _detail(loc, str(exc), "permission_denied", permission=exc.permission), status_code=403
    )


def unavailable(msg: str) -> JSONResponse:
    return JSONResponse(
        _detail(("header", AUTHORIZATION), _UNAVAILABLE + msg, "unavailable"), status_code=503
    )


def _forbidden(permission: str, operation: dict[str, Any]) -> str:
    why = f"the caller lacks permission {permission!r}"
    known = operation.get("responses", {}).get("403", {}).get("description")
    return f"{why}; or {known}" if known else why


def secure_openapi(schema: dict[str, Any], protected: dict[str, str]) -> dict[str, Any]:
    """The OpenAPI document with the token schemes, and for each protected path (path ->
    permission) the security requirement and its 401 and 403 answers."""
    out = {**schema, "components": {**schema.get("components", {}), "securitySchemes": SCHEMES}}
    paths = {}
    for path, operations in schema.get("paths", {}).items():
        permission = protected.get(path)
        if permission is None:
            paths[path] = operations
            continue
        paths[path] = {
            method: {
                **op,
                "security": [{"bearerToken": []}, {"apiKey": []}],
                "responses": {
                    **op.get("responses", {}),
                    "401": {"description": "no token, or one that proves nobody"},
                    "403": {"description": _forbidden(permission, op)},
                },
            }
            for method, op in operations.items()
        }
    out["paths"] = paths
    return out

"""Refusals as HTTP answers: each a JSON body ``{"error": message}`` with the field or the
permission it names, never a traceback.

| raised | status |
| --- | --- |
| ``AuthenticationError`` | 401, with ``WWW-Authenticate: Bearer`` |
| ``PermissionDeniedError`` | 403, ``permission`` names what is missing (and it is audited) |
| ``NotFoundError`` | 404 |
| ``PromotionError``, ``ChampionChangedError``, ``IntegrityError`` | 409: the state forbids it |
| a gateway ``Refusal`` | its own status (422 parameter, 503 no deployment or Prefect API) |
| ``BadInput``, request validation, any other ``MlstewardError`` | 422, ``field`` named when known |

Anything else is a bug: logged with its traceback, answered 500 without internals.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlsteward.api.schemas import ErrorBody
from mlsteward.audit import Action, audit_store
from mlsteward.errors import (
    AuthenticationError,
    IntegrityError,
    MlstewardError,
    NotFoundError,
    PermissionDeniedError,
    PromotionError,
)
from mlsteward.gateway.payloads import Refusal

log = logging.getLogger("mlsteward.api")

NAMED_FIELD = re.compile(r"^(reason|override|to|version|model|decision): ")
UNION_TAGS = ("train", "drift", "score")
"""The tags of the run body's union (``schemas.RunBody``)."""


class BadInput(MlstewardError):
    """A request value that breaks a rule the schema cannot state (a model name, a version
    number): 422 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **{k: v for k, v in extra.items() if v is not None}}


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "rows", 3, "label")`` -> ``rows.3.label``; where it came from stays only when
    nothing else names it (``body``: the whole body)."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] in UNION_TAGS:  # a tagged union repeats the chosen tag
        parts = parts[1:]
    return ".".join(parts) or "body"


def _error_field(error: dict[str, Any]) -> str:
    """The field an error names; a tagged union's unknown tag names the tag's field."""
    field = _field(error.get("loc", ()))
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        tag = str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
        return f"{field}.{tag}" if field != "body" and tag else tag or field
    return field


def validation_answer(exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": _error_field(e), "message": str(e.get("msg", "invalid"))} for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse(
        error_body(
            f"{first['field']}: {first['message']}{more}", field=first["field"], errors=errors
        ),
        status_code=422,
    )


def status_of(exc: MlstewardError) -> int:
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, PermissionDeniedError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, PromotionError | IntegrityError):
        return 409
    return 422


def _audit_refusal(request: Request, exc: PermissionDeniedError) -> None:
    """A refused act of an authenticated principal is a governance fact: who tried what.

    The model goes into the details, not the record's model: a model's own records are its
    decisions (``status`` shows the latest), which refusals must not crowd out."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return
    with audit_store() as store:
        store.append(
            Action.ACCESS_DENIED,
            actor=principal.actor,
            reason=str(exc)[:2000],
            details={
                "permission": exc.permission,
                "model": request.path_params.get("model"),
                "version": request.path_params.get("version"),
                "method": request.method,
                "path": request.url.path,
                "channel": "api",
            },
        )


async def mlsteward_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlstewardError)
    status = status_of(exc)
    headers = None
    extra: dict[str, Any] = {}
    if isinstance(exc, AuthenticationError):
        sent = bool(request.headers.get("authorization"))
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"' if sent else "Bearer"}
    elif isinstance(exc, PermissionDeniedError):
        extra["permission"] = exc.permission
        try:
            await run_in_threadpool(_audit_refusal, request, exc)
        except Exception:  # the answer is a 403 whether or not the record could be written
            log.exception("the refusal of %s %s could not be audited", request.method, request.url)
    elif isinstance(exc, BadInput):
        extra["field"] = exc.field
    elif named := NAMED_FIELD.match(str(exc)):  # the core's "reason: ..." names its field
        extra["field"] = named.group(1)
    return JSONResponse(error_body(str(exc), **extra), status_code=status, headers=headers)


async def refusal(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    field = exc.details.get("field")
    return JSONResponse(
        error_body(exc.reason, field=field if isinstance(field, str) else None),
        status_code=exc.status,
    )


async def request_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_answer(exc)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, method not allowed) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=headers)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse(error_body("internal error; see the API log"), status_code=500)


def install(app: FastAPI) -> None:
    """Every exception the routes may raise, answered in one shape."""
    app.add_exception_handler(MlstewardError, mlsteward_error)
    app.add_exception_handler(Refusal, refusal)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


DESCRIPTIONS = {
    401: "No token, or one that proves nobody (`WWW-Authenticate: Bearer`).",
    403: "The principal lacks the permission that `permission` names (audited).",
    404: "No such model, version or rollout.",
    409: "The registry's state forbids it: already champion, four eyes, an override needed, "
    "the champion changed since the gates, a failed integrity check.",
    422: "A value that breaks a rule; `field` names it.",
    503: "The Prefect API, or the model's deployment on it, is not there.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route documents (schemathesis holds every answer to them)."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}

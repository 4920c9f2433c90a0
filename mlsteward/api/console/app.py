"""The console's app: its pages, sign-in, static files and refusals as pages."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlsteward.api import errors
from mlsteward.api.console import audit, models, pictures, process, queue, rollouts
from mlsteward.api.console.render import SECURITY_HEADERS, STATIC, page
from mlsteward.api.console.session import (
    COOKIE,
    CSRF_FIELD,
    MAX_AGE_SECONDS,
    PATH,
    SignInRequired,
    check_form,
    viewer,
)
from mlsteward.errors import AuthenticationError, MlstewardError, PermissionDeniedError
from mlsteward.gateway.payloads import Refusal
from mlsteward.identity import authenticate

log = logging.getLogger("mlsteward.api.console")

HEADINGS = {
    400: "Bad request",
    401: "Sign in",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    422: "Check your input",
    503: "Not available",
}


def _safe_next(target: str | None) -> str:
    """Only a console path: a sign-in link must never send a browser elsewhere."""
    if target and target.startswith(f"{PATH}/") and not target.startswith("//"):
        return target
    return f"{PATH}/models"


def _signin(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    nxt = request.query_params.get("next") if request.url.path == f"{PATH}/login" else target
    return page(
        request, "signin.html.j2", status_code=status, error=error, next=_safe_next(nxt),
        section="",
    )  # fmt: skip


def _refused(request: Request, status: int, message: str) -> HTMLResponse:
    return page(
        request,
        "error.html.j2",
        status_code=status,
        status=status,
        heading=HEADINGS.get(status, "Refused"),
        message=message,
        back=request.headers.get("referer") if status != 404 else None,
        section="",
        pending_count=0,
    )


async def _mlsteward_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MlstewardError)
    if isinstance(exc, SignInRequired):
        return _signin(request, None if COOKIE not in request.cookies else str(exc), 401)
    if isinstance(exc, PermissionDeniedError):
        try:
            await run_in_threadpool(errors._audit_refusal, request, exc)
        except Exception:  # the answer is a 403 whether or not the record could be written
            log.exception("the refusal of %s %s could not be audited", request.method, request.url)
    return _refused(request, errors.status_of(exc), str(exc))


async def _refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return _refused(request, exc.status, exc.reason)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    body = errors.validation_answer(exc).body
    return _refused(request, 422, bytes(body).decode()[:500])


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _refused(request, exc.status_code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return _refused(request, 500, "internal error; see the API log")


def create_console() -> FastAPI:
    """The app the API mounts at ``/ui``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(MlstewardError, _mlsteward_error)
    app.add_exception_handler(Refusal, _refusal)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for group in (models, queue, rollouts, audit, process, pictures):
        app.include_router(group.router)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PATH}/models", status_code=303)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return _signin(request)

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request,
        token: Annotated[str, Form(max_length=8192)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        """Check the token once, then keep it in the console cookie."""
        try:
            await run_in_threadpool(authenticate, token)
        except AuthenticationError as exc:
            return _signin(request, str(exc), 401)
        answer = RedirectResponse(_safe_next(next), status_code=303, headers=SECURITY_HEADERS)
        answer.set_cookie(
            COOKIE, token.strip(), max_age=MAX_AGE_SECONDS, path=PATH, httponly=True,
            samesite="strict", secure=request.url.scheme == "https",
        )  # fmt: skip
        return answer

    @app.post("/logout", include_in_schema=False)
    async def logout(
        request: Request, csrf: Annotated[str | None, Form(alias=CSRF_FIELD)] = None
    ) -> Response:
        viewer(request)
        check_form(request, csrf)
        answer = RedirectResponse(f"{PATH}/login?next={quote(PATH + '/models')}", status_code=303)
        answer.delete_cookie(COOKIE, path=PATH)
        return answer

    return app

"""The service's routes besides predict: probes, metrics, a model's description and the API
docs, each behind the token check its table in ``mlsteward.serving.auth`` names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from mlsteward.identity import Permission
from mlsteward.serving.auth import Refused, secure_openapi

if TYPE_CHECKING:
    from mlsteward.serving.app import Service

PREDICT_PATH = "/v1/models/{model}/predict"
DESCRIBE_PATH = "/v1/models/{model}"


def add_docs_routes(app: FastAPI, service: Service) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc``, each needing ``read`` like a description;
    the schema states the token schemes and which routes need which permission."""
    protected = {PREDICT_PATH: Permission.PREDICT.value, DESCRIBE_PATH: Permission.READ.value}
    if service.settings.metrics_auth:
        protected["/metrics"] = Permission.READ.value
    documents: dict[str, dict[str, Any]] = {}

    def document() -> dict[str, Any]:
        if "schema" not in documents:
            schema = app.openapi()
            if service.access.enabled:
                schema = secure_openapi(schema, protected)
            documents["schema"] = schema
        return documents["schema"]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        return _refusal(service, request) or JSONResponse(document())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        title = f"{app.title} - docs"
        return _refusal(service, request) or get_swagger_ui_html(
            openapi_url="/openapi.json", title=title
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> Response:
        title = f"{app.title} - docs"
        return _refusal(service, request) or get_redoc_html(
            openapi_url="/openapi.json", title=title
        )


def _refusal(service: Service, request: Request, model: str | None = None) -> JSONResponse | None:
    """The 401/403/503 answer when the caller may not read (``model``), else None."""
    try:
        service.access.check(request.headers, Permission.READ, model)
    except Refused as exc:
        return exc.response
    return None


def add_status_routes(app: FastAPI, service: Service) -> None:
    """Liveness, readiness (named config errors included), metrics and a model's description."""

    @app.get("/healthz", responses={503: {"description": "the prediction log cannot be written"}})
    async def healthz() -> JSONResponse:
        """The process runs and can do its job; 503 says why not (a full disk under the
        prediction log), and turns back to 200 by itself when it can."""
        problem = service.health_problem()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        responses={
            503: {"description": "a model is not loaded and verified, or the log cannot be written"}
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        """Open to probes; what each model serves (versions, canary, load and config errors)
        is a description, shown only to a caller who may read."""
        ok, models = service.ready()
        body: dict[str, Any] = {"ready": ok}
        problem = service.health_problem()
        if problem is not None:
            body["reason"] = problem
        if _refusal(service, request) is None:
            body["models"] = models
            if service.config_errors:  # not served at all: named, not silently missing
                body["config_errors"] = service.config_errors
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition."""
        if service.settings.metrics_auth:
            refused = _refusal(service, request)
            if refused is not None:
                return refused
        return PlainTextResponse(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get(DESCRIBE_PATH, responses={404: {"description": "unknown model"}})
    async def describe(model: str, request: Request) -> JSONResponse:
        refused = _refusal(service, request, model)
        if refused is not None:
            return refused
        slot = service.slots.get(model)
        if slot is None:
            return unknown_model(model, service)
        return JSONResponse(slot.describe())


def unknown_model(model: str, service: Service) -> JSONResponse:
    return JSONResponse(
        {
            "detail": [
                {
                    "loc": ["path", "model"],
                    "type": "unknown_model",
                    "msg": unknown_model_message(model, service),
                }
            ]
        },
        status_code=404,
    )


def unknown_model_message(model: str, service: Service) -> str:
    """Why ``model`` is not served: not configured (the served ones named), or its config is
    broken (the file and key named)."""
    broken = service.config_errors.get(model)
    if broken is not None:
        return f"model {model!r} is not served, its config is broken: {broken}"
    return f"unknown model {model!r}; served: {sorted(service.slots)}"

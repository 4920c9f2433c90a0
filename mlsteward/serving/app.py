"""The online prediction service: ``POST /v1/models/{model}/predict`` and its probes.

Requests carry entity ids (features come from the Feast online store) or feature values
(checked against the model's data contract), one row or a batch up to the model's
``serving.max_batch_rows``. A classifier answers each row with a probability, its label and the
threshold; a regression model with the predicted value (``prediction``) only. Sensitive columns
that are not features may come with a request, for the prediction log only
(``mlsteward.serving.features``). Bad requests get a 4xx naming what is wrong, never a 500: an
unknown model or entity is a 404, invalid or missing fields a 422 (FastAPI's error shape,
one entry per field), an oversize batch or body a 413 (a body is refused as soon as it is
known to be too large, never read whole first: ``mlsteward.serving.body``). Every answered row
goes to the prediction log.

``/healthz`` says the process runs; ``/readyz`` that every served model has a verified
champion loaded (and its canary challenger, during a rollout), or no champion yet (a model not
trained yet keeps no other model out of rotation), and that some model is served;
``/metrics`` is Prometheus. The same predictions, by the same path, answer the Open Inference
Protocol (KServe V2, Triton) under ``/v2`` (``mlsteward.serving.oip``).
Who may call what is ``mlsteward.serving.auth``: predict, a model's description and the API
docs need a token unless ``MLSTEWARD_SERVING_AUTH=off``.
One model's broken config does not stop the others: the service starts without that model and
names the file and key in its log, in ``/readyz`` and in the model's 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.routing import Route

from mlsteward.config.models import (
    ModelConfig,
    get_model_config,
    load_model_config,
    model_config_paths,
)
from mlsteward.errors import ConfigError
from mlsteward.features.store import get_store
from mlsteward.governance.canary import ServingTarget
from mlsteward.identity import Permission
from mlsteward.monitoring import prediction_log
from mlsteward.serving.admission import Gate, admission
from mlsteward.serving.auth import Access, Refused
from mlsteward.serving.batcher import MicroBatcher
from mlsteward.serving.body import BodyTooLarge, closing, read_body, refused_unread
from mlsteward.serving.features import RequestRejected, attribute_rules, log_kind
from mlsteward.serving.logbook import PredictionLogWriter
from mlsteward.serving.metrics import ServingMetrics
from mlsteward.serving.oip import add_oip_routes
from mlsteward.serving.predict import (
    PredictRequest,
    count_answer,
    count_refused,
    make_job,
    score,
)
from mlsteward.serving.routes import (
    PREDICT_PATH,
    add_docs_routes,
    add_status_routes,
    unknown_model,
)
from mlsteward.serving.settings import ServingSettings
from mlsteward.serving.slots import ModelSlot
from mlsteward.serving.watcher import RegistryWatcher

log = logging.getLogger("mlsteward.serving")


class Contribution(BaseModel):
    feature: str
    value: float = Field(description="SHAP value in log-odds.")


class ExplanationOut(BaseModel):
    base_value: float = Field(description="Expected log-odds the contributions add to.")
    contributions: list[Contribution]


class PredictionOut(BaseModel):
    entity_id: int | str | None
    probability: float
    label: int
    threshold: float
    version: str
    event_timestamp: str = Field(description="Key (with the entity) for reporting the outcome.")
    explanation: ExplanationOut | None = None


class PredictResponse(BaseModel):
    model: str
    request_id: str
    predictions: list[PredictionOut]


class TargetContribution(BaseModel):
    feature: str
    value: float = Field(description="SHAP value in the label's units.")


class RegressionExplanationOut(BaseModel):
    base_value: float = Field(
        description="Expected prediction the contributions add to, in the label's units."
    )
    contributions: list[TargetContribution]


class RegressionPredictionOut(BaseModel):
    entity_id: int | str | None
    prediction: float = Field(description="The predicted value, in the label's units.")
    version: str
    event_timestamp: str = Field(description="Key (with the entity) for reporting the outcome.")
    explanation: RegressionExplanationOut | None = None


class RegressionPredictResponse(BaseModel):
    """A regression model's answer: numbers, with no probability, label or threshold."""

    model: str
    request_id: str
    predictions: list[RegressionPredictionOut]


# Body and query are parsed by the handler (below), so they are declared here for the OpenAPI.
_PREDICT_OPENAPI = {
    "parameters": [
        {
            "name": "model",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "A served model's name.",
        },
        {
            "name": "explain",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "Same as the body's explain.",
        },
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    },
}


def _parse_body(raw: bytes) -> PredictRequest:
    """The request body, parsed and validated in one pass from the JSON bytes.

    FastAPI's own body handling decodes the JSON to Python objects and then validates them,
    about 40 us of a lone request's ~700 us; pydantic-core does both at once. Errors keep
    FastAPI's shape (422, ``loc`` starting with ``body``).
    """
    try:
        return PredictRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {**e, "loc": ("body", *e["loc"])}
            for e in exc.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors, body=raw) from None


_BOOLS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}  # fmt: skip


def _explain_query(value: str | None) -> bool:
    """``?explain=``, read as FastAPI reads a boolean query parameter (its own parsing of one
    costs ~20 us a request)."""
    if value is None:
        return False
    parsed = _BOOLS.get(value.lower())
    if parsed is None:
        raise RequestValidationError(
            [{"type": "bool_parsing", "loc": ("query", "explain"), "input": value,
              "msg": "Input should be a valid boolean, unable to interpret input"}]
        )  # fmt: skip
    return parsed


def _rejected(exc: RequestRejected) -> JSONResponse:
    return JSONResponse({"detail": [e.to_dict() for e in exc.errors]}, status_code=exc.status)


class Service:
    """Everything one app holds: a slot and a batcher per model, the log writer, metrics."""

    def __init__(
        self,
        configs: list[ModelConfig],
        settings: ServingSettings,
        freeze_gc: bool = False,
        config_errors: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.access = Access(settings.auth)
        self.config_errors = config_errors or {}  # model (file stem) -> what is wrong
        self.freeze_gc = freeze_gc
        self.metrics = ServingMetrics()
        self.slots = {c.name: ModelSlot(c, self.metrics, get_store) for c in configs}
        self.batchers: dict[str, MicroBatcher] = {}
        serving = [c.serving for c in configs] or [ModelConfig.model_fields["serving"].default]
        metrics = self.metrics
        self.writer = PredictionLogWriter(
            max_rows=min(s.log_queue_rows for s in serving),
            flush_seconds=min(s.log_flush_seconds for s in serving),
            on_depth=lambda m, d: metrics.child(metrics.queue_depth, m).set(d),
            on_written=lambda m, n: metrics.child(metrics.logged, m).inc(n),
            fsync_seconds=settings.log_fsync_ms / 1000,
            on_fsync_lag=lambda m, lag: metrics.child(metrics.fsync_lag, m).observe(lag),
        )
        self.gate = Gate(
            self,
            settings.in_flight_limit(max(s.micro_batch_rows for s in serving)),
            settings.rate_limit,
            settings.rate_burst,
        )
        metrics.in_flight.set_function(lambda: self.gate.in_flight)
        metrics.log_writable.set_function(lambda: 0 if self.writer.failure else 1)
        for cfg in configs:  # before any row can be queued: times are logged as integers
            self.writer.register(cfg.name, _log_kinds(cfg))
        self.watcher = RegistryWatcher(
            list(self.slots), min(s.poll_seconds for s in serving), self._on_target
        )

    async def start(self) -> None:
        if not self.settings.auth:
            log.warning(
                "AUTHENTICATION IS OFF (MLSTEWARD_SERVING_AUTH=off): anyone who can reach this "
                "service may predict, choose canary routing keys and read every model's state"
            )
        if self.settings.faults:
            log.warning("fault injection is ON: %s", self.settings.model_dump()["faults"])
        for name, slot in self.slots.items():
            await asyncio.to_thread(self._refresh, slot)
            batcher = MicroBatcher(slot, self.settings.faults)
            batcher.start()
            self.batchers[name] = batcher
        # before the first request: what a crashed service left is written first
        await asyncio.to_thread(self.writer.start)
        self.metrics.replayed.set(self.writer.replay.rows)
        self.metrics.replay_seconds.set(self.writer.replay.seconds)
        self.watcher.start()
        if self.freeze_gc:
            # The imports (Feast, MLflow, pandas) leave ~10^6 long-lived objects that every full
            # collection walks again: 200-330 ms pauses every few seconds under load, the
            # service's p99. Frozen, they are never scanned; p99 at 32 concurrent explain
            # requests fell from ~290 ms to ~80 ms in measurements. Only in the service's own
            # process: frozen objects are never freed.
            gc.collect()
            gc.freeze()

    def _on_target(self, model: str, target: ServingTarget | None, error: str | None) -> None:
        """What the registry watcher read (in its thread, off the event loop)."""
        slot = self.slots[model]
        if target is None:
            self._registry_failed(slot, error or "no answer")
        else:
            self._refresh(slot, target)

    @staticmethod
    def _registry_failed(slot: ModelSlot, error: str) -> None:
        # registry down: keep serving what is loaded
        slot.errors["registry"] = f"registry: {error}"
        log.warning("%s: registry read failed: %s", slot.cfg.name, error)

    def _refresh(self, slot: ModelSlot, target: ServingTarget | None = None) -> None:
        try:
            arms = slot.refresh(target)
        except Exception as exc:
            self._registry_failed(slot, str(exc))
            return
        slot.errors.pop("registry", None)
        # Log columns typed as the served version's features (a champion may appear later).
        entity_kind = "int" if slot.online is not None and slot.online.int_entity else "string"
        kinds = {name: rule.kind for name, rule in arms.rules.items()}
        self.writer.register(
            slot.cfg.name, {**kinds, slot.cfg.source.entity: entity_kind, **_log_kinds(slot.cfg)}
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self.watcher.close)
        for batcher in self.batchers.values():
            await batcher.stop()
        left = await asyncio.to_thread(self.writer.close)
        if left:
            log.error("%d prediction(s) were not written to the prediction log", left)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready when some model is served and every model is either served (its champion
        and, during a rollout, its challenger loaded and verified) or has no champion yet: a
        model just added to the config must not take the others out of rotation until it is
        trained, while a champion that fails to load does. Never while the prediction log
        cannot be written: every predict would be a 503."""
        models = {name: slot.describe() for name, slot in self.slots.items()}
        slots = list(self.slots.values())
        ok = any(slot.arms.champion is not None for slot in slots) and all(
            slot.awaiting_champion or self.serves(slot) for slot in slots
        )
        return ok and self.writer.failure is None, models

    def health_problem(self) -> str | None:
        """Why the service cannot do its job although it runs (``/healthz``): the prediction
        log cannot be written. Clears by itself when the disk takes writes again."""
        return self.writer.failure

    @staticmethod
    def serves(slot: ModelSlot) -> bool:
        """Whether the model answers: its champion and, during a canary, its challenger are
        loaded and verified."""
        arms = slot.arms
        return arms.champion is not None and (arms.canary is None or arms.challenger is not None)


def load_configs(settings: ServingSettings) -> tuple[list[ModelConfig], dict[str, str]]:
    """The models to serve, and the configs left out because they are broken (by file stem).

    Models named in the settings must all load: the operator asked for them. Otherwise every
    valid config is served and a broken one is skipped with its error (file and key), so one
    bad YAML file does not keep the service, and with it ``make up``, from starting.
    """
    if settings.models:
        return [get_model_config(n) for n in settings.models], {}
    configs: list[ModelConfig] = []
    broken: dict[str, str] = {}
    for path in model_config_paths():
        try:
            configs.append(load_model_config(path))
        except ConfigError as exc:
            broken[path.stem] = str(exc)
            log.error("not serving %s: %s", path.stem, exc)
    return configs, broken


def create_app(
    configs: list[ModelConfig] | None = None,
    settings: ServingSettings | None = None,
    *,
    freeze_gc: bool = False,
) -> FastAPI:
    """The app; ``freeze_gc`` when it owns the process (``python -m mlsteward.serving``)."""
    settings = settings or ServingSettings.from_env()
    broken: dict[str, str] = {}
    if configs is None:
        configs, broken = load_configs(settings)
    service = Service(configs, settings, freeze_gc, broken)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="mlsteward serving",
        description="Online predictions with SHAP explanations from verified MLflow versions.",
        version="1",
        lifespan=lifespan,
        # served by routes.add_docs_routes, behind the same token check as the rest
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(admission, gate=service.gate)  # load shedding, before any routing

    @app.exception_handler(RequestRejected)
    async def _on_rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return _rejected(exc)

    add_status_routes(app, service)
    predict = _predict_handler(service)
    # A classifier's answer keeps its one documented shape; a regression model's is another.
    response_model: Any = PredictResponse
    if any(c.is_regression for c in configs):
        response_model = (
            RegressionPredictResponse
            if all(c.is_regression for c in configs)
            else PredictResponse | RegressionPredictResponse
        )
    # Documented by FastAPI (schema, /docs) and served by a plain Starlette route placed first,
    # with the same handler: FastAPI's per-request dependency solving, exit stacks and route
    # scan cost ~60 us of a ~0.7 ms lone request, for a route that takes only the raw request.
    # Exception handlers (422/404/413 bodies) apply to both alike.
    app.add_api_route(
        PREDICT_PATH,
        predict,
        methods=["POST"],
        response_model=response_model,
        openapi_extra=_PREDICT_OPENAPI,
        responses={
            403: {"description": "routing_keys without permission 'route'"},
            404: {"description": "unknown model or entity id"},
            413: {
                "description": "more rows than serving.max_batch_rows, or a body larger than "
                "serving.max_body_bytes"
            },
            422: {"description": "invalid or missing fields, or online features"},
            429: {"description": "the token's rate (MLSTEWARD_SERVING_RATE_LIMIT), Retry-After"},
            503: {
                "description": "no verified champion loaded, the prediction log cannot be "
                "written or is behind, or the service is at capacity (Retry-After)"
            },
        },
    )
    app.router.routes.insert(0, Route(PREDICT_PATH, predict, methods=["POST"]))
    add_docs_routes(app, service)
    add_oip_routes(app, service)  # the same predictions in the Open Inference Protocol
    return app


def _predict_handler(service: Service) -> Callable[[Request], Awaitable[Response]]:
    """The predict route's handler, bound to the service (it is on every request's path)."""

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        model = request.path_params["model"]
        slot = service.slots.get(model)
        try:  # before anything else is looked at or read
            principal = service.access.check(request.headers, Permission.PREDICT, model)
        except Refused as exc:
            count_refused(service, model if slot else "", exc.response.status_code)
            return refused_unread(request, exc.response)
        if slot is None:  # before the body is read: its limit is the model's
            count_refused(service, "", 404)
            return refused_unread(request, unknown_model(model, service))
        cfg = slot.cfg
        try:
            raw = await read_body(request, cfg.serving.max_body_bytes)
        except BodyTooLarge as exc:
            count_refused(service, model, 413)
            return closing(_rejected(exc))
        body = _parse_body(raw)
        if body.routing_keys is not None:
            try:  # routing keys choose the arm: only for callers who may steer traffic
                service.access.may_route(principal, model)
            except Refused as exc:
                count_refused(service, model, 403)
                return exc.response
        explain = _explain_query(request.query_params.get("explain"))
        try:
            job = make_job(slot, body, explain)
            result = await score(service, model, job)
        except RequestRejected as exc:
            count_refused(service, model, exc.status)
            return _rejected(exc)
        content = orjson.dumps(
            {"model": cfg.name, "request_id": job.request_id, "predictions": result.predictions}
        )
        count_answer(service, model, result.arms, time.perf_counter() - started)
        return Response(content, media_type="application/json")

    return predict


def _log_kinds(cfg: ModelConfig) -> dict[str, str]:
    """Types of the log columns every row has, whatever version answered it, and of the
    sensitive columns a request may add."""
    attributes = {name: log_kind(rule) for name, rule in attribute_rules(cfg).items()}
    return {
        **attributes,
        cfg.timestamp_column: "timestamp",
        prediction_log.SCORED_AT: "timestamp",
        "model_version": "string",
        "arm": "string",
        "request_id": "string",
    }

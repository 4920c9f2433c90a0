"""The gateway's HTTP face: ``POST /hooks/ci`` (and ``GET /health``, ``GET /metrics``).

A delivery is checked in the order that keeps refusals cheap and side-effect free: size (413),
signature over the raw body (401), JSON, event and delivery id (400/422), signed timestamp
(409 when stale), what it asks for (422 for an unknown model, action, event or parameter, or one
over its limit: trials above the model's ceiling, a file outside the data roots), the
deployments on the Prefect server (503 when missing) and only then the once-only claim of the
delivery id (409 for a replay). A refused delivery never reaches the claim, so a forged request
cannot burn a genuine delivery's id, and no flow run exists before every check has passed.

A request refused before it is authenticated (too large, unreadable, unsigned, badly signed,
or signed outside the time window) is counted, not recorded: anyone can send those, so they go
to a Prometheus counter and one aggregated audit record a minute (``refusals``). Every other
delivery, accepted or refused, leaves one audit record of its own (never the secret or the
signature), with the CI service account as its actor.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prefect.client.orchestration import PrefectClient
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from mlsteward.audit import Action, AuditRecord, AuditStore, audit_store
from mlsteward.config.models import load_model_config, model_config_paths, model_names
from mlsteward.errors import ConfigError
from mlsteward.gateway import limits, payloads, runs
from mlsteward.gateway.answers import HOOK_REQUEST, HOOK_RESPONSES
from mlsteward.gateway.deliveries import DeliveryLog, delivery_log
from mlsteward.gateway.payloads import Plan, Refusal, Unauthenticated
from mlsteward.gateway.refusals import ACTOR, RefusalTally, refusals_counter
from mlsteward.gateway.settings import GatewayConfigError, GatewaySettings
from mlsteward.gateway.signing import SIGNATURE_HEADER, verify

HOOK_PATH = "/hooks/ci"
DELIVERY_HEADERS = ("X-Mlsteward-Delivery", "X-GitHub-Delivery")
log = logging.getLogger("mlsteward.gateway")


def known_models() -> list[str]:
    """Model names from the config directory, read per delivery so a new model needs no
    restart (file names only: one broken config must not stop the others' webhooks; a file
    whose name is not a model name is never a model, ``/health`` names it)."""
    return model_names()


def config_errors() -> dict[str, str]:
    """Models whose config does not load, with the file and key at fault: their runs would
    fail, so ``/health`` names them (the other models' webhooks work as usual)."""
    broken: dict[str, str] = {}
    for path in model_config_paths():
        try:
            load_model_config(path)
        except ConfigError as exc:
            broken[path.stem] = str(exc)
    return broken


class _Outcome(Exception):
    """Internal: the response for a delivery and what its audit record says."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body


class _Gateway:
    """What one app's routes share (settings, audit store, delivery log, the model list and the
    clock), with each step of a delivery as a method: read, authenticate, plan, claim, start,
    answer and audit."""

    def __init__(
        self,
        settings: GatewaySettings,
        api_url: str,
        audit: AuditStore,
        deliveries: DeliveryLog,
        models: Callable[[], list[str]],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.settings, self.api_url = settings, api_url
        self.audit, self.deliveries = audit, deliveries
        self.models, self.clock = models, clock
        self.secret = settings.secret.get_secret_value()
        self.registry = CollectorRegistry()
        self.refusals = RefusalTally(audit, refusals_counter(self.registry))

    def close(self) -> None:
        self.refusals.stop()  # the shutdown record, while the store is still open
        self.deliveries.close()
        self.audit.close()

    def client(self) -> PrefectClient:
        return PrefectClient(
            self.api_url,
            auth_string=PREFECT_API_AUTH_STRING.value(),
            api_key=PREFECT_API_KEY.value(),
        )

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_bytes
        declared = request.headers.get("content-length")
        too_large = "body_too_large"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Unauthenticated(
                413, f"body of {declared} bytes is over the {limit}-byte limit", too_large
            )
        chunks, size = [], 0
        try:
            async for chunk in request.stream():  # a missing or false length is counted here
                size += len(chunk)
                if size > limit:
                    raise Unauthenticated(413, f"body is over the {limit}-byte limit", too_large)
                chunks.append(chunk)
        except ClientDisconnect:
            raise Unauthenticated(
                400, "the body could not be read: the client disconnected", "unreadable_body"
            ) from None
        return b"".join(chunks)

    async def claim(self, delivery: str, digest: str, event: str) -> None:
        if not await run_in_threadpool(self.deliveries.claim, delivery, digest, event):
            raise Refusal(
                409, f"replay: delivery {delivery} (or this very body) was already accepted"
            )

    async def handle(self, request: Request, record: dict[str, Any]) -> _Outcome:
        """Every check of a delivery in order (see the module doc), then its runs."""
        body, payload, event, delivery = await self.authenticate(request, record)
        plan = await self.plan(payload, event, delivery, record)
        record.update(plan.details)
        record["plan"] = plan.note
        started = await self.start(plan, delivery, hashlib.sha256(body).hexdigest(), event)
        record["runs"] = [r.to_dict() for r in started]
        status = 202 if started else 200
        return _Outcome(
            status,
            {
                "accepted": True,
                "delivery": delivery,
                "event": event,
                "message": plan.note,
                "runs": record["runs"],
            },
        )

    async def authenticate(
        self, request: Request, record: dict[str, Any]
    ) -> tuple[bytes, dict[str, Any], str, str]:
        """The body, its payload, event and delivery id, once the signature and (but for a
        ping, which carries no time) the signed time are checked."""
        # What the request claims, recorded even if it is refused before it is authenticated
        # (to match the sender's own delivery log); replaced by checked values further on.
        header = next((request.headers[h] for h in DELIVERY_HEADERS if h in request.headers), None)
        record["delivery"] = header[:128] if header is not None else None
        record["event"] = request.headers.get("X-GitHub-Event", payloads.PLAIN_EVENT)[:64]
        body = await self.read_body(request)
        if not verify(body, self.secret, request.headers.get(SIGNATURE_HEADER)):
            kind = "bad" if SIGNATURE_HEADER in request.headers else "missing"
            raise Unauthenticated(
                401, f"{kind} signature ({SIGNATURE_HEADER})", f"{kind}_signature"
            )
        payload = payloads.parse_body(body)
        event = payloads.event_of(request.headers.get("X-GitHub-Event"))
        record["event"] = event
        delivery = payloads.delivery_id(header, payload, event)
        record["delivery"] = delivery
        if event != "ping":
            payloads.check_fresh(
                payloads.signed_time(payload, event), self.clock(), self.settings.max_age_seconds
            )
        return body, payload, event, delivery

    async def plan(
        self, payload: dict[str, Any], event: str, delivery: str, record: dict[str, Any]
    ) -> Plan:
        """What the delivery asks for, once it names what exists within its limits."""
        if event == "ping":
            return Plan([], "ping: the webhook reaches the gateway and its signature is valid")
        known = await run_in_threadpool(self.models)
        if event == "push":
            plan = payloads.plan_push(payload, known, self.settings.branches)
        else:
            plan = payloads.plan_trigger(payload, known, delivery)
            record["model"] = plan.runs[0].model
        for request in plan.runs:
            await run_in_threadpool(limits.check_run, request, self.settings.data_roots)
        return plan

    async def start(
        self, plan: Plan, delivery: str, digest: str, event: str
    ) -> list[runs.StartedRun]:
        """Claim the delivery id, then start its runs (the deployments are checked first)."""
        if not plan.runs:  # accepted with nothing to start: the Prefect API is not needed
            await self.claim(delivery, digest, event)
            return []
        async with self.client() as prefect:
            ready = await runs.prepare(prefect, plan.runs)
            await self.claim(delivery, digest, event)
            try:
                return await runs.start(prefect, ready, delivery, self.settings.ui_url)
            except Exception as exc:
                # Resending under the same id is safe: each run's idempotency key returns
                # the runs this attempt did create instead of starting them again.
                await run_in_threadpool(self.deliveries.release, delivery)
                raise Refusal(502, f"the Prefect API did not create the run(s): {exc}") from exc

    def audit_delivery(
        self, status: int, record: dict[str, Any], reason: str, request: Request
    ) -> None:
        host = request.client.host if request.client else "unknown"
        details = {k: v for k, v in record.items() if k != "model"}
        details["status"] = status
        details["source"] = host
        self.audit.append(
            Action.WEBHOOK_ACCEPTED if status < 300 else Action.WEBHOOK_REFUSED,
            model=record.get("model") or _single_model(record),
            reason=reason,
            actor=ACTOR,
            details=details,
        )

    async def answer(self, request: Request) -> JSONResponse:
        """The reply to a delivery, accepted or refused, after its audit record is written."""
        record: dict[str, Any] = {"delivery": None, "event": None}
        try:
            outcome = await self.handle(request, record)
            reason = outcome.body["message"]
        except Unauthenticated as refusal:  # counted, no record of its own (module doc)
            self.refusals.count(refusal.kind, request.client.host if request.client else "unknown")
            body = {
                "accepted": False,
                "delivery": record["delivery"],
                "event": record["event"],
                "error": refusal.reason,
                **refusal.details,
            }
            log.debug("refused unauthenticated request: %s %s", refusal.status, refusal.reason)
            return JSONResponse(body, status_code=refusal.status)
        except Refusal as refusal:
            body = {
                "accepted": False,
                "delivery": record["delivery"],
                "event": record["event"],
                "error": refusal.reason,
                **refusal.details,
            }
            outcome = _Outcome(refusal.status, body)
            reason = refusal.reason
            record.update(refusal.details)
            log.warning("refused delivery %s: %s %s", record["delivery"], refusal.status, reason)
        except Exception as exc:  # still answered and audited, without internals in the reply
            log.exception("delivery %s failed", record["delivery"])
            reason = f"internal error: {type(exc).__name__}: {exc}"
            body = {
                "accepted": False,
                "delivery": record["delivery"],
                "event": record["event"],
                "error": "internal error; see the gateway log",
            }
            outcome = _Outcome(500, body)
        await run_in_threadpool(self.audit_delivery, outcome.status, record, reason, request)
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def health(self) -> dict[str, Any]:
        settings = self.settings
        body = {"ok": True, "prefect_api": settings.api_url, "branches": settings.branches}
        broken = await run_in_threadpool(config_errors)
        return {**body, "config_errors": broken} if broken else body


def create_app(
    settings: GatewaySettings | None = None,
    *,
    audit: AuditStore | None = None,
    deliveries: DeliveryLog | None = None,
    models: Callable[[], list[str]] = known_models,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> FastAPI:
    """The gateway app. With no arguments, settings come from the environment and the audit
    store and delivery log from ``MLSTEWARD_AUDIT_URL``/``MLSTEWARD_HOME``.

    Raises:
        GatewayConfigError: no secret, or no Prefect API to start runs on.
    """
    settings = settings or GatewaySettings.from_env()
    if not settings.api_url:
        raise GatewayConfigError(
            "no Prefect API: set PREFECT_API_URL to the server whose deployments the webhooks "
            "start (e.g. http://127.0.0.1:4200/api)"
        )
    audit = audit or audit_store()
    deliveries = deliveries or delivery_log(audit.url)
    gateway = _Gateway(settings, settings.api_url, audit, deliveries, models, clock)
    for model, problem in config_errors().items():
        log.error(
            "model %s: runs it starts will fail until its config is fixed: %s", model, problem
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gateway.refusals.start()
        yield
        gateway.close()

    app = FastAPI(
        title="mlsteward CI webhook gateway",
        description="Signed CI deliveries that start mlsteward deployments on Prefect.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.refusals = gateway.refusals

    @app.post(
        HOOK_PATH,
        status_code=202,
        response_model=None,
        responses=HOOK_RESPONSES,
        openapi_extra=HOOK_REQUEST,
    )
    async def ci_hook(request: Request) -> JSONResponse:
        """Start the deployment runs a signed CI delivery asks for (see the module doc)."""
        return await gateway.answer(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness for ``make up`` and load balancers; says nothing about the secret."""
        return await gateway.health()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus: requests refused before authentication, by reason."""
        return PlainTextResponse(generate_latest(gateway.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def flush_refusals(app: FastAPI) -> AuditRecord | None:
    """Write the refusals counted so far as their aggregated record now, instead of at the next
    interval (the record, or None when nothing was counted). For tests and shutdown hooks."""
    tally: RefusalTally = app.state.refusals
    return tally.flush()


def _single_model(record: dict[str, Any]) -> str | None:
    models = {r["model"] for r in record.get("runs") or []}
    return models.pop() if len(models) == 1 else None

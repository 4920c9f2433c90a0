"""Starting deployment runs on the Prefect server, and checking them first.

Everything that can refuse a delivery is checked before its id is claimed and before any run
is created: each deployment must exist on the server, and the parameters must fit the
deployment's own parameter schema (the flow's signature as deployed), so an unknown or
mistyped parameter is a 422 naming it rather than a run that fails later. A missing deployment
is a 503: the request is valid but the server is not set up for it (``make deploy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound

from mlsteward.gateway.payloads import Refusal, RunRequest

REASON_PARAMETER = "reason"
GIT_REF_PARAMETER = "git_ref"


@dataclass(frozen=True)
class ReadyRun:
    """A run request checked against its deployment: what will be sent to the server."""

    request: RunRequest
    deployment_id: UUID
    parameters: dict[str, Any]


@dataclass(frozen=True)
class StartedRun:
    action: str
    model: str
    deployment: str
    flow_run_id: str
    flow_run_name: str
    url: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_parameters(request: RunRequest, schema: dict[str, Any]) -> dict[str, Any]:
    """The parameters sent for ``request``: ``model``, the caller's, and ``reason`` and
    ``git_ref`` when the flow takes them and the caller gave none.

    Raises:
        Refusal: 422 for a parameter the flow does not take, or a value its schema rejects.
    """
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    known = set((schema.get("properties") or {}).keys())
    unknown = sorted(set(request.parameters) - known)
    if unknown:
        raise Refusal(
            422,
            f"unknown parameter(s) {', '.join(unknown)} for {request.deployment} "
            f"(it takes: {', '.join(sorted(known - {'model'})) or 'none'})",
        )
    parameters = {"model": request.model, **request.parameters}
    for name, value in ((REASON_PARAMETER, request.reason), (GIT_REF_PARAMETER, request.git_ref)):
        if name in known and name not in parameters and value:
            parameters[name] = value
    try:
        validate(parameters, schema, raise_on_error=True, ignore_required=True)
    except ValidationError as exc:
        raise Refusal(422, f"{request.deployment}: {exc}") from exc
    return parameters


async def prepare(client: PrefectClient, requests: list[RunRequest]) -> list[ReadyRun]:
    """Look up every deployment and check every run's parameters; starts nothing.

    Raises:
        Refusal: 503 when a deployment is not on the server or the server cannot be reached,
            422 for parameters the flow does not accept.
    """
    ready = []
    for request in requests:
        try:
            deployment = await client.read_deployment_by_name(request.deployment)
        except ObjectNotFound:
            raise Refusal(
                503,
                f"deployment {request.deployment} is not on the Prefect server at "
                f"{client.api_url}: create it (make deploy) and serve it (make worker)",
                deployment=request.deployment,
            ) from None
        except Exception as exc:
            raise Refusal(503, f"cannot reach the Prefect API at {client.api_url}: {exc}") from exc
        schema = deployment.parameter_openapi_schema or {}
        ready.append(ReadyRun(request, deployment.id, run_parameters(request, schema)))
    return ready


def run_tags(request: RunRequest) -> list[str]:
    """``webhook``, and ``git_ref:<ref>`` for a run asked for at a commit (searchable in the
    Prefect UI whether or not the flow takes a ``git_ref`` parameter)."""
    return ["webhook", f"git_ref:{request.git_ref}"] if request.git_ref else ["webhook"]


async def start(
    client: PrefectClient, ready: list[ReadyRun], delivery: str, ui_url: str | None
) -> list[StartedRun]:
    """Create one flow run per checked request.

    The idempotency key makes the server itself return the existing run if the same delivery
    reached it twice, behind the delivery log's own once-only claim.
    """
    started = []
    for item in ready:
        req = item.request
        run = await client.create_flow_run_from_deployment(
            item.deployment_id,
            parameters=item.parameters,
            tags=run_tags(req),
            idempotency_key=f"mlsteward-webhook:{delivery}:{req.deployment}",
        )
        url = f"{ui_url.rstrip('/')}/runs/flow-run/{run.id}" if ui_url else None
        started.append(
            StartedRun(req.action, req.model, req.deployment, str(run.id), run.name, url)
        )
    return started

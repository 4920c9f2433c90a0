"""Starting a model's deployment run through the Prefect API, held to the gateway's rules.

The deployment must be on the server (503 otherwise: the request is fine, the platform is not
set up for it), the parameters must fit the flow's own parameter schema (422 naming them, via
``gateway.runs``), file parameters must lie under the data roots and trials under the model's
ceiling (``gateway.limits``: a token lets a trainer start runs, not read any file the worker
can). The run acts for the caller: its ``requested_by`` is the principal's identity when the
flow takes one, so its audit records read ``flow-run:<id> for user:alice``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.responses import (
    DeploymentResponse,
    OrchestrationResult,
    SetStateStatus,
)
from prefect.exceptions import ObjectNotFound
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_KEY,
    PREFECT_API_URL,
    PREFECT_UI_URL,
)
from prefect.states import Cancelling
from starlette.concurrency import run_in_threadpool

from mlsteward.gateway import limits, runs
from mlsteward.gateway.payloads import ACTIONS, Refusal, RunRequest
from mlsteward.gateway.settings import (
    DATA_ROOTS_VARIABLE,
    default_data_roots,
    local_path,
    split_roots,
)
from mlsteward.identity import Principal

FLOWS: dict[str, str] = {**ACTIONS, "rollout": "rollout-model"}
"""Action -> the Prefect flow its deployments belong to (prefect.yaml)."""
REQUESTED_BY = "requested_by"


class DeploymentRun(RunRequest):
    """A run request for any of the model's deployments the API starts (the gateway's own
    requests know only train, drift and score)."""

    @property
    def deployment(self) -> str:
        return f"{FLOWS[self.action]}/{self.action}-{self.model.replace('_', '-')}"


def data_roots() -> list[str]:
    """Where file parameters may point: the gateway's roots (``MLSTEWARD_WEBHOOK_DATA_ROOTS``,
    default the project's ``data/`` and ``MLSTEWARD_HOME/data``), resolved as a run opens them."""
    raw = os.environ.get(DATA_ROOTS_VARIABLE)
    roots = split_roots(raw) if raw is not None else default_data_roots()
    out = []
    for root in (r.strip() for r in roots):
        if root:
            out.append(root.rstrip("/") if "://" in root else str(local_path(root)))
    return out


def prefect_client() -> tuple[PrefectClient, str | None]:
    """A client of the configured Prefect server and its UI's URL.

    Raises:
        Refusal: 503 when no server is configured (an in-process server would start runs
            nothing ever picks up).
    """
    api = PREFECT_API_URL.value()
    if not api:
        raise Refusal(
            503,
            "no Prefect API to start runs on: set PREFECT_API_URL (make up runs the API with "
            "it set)",
        )
    client = PrefectClient(
        api, auth_string=PREFECT_API_AUTH_STRING.value(), api_key=PREFECT_API_KEY.value()
    )
    return client, PREFECT_UI_URL.value() or None


async def read_deployment(client: PrefectClient, name: str) -> DeploymentResponse:
    try:
        return await client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise Refusal(
            503,
            f"deployment {name} is not on the Prefect server at {client.api_url}: create it "
            "(make deploy) and serve it (make worker)",
        ) from None
    except Exception as exc:  # unreachable, refused, timed out: the platform, not the request
        raise Refusal(503, f"cannot reach the Prefect API at {client.api_url}: {exc}") from exc


async def start_run(
    action: str,
    model: str,
    parameters: dict[str, Any],
    principal: Principal,
    *,
    reason: str | None = None,
) -> dict[str, Any]:
    """Start ``action``'s deployment run of ``model`` for ``principal``: its id, name and UI
    link. ``parameters`` left None are the flow's defaults.

    Raises:
        Refusal: 422 for a parameter over a limit or that the flow does not accept, 503 when
            the deployment or the Prefect API is not there.
    """
    request = DeploymentRun(
        action, model, {k: v for k, v in parameters.items() if v is not None}, reason=reason
    )
    await run_in_threadpool(limits.check_run, request, data_roots())
    client, ui_url = prefect_client()
    async with client:
        deployment = await read_deployment(client, request.deployment)
        schema = deployment.parameter_openapi_schema or {}
        sent = runs.run_parameters(request, schema)
        if REQUESTED_BY in (schema.get("properties") or {}):
            sent[REQUESTED_BY] = principal.identity
        try:
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=sent,
                tags=["api", f"requested_by:{principal.identity}"],
            )
        except Exception as exc:
            raise Refusal(503, f"the Prefect API did not create the run: {exc}") from exc
    return {
        "action": action,
        "model": model,
        "deployment": request.deployment,
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "ui_url": f"{ui_url.rstrip('/')}/runs/flow-run/{run.id}" if ui_url else None,
        "parameters": sent,
    }


async def cancel_run(flow_run_id: str) -> bool:
    """Ask the Prefect server to cancel a flow run (its worker stops it); False when there is
    no server, no such run, or it has finished already."""
    try:
        client, _ = prefect_client()
    except Refusal:
        return False
    async with client:
        try:
            run = await client.read_flow_run(uuid.UUID(flow_run_id))
            if run.state is None or run.state.is_final():
                return False
            result: OrchestrationResult[Any] = await client.set_flow_run_state(
                run.id, Cancelling(), force=True
            )
        except Exception:  # no such run, or the server is gone: the canary is closed anyway
            return False
    return result.status == SetStateStatus.ACCEPT

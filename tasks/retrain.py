"""Retraining on drift: who is already training, and how a retrain is started.

With a Prefect server and the model's training deployment, the drift flow emits a
``mlsteward.drift.detected`` event for the model; the deployment's trigger (prefect.yaml) starts
a separate training run with the finding as its reason, related to the drift run. Without a
server (the embedded default) the flow runs training as a subflow instead and says so.
"""

from __future__ import annotations

from typing import Any

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from mlsteward.config.models import ModelConfig
from tasks.common import run_logger

DRIFT_EVENT = "mlsteward.drift.detected"
TRAINING_FLOW = "train-model"
ACTIVE_STATES = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]


def model_resource_id(model: str) -> str:
    return f"mlsteward.model.{model}"


def training_deployment_name(model: str) -> str:
    return f"{TRAINING_FLOW}/train-{model.replace('_', '-')}"


@task(name="running-training-runs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def running_training_runs(model: str) -> list[str]:
    """Training runs of MODEL that are scheduled, pending, running or paused (awaiting approval
    counts: its version may still become champion)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAINING_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE_STATES))
            ),
        )
    return [
        f"{r.name} ({r.id}, {r.state.name if r.state else '?'})"
        for r in runs
        if (r.parameters or {}).get("model", "heart_disease") == model
    ]


@task(name="training-deployment-available", cache_policy=NO_CACHE)
def training_deployment_available(model: str) -> bool:
    """A served or deployed training deployment on a real server (not the embedded one)."""
    if not PREFECT_API_URL.value():  # the embedded server: nothing can serve a deployment
        return False
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(training_deployment_name(model))
        except ObjectNotFound:
            return False
    return True


@task(name="emit-drift-event", cache_policy=NO_CACHE)
def emit_drift_event(
    cfg: ModelConfig, reason: str, drift_run_id: str | None, details: dict[str, Any]
) -> str | None:
    """The event the training deployment's trigger waits for; related to the drift run."""
    related = (
        [
            {
                "prefect.resource.id": f"prefect.flow-run.{drift_run_id}",
                "prefect.resource.role": "flow-run",
            }
        ]
        if drift_run_id
        else []
    )
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": model_resource_id(cfg.name),
            "prefect.resource.name": cfg.name,
        },
        related=related,
        payload={"reason": reason, **details},
    )
    run_logger().info("emitted %s for %s: %s", DRIFT_EVENT, cfg.name, reason)
    return str(event.id) if event else None

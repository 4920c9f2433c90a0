"""Drift → event → deployment trigger → training run, on a real Prefect server.

The training deployment is served from prefect.yaml's own declaration (its trigger included) by
a separate process, as ``prefect deploy`` + a worker would run it. The drift flow emits
``mlsteward.drift.detected``; the server's trigger starts a training run with the finding as
its reason; a second drift inside the cooldown starts nothing and is recorded as suppressed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from flows.drift import drift_flow
from flows.ingestion import ingestion_flow
from flows.training import training_flow
from mlsteward.audit import Action, audit_store
from mlsteward.data.synthetic import Shift, generate_batch
from mlsteward.governance import registry
from tasks.retrain import DRIFT_EVENT, model_resource_id, training_deployment_name
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, WEAK_TUNING, write_config
from tests.support.stack import stop_process, wait_for

DEPLOYMENT = "train-heart-disease"
SHIFTED = ["bmi", "cholesterol"]


@pytest.fixture
def served_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_cohort_path: Path
) -> Iterator[Any]:
    """A champion, then the training deployment served (with its trigger) by another process."""
    config = tmp_path / "config"
    write_config(config, tuning=WEAK_TUNING, drift={"key_features": ["bmi"]})
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(config))
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    assert training_flow(model=MODEL, max_evals=1).governance.decision == "promoted"

    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.serve_training", DEPLOYMENT],
        cwd=REPO_ROOT,
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def deployment() -> Any:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name(training_deployment_name(MODEL))
            except ObjectNotFound:
                return None

    try:
        yield wait_for("the served training deployment", deployment, 90)
    finally:
        stop_process(proc)
        log.close()
        with get_client(sync_client=True) as client, suppress(ObjectNotFound):
            # later tests in the session must not find a deployment to send events to
            client.delete_deployment(
                client.read_deployment_by_name(training_deployment_name(MODEL)).id
            )


def deployment_runs(deployment_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def actions() -> list[str]:
    with audit_store() as store:
        return [r.action for r in store.query(model=MODEL)]


def test_drift_event_starts_one_training_run_and_cooldown_suppresses_the_next(
    served_training: Any, tmp_path: Path
) -> None:
    dep = served_training
    source = tmp_path / "shifted.parquet"
    shift = Shift(covariate={c: 1.5 for c in SHIFTED})
    generate_batch(n_rows=2_000, seed=21, shift=shift).to_parquet(source, index=False)

    out = drift_flow(model=MODEL, current=str(source))
    assert set(SHIFTED) <= set(out.drifted_columns), out.drifted_columns
    assert out.decision.retrain is True
    assert out.retrain.triggered is True
    assert out.retrain.mode == "deployment" and out.retrain.event_id

    # The server's trigger, not the drift flow, creates the run, with the finding as reason.
    # the trigger, the automation, the deployment run and the worker: slow on a loaded machine
    runs = wait_for("a training run started by the trigger", lambda: deployment_runs(dep.id), 120)
    assert len(runs) == 1
    run = runs[0]
    assert run.parameters["model"] == MODEL
    assert run.parameters["reason"].startswith("drift: ") and "bmi" in run.parameters["reason"]
    assert run.created_by is not None and run.created_by.type == "AUTOMATION"

    # A second drift while that run is queued or running, and inside the cooldown: nothing.
    again = drift_flow(model=MODEL, current=str(source))
    assert again.decision.retrain is True
    assert again.retrain.triggered is False
    assert "cooldown" in again.retrain.reason or "running" in again.retrain.reason

    # The served process runs the training to its end: gates and policy as usual.
    def finished() -> Any:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        return state if state is not None and state.is_final() else None

    state = wait_for("the triggered training run to finish", finished, 240)
    assert state.is_completed(), state
    assert len(deployment_runs(dep.id)) == 1  # still exactly one
    versions = registry.list_versions(MODEL)
    assert [v.version for v in versions if v.version != "1"] == ["2"]

    seen = actions()
    assert seen.count(Action.RETRAIN_TRIGGERED) == 1
    # The one event, about the model, related to the drift run that claimed the retrain.
    with audit_store() as store:
        [claim] = [r for r in store.query(model=MODEL) if r.action == Action.RETRAIN_TRIGGERED]
    drift_run = claim.actor.removeprefix("flow-run:")
    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=[DRIFT_EVENT]),
                resource=EventResourceFilter(id=[model_resource_id(MODEL)]),
            ),
            limit=50,  # the client's default (100) is above what the server accepts
        )
    [event] = page.events
    assert str(event.id) == out.retrain.event_id
    assert f"prefect.flow-run.{drift_run}" in [r.id for r in event.related]
    assert event.payload["reason"] == run.parameters["reason"]
    assert seen.count(Action.RETRAIN_SUPPRESSED) == 1
    with audit_store() as store:
        registered = [r for r in store.query(model=MODEL) if r.action == Action.VERSION_REGISTERED]
    v2 = [r for r in registered if r.version == "2"]
    assert len(v2) == 1 and v2[0].details["trigger_reason"] == run.parameters["reason"]

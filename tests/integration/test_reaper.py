"""The reaper on a real Prefect server (the session's test harness): a training run (the real
flow) and a rollout-like run, each in a process of its own, are killed with SIGKILL, stay
Running, block a drift retrain and a new rollout, and are reaped once their heartbeat is older
than the timeout (a second here; minutes in production).

For the rollouts the registry holds two hand-registered versions (champion v1, challenger v2
that passed its gates), so a canary can open without training anything.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    temporary_settings,
)

from flows.drift import drift_flow
from flows.ingestion import ingestion_flow
from flows.reaper import reaper_flow
from flows.rollout import rollout_flow
from flows.training import training_flow
from mlsteward.audit import Action, AuditRecord, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.governance import canary as canary_state
from mlsteward.governance import registry
from mlsteward.governance.attestations import sign_promotion
from mlsteward.governance.mlflow_adapter import client as mlflow_client
from mlsteward.governance.reaper import HEARTBEAT_EVENT, REAPED_FLOWS, TIMEOUT_VARIABLE, reap
from mlsteward.monitoring.retrain import claim_retrain
from mlsteward.rollout.eligibility import RolloutRefused, check_eligibility
from tasks.reaper import reap_before_start
from tasks.retrain import running_training_runs
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, write_config
from tests.support.heartbeating_runs import rollout_like
from tests.support.platform import free_port
from tests.support.serving import FAST_TUNING
from tests.support.stack import wait_for

StartRun = Callable[..., tuple[subprocess.Popen[bytes], str]]


@pytest.fixture(scope="module", autouse=True)
def heartbeats_on() -> Iterator[None]:
    """Prefect's default heartbeats (the session turns them off for speed): the reaper judges
    runs by them, and refuses to judge any when they are off."""
    with temporary_settings(restore_defaults={PREFECT_FLOWS_HEARTBEAT_FREQUENCY}):
        yield


@pytest.fixture
def versions() -> dict[str, str]:
    """v1 the champion (a signed promotion record, as governance writes one), v2 the
    challenger validated against it; no model files: nothing here loads them."""
    c = mlflow_client()
    c.create_registered_model(MODEL)
    for _ in range(2):
        c.create_model_version(MODEL, source=str(REPO_ROOT), tags={})
    passed = {"validation_status": "passed", "validated_against_champion": "1"}
    registry.set_tags(MODEL, "2", passed)
    registry.set_alias(MODEL, registry.CHAMPION, "1")
    registry.set_alias(MODEL, registry.CHALLENGER, "2")
    details: dict[str, Any] = {"alias": registry.CHAMPION, "from": None, "to": "1"}
    details["signature"] = sign_promotion(
        model=MODEL, action=str(Action.PROMOTED), actor="test", details=details
    )
    with audit_store() as store:
        store.append(Action.PROMOTED, model=MODEL, version="1", actor="test", details=details)
    return {"champion": "1", "challenger": "2"}


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[StartRun]:
    """``start_run(kind, *args)``: a heartbeating run in its own process, holding what it holds;
    returns the process and the flow run id. Killed at teardown whatever happened."""
    started: list[subprocess.Popen[bytes]] = []

    def start(kind: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        ready = tmp_path / f"{kind}-{len(started)}.ready"
        with (tmp_path / f"{kind}-{len(started)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.heartbeating_runs", kind, MODEL,
                 str(ready), *args],
                cwd=REPO_ROOT, env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started.append(proc)

        def run_id() -> str | None:
            if proc.poll() is not None:
                log = (tmp_path / f"{kind}-{len(started) - 1}.log").read_text()
                raise AssertionError(f"the {kind} run's process exited:\n{log[-3000:]}")
            if ready.exists():
                return ready.read_text()
            return running_with_reason(f"test {ready}")

        return proc, wait_for(f"the {kind} run to start", run_id, 120)

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def running_with_reason(reason: str) -> str | None:
    """The Running training run started with ``reason``, if any."""
    with get_client(sync_client=True) as c:
        runs = c.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["train-model"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
    return next((str(r.id) for r in runs if (r.parameters or {}).get("reason") == reason), None)


def kill_after_heartbeat(proc: subprocess.Popen[bytes], run_id: str) -> None:
    """SIGKILL once the server has the run's first heartbeat (so the reaper has one to name)."""

    def heartbeat() -> bool:
        with get_client(sync_client=True) as c:
            page = c.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                    resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
                ),
                limit=1,
            )
        return bool(page.events)

    wait_for("the run's first heartbeat on the server", heartbeat, 30)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def state_of(run_id: str) -> tuple[str, str]:
    with get_client(sync_client=True) as c:
        state = c.read_flow_run(UUID(run_id)).state
    assert state is not None
    return str(state.name), str(state.message)


def open_mlflow_run(flow_run_id: str) -> str | None:
    """The MLflow run the training run opened, once it has."""
    experiment = mlflow_client().get_experiment_by_name(MODEL)
    if experiment is None:
        return None
    found = mlflow_client().search_runs(
        [experiment.experiment_id],
        f"tags.`mlsteward.prefect_flow_run_id` = '{flow_run_id}' and attributes.status = 'RUNNING'",
    )
    return found[0].info.run_id if found else None


def records(action: Action) -> list[AuditRecord]:
    with audit_store() as store:
        return store.query(action=action)


def test_a_killed_training_run_is_reaped_and_no_longer_blocks_a_retrain(
    start_run: StartRun,
    small_cohort_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real training flow, killed while it trains (far more trials than it gets to)."""
    config = tmp_path / "config"
    write_config(config, tuning=FAST_TUNING)
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(config))
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    # the MLflow store made here first: two processes creating its tables at once can clash
    mlflow_client().search_experiments()
    cfg = get_model_config(MODEL)
    proc, run_id = start_run("training-flow", "10000")
    assert any(run_id in r for r in running_training_runs.fn(MODEL))
    # alive and heartbeating: left alone
    assert run_id not in [r.flow_run_id for r in reap(timeout_seconds=60).reaped]
    assert state_of(run_id)[0] == "Running"

    mlflow_run = wait_for("the run's MLflow run", lambda: open_mlflow_run(run_id), 60)
    kill_after_heartbeat(proc, run_id)
    assert state_of(run_id)[0] == "Running"  # nothing else will ever end it
    with audit_store() as audit:
        blocked = claim_retrain(
            cfg, audit, reasons=["drift"], actor="test", running=running_training_runs.fn(MODEL)
        )
    assert not blocked.allowed and "already running" in blocked.reason

    time.sleep(1.5)
    report = reaper_flow(timeout_seconds=1.0)  # the scheduled flow, as a deployment runs it
    reaped = {r.flow_run_id: r for r in report.reaped}
    assert run_id in reaped, report
    assert reaped[run_id].flow_name == "train-model" and reaped[run_id].model == MODEL
    assert reaped[run_id].last_heartbeat is not None
    name, message = state_of(run_id)
    assert name == "Crashed" and "no heartbeat for" in message and "1 s timeout" in message
    audited = [r for r in records(Action.RUN_REAPED) if r.details["flow_run_id"] == run_id]
    assert len(audited) == 1 and audited[0].actor == "reaper" and audited[0].model == MODEL
    details = audited[0].details
    assert details["flow_name"] == "train-model" and details["timeout_seconds"] == 1.0
    assert details["last_heartbeat"] == reaped[run_id].last_heartbeat
    # its MLflow run (which keeps its snapshot from `mlsteward gc`) is ended too
    assert reaped[run_id].mlflow_runs_ended == details["mlflow_runs_ended"] == [mlflow_run]
    assert mlflow_client().get_run(mlflow_run).info.status == "KILLED"

    # the drift retrain is no longer blocked, and a second pass finds nothing more to do
    assert running_training_runs.fn(MODEL) == []
    with audit_store() as audit:
        claimed = claim_retrain(
            cfg, audit, reasons=["drift"], actor="test", running=running_training_runs.fn(MODEL)
        )
    assert claimed.allowed, claimed.reason
    assert run_id not in [r.flow_run_id for r in reap(timeout_seconds=1.0).reaped]
    assert len([r for r in records(Action.RUN_REAPED) if r.details["flow_run_id"] == run_id]) == 1


def test_a_killed_rollout_has_its_canary_closed_and_a_new_rollout_is_eligible(
    versions: dict[str, str], start_run: StartRun
) -> None:
    cfg = get_model_config(MODEL)
    no_service = f"http://127.0.0.1:{free_port()}"
    proc, run_id = start_run("rollout", versions["challenger"])
    opened = canary_state.read_target(MODEL).canary
    assert opened is not None and opened.challenger_version == versions["challenger"]
    # a live rollout keeps its canary
    report = reap(timeout_seconds=60, models=[MODEL])
    assert report.closed == [] and canary_state.read_target(MODEL).canary == opened

    kill_after_heartbeat(proc, run_id)
    with pytest.raises(RolloutRefused, match="already has a canary open"):
        check_eligibility(cfg, None, no_service)

    time.sleep(1.5)
    report = reap(timeout_seconds=1.0, models=[MODEL])
    assert run_id in [r.flow_run_id for r in report.reaped], report
    assert [(c.rollout_id, c.flow_run_id, c.run_state) for c in report.closed] == [
        (opened.rollout_id, run_id, "Crashed")
    ]
    assert canary_state.read_target(MODEL).canary is None
    assert state_of(run_id)[0] == "Crashed"
    closed = records(Action.ROLLOUT_REAPED)
    assert len(closed) == 1 and closed[0].actor == "reaper"
    assert closed[0].version == versions["challenger"] and closed[0].model == MODEL
    assert closed[0].details["rollout_id"] == opened.rollout_id
    assert closed[0].details["flow_run_id"] == run_id
    assert closed[0].details["last_heartbeat"] is not None
    assert closed[0].details["timeout_seconds"] == 1.0

    # Nothing in the registry stands in the way now: the one refusal left is that no
    # prediction service answers in this test
    with pytest.raises(RolloutRefused) as refused:
        check_eligibility(cfg, None, no_service)
    assert "canary" not in str(refused.value) and no_service in str(refused.value)


def test_a_canary_an_ended_rollout_left_open_is_closed_and_one_opened_by_hand_is_not(
    versions: dict[str, str], tmp_path: Path
) -> None:
    # A rollout run that ended (Completed) without closing its canary
    rollout_like(MODEL, versions["challenger"], str(tmp_path / "ready"), hold_seconds=0)
    run_id = (tmp_path / "ready").read_text()
    left = canary_state.read_target(MODEL).canary
    assert left is not None
    report = reap(models=[MODEL])  # the default timeout: nothing here is judged by age
    assert run_id not in [r.flow_run_id for r in report.reaped]
    assert [(c.flow_run_id, c.run_state) for c in report.closed] == [(run_id, "Completed")]
    assert canary_state.read_target(MODEL).canary is None
    assert records(Action.ROLLOUT_REAPED)[-1].details["run_state"] == "Completed"

    # A canary no rollout run opened (no rollout_started record names one): left open
    by_hand = canary_state.open_canary(MODEL, versions["challenger"], 0.1)
    try:
        report = reap(models=[MODEL])
        assert report.closed == []
        assert any(by_hand.rollout_id in note for note in report.left), report.left
        assert canary_state.read_target(MODEL).canary == by_hand
    finally:
        canary_state.close_canary(MODEL)
    assert len(records(Action.ROLLOUT_REAPED)) == 1


def test_the_reaper_never_fails_the_run_it_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A flow's own pass is housekeeping: a broken setting is a warning, not the run's end
    (the scheduled ``reaper`` flow does fail on it)."""
    monkeypatch.setenv(TIMEOUT_VARIABLE, "soon")
    with caplog.at_level(logging.WARNING, logger="mlsteward"):
        assert reap_before_start.fn(MODEL) is None
    assert f"{TIMEOUT_VARIABLE}='soon'" in caplog.text
    with pytest.raises(Exception, match=TIMEOUT_VARIABLE):
        reaper_flow()
    # the flows the reaper watches are the flows that call it
    for f in (training_flow, rollout_flow, drift_flow):
        assert f.name in REAPED_FLOWS

"""A flow run's process killed with SIGKILL at seeded points of training, batch scoring and a
drift check, against a real Prefect server (``prefect server start`` of this module's own).

Each run is a ``mlsteward`` command, the process a user's run lives in; it is killed at a
moment the run itself marks: a seeded delay after a seeded task run's end (as the process
logs it), or as the audit trail records the promotion's intent, or as the run's output file
appears. Nothing is left to report such a run's end, so it stays Running on the server until
the reaper (the scheduled ``reaper`` flow) finds its heartbeat silent and marks it Crashed.
After each kill: the run was Running, the reaper crashed it, its MLflow runs were ended,
nothing half-written is where a reader looks, the champion alias equals the signed record and
the audit trail verifies. After each flow's kills, the same command runs again to the end.

``MLSTEWARD_FAULT_SEED`` picks other points (default 26).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlsteward.audit import Action, audit_store
from mlsteward.config import settings
from mlsteward.governance import champion
from tests.faults.conftest import FaultResult
from tests.support.fault_checks import assert_invariants
from tests.support.fault_prefect import (
    REAPER_TIMEOUT_SECONDS,
    Moment,
    PrefectServer,
    RunProcess,
    after_task,
    hidden_leftovers,
    logged_models_dir,
    on_audit,
    on_file,
    open_mlflow_runs,
    pending_logged_models,
    reap_until_crashed,
    run_state,
    strike,
    this_process_on,
    torn_outputs,
    wait_for_state,
    weak_champion_stack,
)
from tests.support.governance import MODEL

SEED = int(os.environ.get("MLSTEWARD_FAULT_SEED", "26"))
TASK_POINTS = 2
"""Seeded task-run moments per flow; each flow adds moments of its own writes."""
MAX_DELAY_SECONDS = {"training": 0.5, "scoring": 0.25, "drift": 0.5}
RUN_TIMEOUT_SECONDS = 600.0
FLOW_FINISHED = re.compile(r"Flow run '[^']+' - Finished in state")
BATCH_ROWS = 20_000
"""Rows a scoring run scores: enough that its SHAP and its files take a while to write."""

# The tasks a seeded moment may follow: each is followed by work that takes longer than the
# delay, so the kill lands inside the run (the tail of each run is struck at its writes).
TRAINING_TASKS = (
    "reap-before-start", "resolve-snapshot", "retrieve-training-set", "prepare-data",
    "open-training-run", "tune-hyperparameters", "fit-and-evaluate", "register-model",
    "close-training-run", "publish-run-artifacts", "score-holdout",
)  # fmt: skip
SCORING_TASKS = ("load-champion", "read-scoring-input")
DRIFT_TASKS = ("load-champion", "drift-reference", "drift-current-from-log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with PrefectServer(tmp_path_factory.mktemp("prefect-server")) as s:
        s.start()
        yield s


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path, server: PrefectServer) -> Path:
    return module_home


@pytest.fixture(scope="module")
def env(server: PrefectServer, mlsteward_home: Path) -> Iterator[dict[str, str]]:
    """This process on the module's server; the environment the commands run with."""
    with this_process_on(server, mlsteward_home.parent / "prefect-client") as client_env:
        yield client_env


@pytest.fixture(scope="module")
def stack(env: dict[str, str], mlsteward_home: Path) -> dict[str, Any]:
    """The weak champion and a batch big enough to take a while to score."""
    return weak_champion_stack(mlsteward_home.parent, batch_rows=BATCH_ROWS)


@pytest.fixture(scope="module")
def logged(stack: dict[str, Any]) -> dict[str, Any]:
    """The batch scored once, so a drift check has a window of logged predictions."""
    from flows.scoring import scoring_flow

    scoring_flow(model=MODEL, source=str(stack["batch"]))
    return stack


@dataclass
class Killed:
    """One killed run and what followed."""

    moment: Moment
    run_id: str
    seconds_into_run: float
    finished_before: list[str]
    state_left: str
    recovery_seconds: float
    checks: dict[str, bool]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> str:
        last = self.finished_before[-1] if self.finished_before else "none yet"
        return f"{self.moment.describe()} (last task finished: {last})"


def kill_and_reap(args: list[str], moment: Moment, env: dict[str, str], log: Path) -> Killed:
    """``mlsteward ARGS`` killed with SIGKILL at ``moment``; then the reaper; then every check
    of what a reader would find."""
    run = RunProcess(args, env, log)
    try:
        run_id = run.flow_run_id()
        killed_at = strike(run, moment, run.kill, RUN_TIMEOUT_SECONDS)
        run.kill()
    finally:
        run.close()
    assert run.process.returncode == -signal.SIGKILL, run.tail()
    # nothing else will ever end it: the server still has it Running
    left = run_state(run_id)
    assert left is not None and not left.is_final(), left
    with audit_store() as store:
        interrupted = champion.pending(MODEL, store)
    recovery, reports = reap_until_crashed(run_id, killed_at)
    settled = [p for report in reports for p in report.promotions]
    if interrupted is not None:  # killed inside a change of champion: settled by the reaper
        assert any(interrupted.describe() in p for p in settled), (interrupted, settled)
    crashed = run_state(run_id)
    assert "no heartbeat" in str(crashed.message), crashed.message
    with audit_store() as store:
        reaped = [
            r for r in store.query(action=Action.RUN_REAPED)
            if r.details.get("flow_run_id") == run_id
        ]  # fmt: skip
        logged = [
            r for r in store.query(action=Action.BATCH_SCORED)
            if r.actor.startswith(f"flow-run:{run_id}")
        ]  # fmt: skip
    assert len(reaped) == 1 and reaped[0].actor == "reaper", reaped
    assert open_mlflow_runs(MODEL, run_id) == []
    assert pending_logged_models(MODEL) == []
    checks = assert_invariants([MODEL])
    torn = torn_outputs(MODEL)
    assert not torn, torn
    checks |= {
        "run_marked_crashed": True,
        "mlflow_runs_ended": True,
        "no_pending_mlflow_model": True,
        "no_torn_output": True,
    }
    return Killed(
        moment=moment,
        run_id=run_id,
        seconds_into_run=round(killed_at - run.started, 2),
        finished_before=run.finished_tasks(before=killed_at),
        state_left=str(left.name),
        recovery_seconds=round(recovery, 2),
        checks=checks,
        figures={
            "reaper_timeout_seconds": REAPER_TIMEOUT_SECONDS,
            "mlflow_runs_killed": reaped[0].details.get("mlflow_runs_ended", []),
            "mlflow_models_failed": reaped[0].details.get("mlflow_models_failed", []),
            "hidden_temp_files_left": len(hidden_leftovers(MODEL)),
            "promotions_settled_by_reaper": settled,
            # a batch logged (and audited) whole before the kill: the rerun logs it again
            "rows_logged_before_kill": sum(int(r.details.get("rows", 0)) for r in logged),
        },
    )


def rerun(args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """The same command again, to its end: exit 0 and a Completed run."""
    run = RunProcess(args, env, log)
    try:
        run_id = run.flow_run_id()
        code = run.finish(RUN_TIMEOUT_SECONDS)
    finally:
        run.close()
    assert code == 0, run.tail()
    assert "Traceback" not in run.output(), run.tail()
    state = wait_for_state(run_id, ["Completed"], 60)
    return {
        "rerun_exit": code,
        "rerun_state": str(state.name),
        "rerun_says": said(run),
        "rerun_seconds": round(time.monotonic() - run.started, 1),
    }


def said(run: RunProcess) -> str:
    """The command's own answer: its first lines after Prefect's log of the run's end."""
    lines = run.output().splitlines()
    ends = [n for n, line in enumerate(lines) if FLOW_FINISHED.search(line)]
    answer = [line for line in lines[ends[-1] + 1 :] if line and not line[0].isspace()]
    return " / ".join(answer[:2])


def seeded_moments(flow: str, tasks: tuple[str, ...]) -> list[Moment]:
    """``TASK_POINTS`` of ``tasks`` in run order, each with a seeded delay after its end."""
    rng = random.Random(f"{SEED}-{flow}")
    chosen = sorted(rng.sample(tasks, TASK_POINTS), key=tasks.index)
    return [after_task(t, rng.uniform(0, MAX_DELAY_SECONDS[flow])) for t in chosen]


def record_all(
    fault_result: FaultResult, fault: str, killed: list[Killed], after: dict[str, Any]
) -> None:
    for k in killed:
        fault_result.record(
            fault,
            point=k.point,
            outcome="recovered",
            user_sees=(
                f"the command dies with its process; the run stays {k.state_left} until the "
                f"reaper marks it Crashed ('reaped: no heartbeat ...'); a rerun completes"
            ),
            recovery_seconds=k.recovery_seconds,
            checks={**k.checks, "rerun_succeeded": after["rerun_exit"] == 0},
            figures={
                **k.figures,
                "seed": SEED,
                "seconds_into_run": k.seconds_into_run,
                "tasks_finished_before_kill": len(k.finished_before),
                **after,
            },
        )


def test_training_killed_at_seeded_points_is_reaped_and_reruns(
    stack: dict[str, Any], env: dict[str, str], tmp_path: Path, fault_result: FaultResult
) -> None:
    """Seeded moments, then as the model's files appear in MLflow's artifact store (the run
    is copying them), then inside the promotion (its intent recorded, its completion not)."""
    moments = [*seeded_moments("training", TRAINING_TASKS),
               on_file(logged_models_dir(MODEL), "*/artifacts/*"),
               on_audit(Action.PROMOTION_INTENT, MODEL)]  # fmt: skip
    killed = [
        kill_and_reap(["train", MODEL], m, env, tmp_path / f"train-{n}.log")
        for n, m in enumerate(moments)
    ]
    after = rerun(["train", MODEL], env, tmp_path / "train-rerun.log")
    record_all(fault_result, "worker-sigkill-training", killed, after)


def test_scoring_killed_as_it_writes_its_scored_file_leaves_no_torn_file(
    stack: dict[str, Any], env: dict[str, str], tmp_path: Path, fault_result: FaultResult
) -> None:
    """The moment a torn file would be seen: the scored file's name appearing. The file under
    that name must be whole (it was a 4-byte parquet header before scored files were
    published whole)."""
    args = ["score", MODEL, "--source", str(stack["batch"])]
    moment = on_file(settings.scored_dir(MODEL), "scored-*.parquet")
    killed = [kill_and_reap(args, moment, env, tmp_path / "score.log")]
    after = rerun(args, env, tmp_path / "score-rerun.log")
    record_all(fault_result, "worker-sigkill-scoring", killed, after)


def test_scoring_killed_at_seeded_points_is_reaped_and_reruns(
    stack: dict[str, Any], env: dict[str, str], tmp_path: Path, fault_result: FaultResult
) -> None:
    """Before any file, inside the scoring, and once the batch is logged and audited (the
    rerun then logs the batch a second time: the killed run's batch was whole)."""
    args = ["score", MODEL, "--source", str(stack["batch"])]
    moments = [*seeded_moments("scoring", SCORING_TASKS), on_audit(Action.BATCH_SCORED, MODEL)]
    killed = [
        kill_and_reap(args, m, env, tmp_path / f"score-{n}.log") for n, m in enumerate(moments)
    ]
    after = rerun(args, env, tmp_path / "score-rerun.log")
    record_all(fault_result, "worker-sigkill-scoring", killed, after)


def test_drift_killed_at_seeded_points_is_reaped_and_reruns(
    logged: dict[str, Any], env: dict[str, str], tmp_path: Path, fault_result: FaultResult
) -> None:
    args = ["drift", MODEL]
    moments = [*seeded_moments("drift", DRIFT_TASKS),
               on_file(settings.drift_reports_dir(MODEL), "drift-*.html")]  # fmt: skip
    killed = [
        kill_and_reap(args, m, env, tmp_path / f"drift-{n}.log") for n, m in enumerate(moments)
    ]
    after = rerun(args, env, tmp_path / "drift-rerun.log")
    record_all(fault_result, "worker-sigkill-drift", killed, after)

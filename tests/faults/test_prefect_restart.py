"""The Prefect server restarted (SIGTERM as ``make down`` sends it, and SIGKILL as a crash does;
the same port and SQLite database) while flows run and while a run waits for approval.

The server is ``prefect server start`` of this module's own; the runs are ``mlsteward``
commands pointed at it by ``PREFECT_API_URL``, as a shell after ``make up`` is. While the server
is gone their Prefect clients retry (five times, backing off 2 to 32 s: about a minute); a
restart takes 10-30 s on two busy cores.

- Running: a training run and a scoring run are in flight when the server goes; both commands
  finish, and once the server is back it has both runs and every task run Completed.
- Paused: a training run under the manual policy waits for approval when the server goes; it
  is still Paused, its process still waiting, after the restart, and ``mlsteward approve`` (an
  approver's token) resumes it to the promotion.

``MLSTEWARD_FAULT_SEED`` picks other moments (default 26).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsteward.config.models import get_model_config
from tests.faults.conftest import FaultResult
from tests.support.fault_checks import assert_invariants
from tests.support.fault_prefect import (
    PrefectServer,
    RunProcess,
    after_task,
    run_state,
    strike,
    task_states,
    this_process_on,
    wait_for_state,
    weak_champion_stack,
)
from tests.support.governance import MODEL, write_config
from tests.support.serving import FAST_TUNING

SEED = int(os.environ.get("MLSTEWARD_FAULT_SEED", "26"))
RUN_TIMEOUT_SECONDS = 600.0
SCORING_TASKS = ("load-champion", "read-scoring-input")
MAX_DELAY_SECONDS = 0.2
PAUSE_POLL_SECONDS = 2.0
"""How often a paused run asks the server whether it was resumed (flows/governance.py)."""
SIGNALS = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGKILL, id="sigkill")]
WAITING = re.compile(r"waiting for approval of \S+ v(\d+)")


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
def config_dir(mlsteward_home: Path) -> Path:
    return Path(os.environ["MLSTEWARD_CONFIG_DIR"])


@pytest.fixture(scope="module")
def stack(env: dict[str, str], mlsteward_home: Path) -> dict[str, Any]:
    """The weak champion and a batch (weak_champion_stack), and bob, an approver, with a
    token."""
    from mlsteward.identity import identity_store, local_principal

    stack = weak_champion_stack(mlsteward_home.parent, batch_rows=5_000)
    with identity_store() as store:
        bob = store.add_principal("bob", roles=["approver"], by=local_principal())
        _, token = store.create_token(bob.identity, by=local_principal(), description="tests")
    return {**stack, "approver_token": token}


def no_traceback(run: RunProcess) -> None:
    assert "Traceback" not in run.output(), run.tail()


def client_complaints(run: RunProcess) -> int:
    """Lines in which a command's Prefect client said it could not reach the server (its
    events client warns, then logs the event it will send again as an ERROR)."""
    words = ("prefect.events.clients", "EventsWorker", "Error logging to API", "Unable to connect")
    return sum(any(w in line for w in words) for line in run.output().splitlines())


@pytest.mark.parametrize("sig", SIGNALS)
def test_runs_in_flight_finish_and_report_across_a_restart(
    sig: signal.Signals,
    stack: dict[str, Any],
    server: PrefectServer,
    env: dict[str, str],
    config_dir: Path,
    tmp_path: Path,
    fault_result: FaultResult,
) -> None:
    write_config(config_dir, tuning=FAST_TUNING)
    rng = random.Random(f"{SEED}-running-{sig.name}")
    moment = after_task(rng.choice(SCORING_TASKS), rng.uniform(0, MAX_DELAY_SECONDS))
    train = RunProcess(["train", MODEL, "--no-promote"], env, tmp_path / "train.log")
    score: RunProcess | None = None
    try:
        train_id = train.flow_run_id()
        score = RunProcess(
            ["score", MODEL, "--source", str(stack["batch"])], env, tmp_path / "score.log"
        )
        score_id = score.flow_run_id()
        restarts: list[Any] = []
        struck = strike(score, moment, lambda: restarts.append(server.restart(sig)), 300)
        restart = restarts[0]
        back = struck + restart.down_seconds
        codes = {"train": train.finish(RUN_TIMEOUT_SECONDS), "score": score.finish(300)}
        ended = time.monotonic()
    finally:
        train.close()
        if score is not None:
            score.close()
    assert codes == {"train": 0, "score": 0}, (train.tail(), score.tail())
    no_traceback(train)
    no_traceback(score)
    states = {
        "train": wait_for_state(train_id, ["Completed"], 120).name,
        "score": wait_for_state(score_id, ["Completed"], 120).name,
    }
    tasks = {"train": task_states(train_id), "score": task_states(score_id)}
    for flow, by_task in tasks.items():
        unfinished = {t: s for t, s in by_task.items() if s != "Completed"}
        assert not unfinished, (flow, unfinished)
    checks = assert_invariants([MODEL])
    checks |= {"runs_completed": True, "every_task_run_completed": True, "no_traceback": True}
    training_tasks_before = len(train.finished_tasks(before=struck))
    fault_result.record(
        "prefect-restart-running",
        point=f"{sig.name}, {moment.describe()} of a scoring run, training run "
        f"{training_tasks_before} tasks in",
        outcome="recovered",
        user_sees="nothing: both commands carry on while Prefect's client retries, and the "
        "runs report Completed (every task run too) once the server is back",
        recovery_seconds=restart.down_seconds,
        checks=checks,
        figures={
            "signal": sig.name,
            "server_stopped_seconds": restart.stopped_seconds,
            "server_down_seconds": restart.down_seconds,
            "runs_final_after_server_back_seconds": round(max(0.0, ended - back), 1),
            "run_states": states,
            "task_runs": {flow: len(by_task) for flow, by_task in tasks.items()},
            "client_complaint_lines": client_complaints(train) + client_complaints(score),
            "seed": SEED,
        },
    )


@pytest.fixture
def champion_put_back(stack: dict[str, Any], config_dir: Path) -> Iterator[None]:
    """The module's weak champion back afterwards (each test's version must beat it), and the
    auto policy."""
    yield
    from mlsteward.governance import promotion, registry

    write_config(config_dir, tuning=FAST_TUNING)
    now = registry.version_by_alias(MODEL, registry.CHAMPION)
    if now is not None and now.version != stack["champion"]:
        promotion.rollback(
            get_model_config(MODEL), reason="tests: the module's champion back",
            actor="user:tests", to_version=stack["champion"],
        )  # fmt: skip


@pytest.mark.parametrize("sig", [SIGNALS[0], pytest.param(signal.SIGKILL, id="sigkill")])
def test_a_run_paused_for_approval_stays_paused_and_resumes_on_approval(
    sig: signal.Signals,
    stack: dict[str, Any],
    server: PrefectServer,
    env: dict[str, str],
    config_dir: Path,
    tmp_path: Path,
    fault_result: FaultResult,
    champion_put_back: None,
) -> None:
    write_config(
        config_dir,
        tuning=FAST_TUNING,
        promotion={"policy": "manual", "approval_timeout_seconds": 900},
        approvals={"required": 1},
    )
    rng = random.Random(f"{SEED}-paused-{sig.name}")
    delay = round(rng.uniform(0, 2 * PAUSE_POLL_SECONDS), 2)
    train = RunProcess(["train", MODEL], env, tmp_path / "train.log")
    try:
        run_id = train.flow_run_id()
        _, line = train.wait_for_line(WAITING, RUN_TIMEOUT_SECONDS)
        found = WAITING.search(line)
        assert found is not None
        version = found.group(1)
        paused = wait_for_state(run_id, ["Paused"], 60)
        time.sleep(delay)
        restart = server.restart(sig)

        # the run is still waiting, on the server and in its process, through two polls
        time.sleep(2 * PAUSE_POLL_SECONDS)
        after = run_state(run_id)
        assert after is not None and after.name == "Paused", after
        assert after.state_details.pause_key == paused.state_details.pause_key
        assert train.alive, train.tail()

        approve = RunProcess(
            ["approve", MODEL, version, "--reason", "holdout and fairness look right"],
            {**env, "MLSTEWARD_TOKEN": stack["approver_token"]},
            tmp_path / "approve.log",
        )
        approved = approve.finish(300)
        approve_seconds = round(time.monotonic() - approve.started, 1)
        assert approved == 0, approve.tail()
        assert f"{MODEL} v{version}: PROMOTED" in approve.output(), approve.tail()
        code = train.finish(RUN_TIMEOUT_SECONDS)
    finally:
        train.close()
    assert code == 0, train.tail()
    no_traceback(train)
    no_traceback(approve)
    assert f"{MODEL} v{version}: PROMOTED" in train.output(), train.tail()
    state = wait_for_state(run_id, ["Completed"], 120)
    from mlsteward.governance import registry

    champion = registry.version_by_alias(MODEL, registry.CHAMPION)
    assert champion is not None and champion.version == version
    checks = assert_invariants([MODEL])
    checks |= {"stayed_paused": True, "resumed_on_approval": True, "no_traceback": True}
    fault_result.record(
        "prefect-restart-paused",
        point=f"{sig.name}, {delay:.2f} s into the pause for approval of v{version}",
        outcome="recovered",
        user_sees="the run stays Paused (its process keeps waiting) across the restart; "
        "`mlsteward approve` resumes it and the version is promoted",
        recovery_seconds=restart.down_seconds,
        checks=checks,
        figures={
            "signal": sig.name,
            "server_stopped_seconds": restart.stopped_seconds,
            "server_down_seconds": restart.down_seconds,
            "state_after_restart": str(after.name),
            "final_state": str(state.name),
            "approve_seconds": approve_seconds,
            "client_complaint_lines": client_complaints(train),
            "seed": SEED,
        },
    )

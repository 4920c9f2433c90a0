"""The MLflow tracking server killed (SIGKILL) and started again while the loop writes to it.

Clients reach MLflow as the production profile has them do: through a real ``mlflow server``
(SQLite backend store, proxied artifacts) at ``MLFLOW_TRACKING_URI``; the module trains its
stack through it (a champion and a challenger). Each test kills the server at a point read from
its own access log (its N-th answer to a given request), in one of two ways:

- a short outage: the server is started again on the same port about two seconds later. MLflow's
  client retries a refused or reset request (7 times with exponential back-off, ~4 minutes in
  all), so the operation rides through by itself: it finishes, late.
- an outage longer than the client retries: the server stays down until the operation has
  given up (the client's budget is cut to one retry here, so the test does not wait four
  minutes for it). The user gets one error naming the MLflow server; the server comes back;
  the interrupted state is put right (``mlsteward audit reconcile --repair``, or the next
  governance call) and a rerun succeeds.

After each fault: the invariants every fault keeps (``assert_invariants``), and no registered
version can be served without its signature or promoted without its validation on record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.faults.conftest import FaultResult
from tests.support.fault_checks import assert_invariants
from tests.support.fault_servers import KillSwitch, MlflowServer, mlflow_server
from tests.support.governance import MODEL

pytestmark = pytest.mark.usefixtures("prefect_harness")

RUNS_CREATE = r"POST /api/2.0/mlflow/runs/create "
MODEL_UPLOAD = r"PUT /api/2.0/mlflow-artifacts/artifacts/\S+/model\.ubj "
VERSION_CREATE = r"POST /api/2.0/mlflow/model-versions/create "
VERSION_TAG = r"POST /api/2.0/mlflow/model-versions/set-tag "
ALIAS_WRITE = r"POST /api/2.0/mlflow/registered-models/alias "
SIGNATURE_READ = r"GET /api/2.0/mlflow-artifacts/artifacts/\S+/signature/model\.sig "

SHORT_OUTAGE_SECONDS = 2.0
CLIENT_RETRIES = 1
"""The client's retry budget in the long-outage tests (MLflow's default is 7, ~4 minutes)."""
TRIALS = 4


@pytest.fixture(scope="module")
def tracking_server(module_home: Path) -> Iterator[MlflowServer]:
    with (
        mlflow_server(module_home.parent / "mlflow-server") as server,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("MLFLOW_TRACKING_URI", server.url)
        yield server


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path, tracking_server: MlflowServer) -> Path:
    return module_home


@pytest.fixture
def server(
    tracking_server: MlflowServer, champion_and_challenger: dict[str, Any]
) -> Iterator[MlflowServer]:
    """The module's server with its trained stack, running when the test starts and ends."""
    if not tracking_server.running:
        tracking_server.start()
    yield tracking_server
    if not tracking_server.running:
        tracking_server.start()


@pytest.fixture
def give_up_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client gives up after one retry, so an outage outlasts it in seconds."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(CLIENT_RETRIES))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def cli(*args: str) -> Any:
    from mlsteward.cli.app import app

    return CliRunner().invoke(app, list(args))


def train(**kwargs: Any) -> Any:
    from flows.training import training_flow

    return training_flow(model=MODEL, promote=False, **kwargs)


def version_numbers() -> list[str]:
    from mlsteward.governance import registry

    return [v.version for v in registry.list_versions(MODEL)]


def trial_runs(run_id: str) -> int:
    """Trial runs logged under a training run (nested runs)."""
    from mlsteward.governance.mlflow_adapter import PARENT_TAG, client

    found = client().search_runs(
        [client().get_run(run_id).info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'",
    )
    return len(found)


def nothing_unverified_is_usable() -> dict[str, bool]:
    """Every version either loads verified (hash and governance signature) or is refused by
    ``load_verified`` and holds no alias; every version that passed validation has a
    ``validation_passed`` record of that in the audit trail."""
    from mlsteward.audit import Action, audit_store
    from mlsteward.errors import IntegrityError
    from mlsteward.governance import registry

    with audit_store() as audit:
        validated = {r.version for r in audit.query(model=MODEL, action=Action.VALIDATION_PASSED)}
    for info in registry.list_versions(MODEL):
        try:
            registry.load_verified(info)
        except IntegrityError as exc:
            assert not info.aliases, f"v{info.version} has {info.aliases} but: {exc}"
            assert info.validation_status != "passed", f"v{info.version} passed but: {exc}"
        if info.validation_status == "passed":
            assert info.version in validated, f"v{info.version} passed with no audit record"
    return {"no_unverified_version_usable": True}


def promotable() -> str:
    """A version the next promotion may take: the challenger while its validation compares
    it with the current champion, else a new one trained now."""
    from mlsteward.governance import registry
    from mlsteward.governance.candidate import needs_validation

    found = registry.version_by_alias(MODEL, "challenger")
    if found is not None and not needs_validation(found):
        return found.version
    result = train()
    assert result.governance.decision == "challenger", result.governance
    return str(result.version)


# -- tuning ----------------------------------------------------------------------------------


@pytest.mark.fault_subset
def test_tuning_rides_through_a_short_outage(
    server: MlflowServer, fault_result: FaultResult
) -> None:
    switch = KillSwitch(server, RUNS_CREATE, count=3, outage_seconds=SHORT_OUTAGE_SECONDS)
    switch.arm()  # the training run, then trials 0 and 1: killed as trial 1 is logged
    started = time.monotonic()
    result = train(max_evals=TRIALS)
    took = time.monotonic() - started
    switch.wait()
    assert switch.fired and switch.back_at and switch.resumed_at
    assert result.governance.decision in ("challenger", "rejected"), result.governance
    logged = trial_runs(result.run_id)
    assert logged >= TRIALS  # a trial whose creation was retried after it committed: twice
    checks = assert_invariants([MODEL]) | nothing_unverified_is_usable()
    fault_result.record(
        "mlflow-restart-tuning",
        point="as trial 2 of 4 is logged; back on the same port ~2 s later",
        outcome="recovered",
        user_sees="nothing: MLflow's client retries; the training run finishes and registers",
        recovery_seconds=round(switch.resumed_at - switch.fired_at, 2),
        checks=checks,
        figures={
            "server_down_seconds": round(switch.back_at - switch.fired_at, 2),
            "client_resumed_after_back_seconds": round(switch.resumed_at - switch.back_at, 2),
            "training_seconds": round(took, 2),
            "trials": TRIALS,
            "trial_runs_logged": logged,
        },
    )

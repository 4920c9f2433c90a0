"""The MLflow tracking server killed (SIGKILL) and started again while the loop writes to it.

Clients reach MLflow as the production profile has them do: through a real ``mlflow server``
(SQLite backend store, proxied artifacts) at ``MLFLOW_TRACKING_URI``; the module trains its
stack through it (a champion and a challenger; the tuning tests need only the ingested cohort).
Each test kills the server at a point read from its own access log (its N-th answer to a given
request), in one of two ways:

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
MODEL_READ = r"GET /api/2.0/mlflow/registered-models/get\?"
"""MLflow's client reads the registered model before each write to it (a prompt is refused)."""
RUN_READ = r"GET /api/2.0/mlflow/runs/get\?"

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
def running(tracking_server: MlflowServer) -> Iterator[MlflowServer]:
    """The module's server, running when the test starts and when it ends."""
    if not tracking_server.running:
        tracking_server.start()
    yield tracking_server
    if not tracking_server.running:
        tracking_server.start()


@pytest.fixture(scope="module")
def ingested(mlsteward_home: Path) -> None:
    """The cohort ``champion_and_challenger`` trains on, ingested (all tuning needs)."""
    from flows.ingestion import ingestion_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = mlsteward_home.parent / "cohort.parquet"
    ingestion_flow(model=MODEL, source=str(write_dataset(generate_cohort(3_000, seed=5), cohort)))


@pytest.fixture
def server(running: MlflowServer, champion_and_challenger: dict[str, Any]) -> MlflowServer:
    """The running server with the module's champion and challenger registered through it."""
    return running


@pytest.fixture
def give_up_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client gives up after one retry, so an outage outlasts it in seconds."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(CLIENT_RETRIES))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def cli(*args: str) -> Any:
    from mlsteward.cli.app import app

    return CliRunner().invoke(app, list(args))


def error_line(output: str) -> str:
    """The one line the CLI prints for a failure (MLflow prints run links of its own)."""
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


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


def running_training_runs() -> int:
    """Training runs MLflow still shows RUNNING (none should be: every run here has ended)."""
    from mlsteward.governance.mlflow_adapter import PARENT_TAG, client

    c = client()
    experiment = c.get_experiment_by_name(MODEL)
    assert experiment is not None
    running = c.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    return sum(1 for r in running if PARENT_TAG not in r.data.tags)


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


def promotable(weak: str) -> str:
    """A version the next promotion may take. New versions beat the module's weak first
    champion but tie with each other (same data, same seed), so the weak one is put back first
    when another is champion (a plain rollback, no fault), then the challenger validated
    against it is taken, or a new one trained against it."""
    from mlsteward.governance import registry
    from mlsteward.governance.candidate import needs_validation

    if champion_now() != weak:
        back = cli("rollback", MODEL, "--to", weak, "--reason", "the fault test's next round")
        assert back.exit_code == 0, back.output
    found = registry.version_by_alias(MODEL, "challenger")
    if found is not None and not needs_validation(found):
        return found.version
    result = train(max_evals=1)
    assert result.governance.decision == "challenger", result.governance
    return str(result.version)


# -- tuning ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("ingested")
def test_tuning_rides_through_a_short_outage(
    running: MlflowServer, fault_result: FaultResult
) -> None:
    server = running
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
    timing = switch.ride_through()
    fault_result.record(
        "mlflow-restart-tuning",
        point="as trial 2 of 4 is logged; back on the same port ~2 s later",
        outcome="recovered",
        user_sees="nothing: MLflow's client retries; the training run finishes and registers",
        recovery_seconds=timing.pop("recovery_seconds"),
        checks=checks,
        figures={
            **timing,
            "training_seconds": round(took, 2),
            "trials": TRIALS,
            "trial_runs_logged": logged,
        },
    )


@pytest.mark.usefixtures("ingested")
def test_tuning_outage_beyond_the_client_retries_names_the_server_and_a_rerun_trains(
    running: MlflowServer, give_up_soon: None, fault_result: FaultResult
) -> None:
    server = running
    before = version_numbers()
    switch = KillSwitch(server, RUNS_CREATE, count=3, outage_seconds=None).arm()
    failed = cli("train", MODEL, "--no-promote", "--max-evals", str(TRIALS))
    switch.wait()
    assert switch.fired and switch.fired_at is not None
    failed_after = time.monotonic() - switch.fired_at
    assert failed.exit_code == 1, failed.output
    said = error_line(failed.output)
    assert said.startswith(f"error: the MLflow tracking server at {server.url} is unavailable")
    assert "Traceback" not in failed.output

    server.start()
    back = time.monotonic()
    assert version_numbers() == before  # nothing registered by the failed run
    left_running = running_training_runs()
    assert left_running == 1  # the failed run could not end its MLflow run: the server was away
    rerun = train(max_evals=TRIALS)
    rerun_seconds = time.monotonic() - back
    assert rerun.version not in before
    assert running_training_runs() == 0  # the rerun ended it as it opened its own
    checks = assert_invariants([MODEL]) | nothing_unverified_is_usable()
    fault_result.record(
        "mlflow-restart-tuning",
        point="as trial 2 of 4 is logged; down until the client gave up (1 retry, cut for the "
        "test; the default is 7 over ~4 minutes)",
        outcome="refused",
        user_sees=said,
        recovery_seconds=round(rerun_seconds, 2),
        checks=checks,
        figures={
            "failed_after_kill_seconds": round(failed_after, 2),
            "mlflow_runs_left_running_until_the_rerun": left_running,
        },
    )


# -- registration ----------------------------------------------------------------------------


def test_registration_rides_through_a_short_outage_during_the_model_upload(
    server: MlflowServer, fault_result: FaultResult
) -> None:
    switch = KillSwitch(server, MODEL_UPLOAD, outage_seconds=SHORT_OUTAGE_SECONDS).arm()
    result = train(max_evals=1)
    switch.wait()
    assert switch.fired_at and switch.back_at and switch.resumed_at
    from mlsteward.governance import registry

    info = registry.get_version(MODEL, result.version)
    verified = registry.load_verified(info)  # signed, and the signature covers what is stored
    assert verified.sha256 == result.artifact_sha256
    checks = assert_invariants([MODEL]) | nothing_unverified_is_usable()
    timing = switch.ride_through()
    fault_result.record(
        "mlflow-restart-registration",
        point="as the model file is uploaded; back on the same port ~2 s later",
        outcome="recovered",
        user_sees="nothing: the upload is made again once the server is back; the version is "
        "registered signed",
        recovery_seconds=timing.pop("recovery_seconds"),
        checks=checks,
        figures={
            **timing,
        },
    )


@pytest.mark.parametrize(
    ("pattern", "count", "point"),
    [
        (VERSION_CREATE, 1, "as the version is created (signed, tags in the same call)"),
        (VERSION_TAG, 5, "between the validation tags of the new version (5 of 6 written)"),
    ],
    ids=["version-create", "validation-tags"],
)
def test_registration_outage_beyond_the_client_retries_leaves_nothing_usable_unchecked(
    server: MlflowServer,
    give_up_soon: None,
    fault_result: FaultResult,
    pattern: str,
    count: int,
    point: str,
) -> None:
    from mlsteward.governance import registry

    before = version_numbers()
    switch = KillSwitch(server, pattern, count=count, outage_seconds=None).arm()
    failed = cli("train", MODEL, "--no-promote", "--max-evals", "1")
    switch.wait()
    assert switch.fired and switch.fired_at is not None
    assert failed.exit_code == 1, failed.output
    said = error_line(failed.output)
    assert said.startswith(f"error: the MLflow tracking server at {server.url} is unavailable")

    server.start()
    back = time.monotonic()
    left = [v for v in version_numbers() if v not in before]
    # What the interrupted run left is signed (it cannot be served otherwise) and can only
    # become champion through the gates: a promote request validates it first.
    checks = assert_invariants([MODEL]) | nothing_unverified_is_usable()
    for version in left:
        info = registry.get_version(MODEL, version)
        registry.load_verified(info)
    rerun = train(max_evals=1)
    assert rerun.governance.decision in ("challenger", "rejected"), rerun.governance
    checks |= assert_invariants([MODEL]) | nothing_unverified_is_usable()
    fault_result.record(
        "mlflow-restart-registration",
        point=f"{point}; down until the client gave up (1 retry, cut for the test)",
        outcome="refused",
        user_sees=said,
        recovery_seconds=round(time.monotonic() - back, 2),
        checks=checks,
        figures={
            "versions_left_by_the_failed_run": len(left),
            "mlflow_runs_left_running": running_training_runs(),
        },
    )


# -- promotion -------------------------------------------------------------------------------


def audit_actions(since: int) -> list[str]:
    from mlsteward.audit import audit_store

    with audit_store() as audit:
        return [str(r.action) for r in audit.query(model=MODEL) if r.seq > since]


def audit_head() -> int:
    from mlsteward.audit import audit_store

    with audit_store() as audit:
        records = audit.query(model=MODEL)
    return max((r.seq for r in records), default=0)


def champion_now() -> str | None:
    from mlsteward.audit import audit_store
    from mlsteward.governance import champion

    with audit_store() as audit:
        state = champion.state(MODEL, audit)
    assert state.consistent, state.problem()
    return state.recorded


def test_promotion_rides_through_a_short_outage_before_the_alias_write(
    server: MlflowServer, champion_and_challenger: dict[str, Any], fault_result: FaultResult
) -> None:
    version = promotable(champion_and_challenger["champion"])
    switch = KillSwitch(server, SIGNATURE_READ, outage_seconds=SHORT_OUTAGE_SECONDS).arm()
    promoted = cli("promote", MODEL, version, "--reason", "fault test")
    switch.wait()
    assert switch.fired_at and switch.back_at and switch.resumed_at
    assert promoted.exit_code == 0, promoted.output
    assert champion_now() == version
    checks = assert_invariants([MODEL]) | nothing_unverified_is_usable()
    timing = switch.ride_through()
    fault_result.record(
        "mlflow-restart-promotion",
        point="after the candidate's signature was checked, before the alias write; back on "
        "the same port ~2 s later",
        outcome="recovered",
        user_sees="the promotion finishes, late: MLflow's client retries the alias write",
        recovery_seconds=timing.pop("recovery_seconds"),
        checks=checks,
        figures={
            **timing,
        },
    )


@pytest.mark.parametrize(
    ("pattern", "count", "point", "repair"),
    [
        (RUN_READ, 1, "while the candidate's signature is read", None),
        (MODEL_READ, 1, "after the intent record, as the alias write begins", "undone"),
        (ALIAS_WRITE, 1, "as the alias is written", "finished"),
        (VERSION_TAG, 2, "between the lifecycle tags after the alias write", "finished"),
    ],
    ids=["signature-read", "before-alias", "alias-write", "lifecycle-tags"],
)
def test_promotion_outage_beyond_the_client_retries_is_finished_or_undone(
    server: MlflowServer,
    champion_and_challenger: dict[str, Any],
    give_up_soon: None,
    fault_result: FaultResult,
    pattern: str,
    count: int,
    point: str,
    repair: str | None,
) -> None:
    version = promotable(champion_and_challenger["champion"])
    previous = champion_now()
    head = audit_head()
    switch = KillSwitch(server, pattern, count=count, outage_seconds=None).arm()
    failed = cli("promote", MODEL, version, "--reason", "fault test")
    switch.wait()
    assert switch.fired and switch.fired_at is not None
    assert failed.exit_code == 1, failed.output
    said = error_line(failed.output)
    assert f"the MLflow tracking server at {server.url} is unavailable" in said, said
    assert "Traceback" not in failed.output
    # an outage is never mistaken for tampering
    assert not {"signature_failed", "integrity_failed"} & set(audit_actions(head))

    server.start()
    back = time.monotonic()
    status = cli("status", MODEL)
    assert status.exit_code == 0, status.output
    interrupted = "is not finished" in status.output
    assert interrupted == (repair is not None), status.output
    reconciled = cli("audit", "reconcile", MODEL, "--repair")
    assert reconciled.exit_code == 0, reconciled.output
    if repair is not None:
        assert f"an interrupted promotion was {repair}" in reconciled.output, reconciled.output
    expected = version if repair == "finished" else previous
    assert champion_now() == expected
    checks = assert_invariants([MODEL]) | nothing_unverified_is_usable()
    repaired = time.monotonic() - back
    if expected != version:  # the rerun: promote again
        again = cli("promote", MODEL, version, "--reason", "fault test, again")
        assert again.exit_code == 0, again.output
        assert champion_now() == version
        checks |= assert_invariants([MODEL])
    fault_result.record(
        "mlflow-restart-promotion",
        point=f"{point}; down until the client gave up (1 retry, cut for the test)",
        outcome="recovered" if repair == "finished" else "refused",
        user_sees=said,
        recovery_seconds=round(repaired, 2),
        checks=checks,
        figures={
            "left_interrupted": interrupted,
            "reconcile": repair or "nothing to do",
            "champion_after_reconcile": "the new version" if expected == version else "unchanged",
        },
    )

"""Two training runs at once on the production profile's PostgreSQL: each run is its own
process (as two deployments' runs would be), both register through one MLflow server on
PostgreSQL and audit into one PostgreSQL audit trail. Nothing may be lost or forked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.ingestion import ingestion_flow
from mlsteward.audit import Action, audit_store
from mlsteward.config import settings
from mlsteward.config.profiles import Profile
from tests.conftest import REPO_ROOT
from tests.support.platform import free_port
from tests.support.stack import stop_process

MODEL = "heart_disease"
VALIDATIONS = (Action.VALIDATION_PASSED, Action.VALIDATION_FAILED)


@pytest.fixture
def mlflow_port() -> int:
    return free_port()


@pytest.fixture
def production_env(mlflow_port: int) -> dict[str, str]:
    """The profile's MLflow clients talk to this test's server."""
    return {"MLSTEWARD_MLFLOW_URL": f"http://127.0.0.1:{mlflow_port}"}


@pytest.fixture
def mlflow_server(
    production_profile: Profile, mlflow_port: int, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``mlflow server`` on the profile's PostgreSQL backend store; stopped before the profile's
    databases are dropped."""
    log = tmp_path / "mlflow.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         settings.mlflow_backend_store_uri(), "--serve-artifacts", "--artifacts-destination",
         str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--workers", "2"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    try:
        _wait_until_healthy(proc, mlflow_port, log)
        yield proc
    finally:
        stop_process(proc, timeout=30)


def _wait_until_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.read() == b"OK":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the MLflow server did not start:\n" + log.read_text()[-3000:])


def test_two_training_runs_at_once_lose_nothing(
    small_cohort_path: Path, mlflow_server: subprocess.Popen[bytes]
) -> None:
    from prefect.settings import PREFECT_API_URL

    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    with audit_store() as store:
        before = store.verify().records
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "MLSTEWARD_PROJECT_ROOT": str(REPO_ROOT)}  # fmt: skip
    train = [sys.executable, "-m", "mlsteward.cli", "train", MODEL, "--max-evals", "2"]
    runs = [
        subprocess.Popen(
            [*train, "--seed", str(seed), "--json"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outs = [r.communicate(timeout=900) for r in runs]
    for r, (out, err) in zip(runs, outs, strict=True):
        assert r.returncode == 0, out + err[-3000:]

    uri = settings.mlflow_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2]
    champion = client.get_model_version_by_alias(MODEL, "champion").version

    with audit_store() as store:
        report = store.verify()
        appended = [r for r in store.query() if r.seq > before]
    assert report.ok, report
    assert report.records == before + len(appended)
    new = [r for r in appended if r.model == MODEL]  # the rest: checkpoints of the promotions
    assert {r.action for r in appended if r.model != MODEL} <= {Action.AUDIT_CHECKPOINT}
    kinds = Counter(r.action for r in new)
    assert kinds[Action.VERSION_REGISTERED] == 2
    assert {r.version for r in new if r.action == Action.VERSION_REGISTERED} == {"1", "2"}
    # A run whose gates compared with a champion that another run has since replaced
    # is refused as stale, audited, and runs the gates again: per version, one
    # validation more than its stale refusals, and the last validation decides.
    for v in ("1", "2"):
        mine = [r for r in new if r.version == v]
        checks = [r for r in mine if r.action in VALIDATIONS]
        stale = [r for r in mine if r.action == Action.PROMOTION_REFUSED]
        assert len(checks) == len(stale) + 1, kinds
        promoted = [r for r in mine if r.action == Action.PROMOTED]
        assert len(promoted) == (checks[-1].action == Action.VALIDATION_PASSED)
    last = [r.version for r in new if r.action == Action.PROMOTED]
    assert last and last[-1] == champion
    outcome = {json.loads(out)["version"]: json.loads(out) for out, _ in outs}
    assert set(outcome) == {"1", "2"}

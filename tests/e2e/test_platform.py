"""``make up`` / ``make status`` / ``make down`` for real: servers, worker, gateway and governance
API on free ports in a temporary home, the credentials the first ``up`` makes and shows once, a
second ``up`` that starts nothing and shows no secret, and a ``down`` that leaves no process and
no open port behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.data.synthetic import generate_cohort, write_dataset
from mlsteward.gateway.client import build_request
from mlsteward.identity import local_principal
from mlsteward.platform import processes
from mlsteward.platform.mlflow_auth import GOVERNANCE_USER, basic_auth_header
from tests.conftest import REPO_ROOT
from tests.support.platform import (
    SERVICES,
    Platform,
    assert_nothing_left,
    get,
    get_json,
    post,
    request,
    service_processes,
)

# boots the whole platform with `make up`: run by `make test-platform` (and CI), not `make test`
pytestmark = pytest.mark.platform


def test_up_twice_status_and_down(platform: Platform) -> None:
    first = platform.make("up")
    assert first.returncode == 0, first.stdout + first.stderr
    for url in (
        platform.url("PREFECT"),
        platform.url("MLFLOW"),
        platform.url("GATEWAY", "/hooks/ci"),
        platform.url("API", "/api/v1"),
    ):
        assert url in first.stdout, f"{url} not printed:\n{first.stdout}"
    token, secret = assert_the_credentials_are_made_and_shown_once(platform, first.stdout)
    assert_the_api_answers_with_authentication_on(platform, token)
    assert_the_gateway_checks_the_secret_it_made(platform, secret)

    # Every service answers, and the Prefect server has the pool, the deployments and a worker.
    assert get(platform.url("PREFECT", "/api/health")) == (200, b"true")
    # MLflow asks for a login: none gets 401; the governance account's (never printed) works.
    with pytest.raises(urllib.error.HTTPError) as no_login:
        urllib.request.urlopen(platform.url("MLFLOW", "/"), timeout=10)
    assert no_login.value.code == 401
    password = (platform.home / "secrets" / "mlflow-governance.password").read_text().strip()
    assert password not in first.stdout
    login = {"Authorization": basic_auth_header(GOVERNANCE_USER, password)}
    status, page = get(platform.url("MLFLOW", "/"), login)
    assert status == 200 and b"<html" in page.lower()
    assert json.loads(get(platform.url("GATEWAY", "/health"))[1])["prefect_api"] == (
        platform.url("PREFECT", "/api")
    )
    # The prediction service runs (not ready: no champion yet on a new platform).
    assert get(platform.url("SERVING", "/healthz"))[0] == 200
    with pytest.raises(urllib.error.HTTPError) as not_ready:
        urllib.request.urlopen(platform.url("SERVING", "/readyz"), timeout=10)
    assert not_ready.value.code == 503
    api = platform.url("PREFECT", "/api")
    # The UI is served and calls the API on our port, not on Prefect's default 4200.
    assert json.loads(get(platform.url("PREFECT", "/ui-settings"))[1])["api_url"] == api
    pool = json.loads(get(f"{api}/work_pools/mlsteward-process")[1])
    assert pool["type"] == "process"
    deployment = json.loads(get(f"{api}/deployments/name/train-model/train-heart-disease")[1])
    assert deployment["work_pool_name"] == "mlsteward-process"
    # The configured schedules are on the deployed deployments, active, in UTC.
    cfg = get_model_config("heart_disease")
    for name, cron in (("score-model/score-heart-disease", cfg.scoring.schedule),
                       ("drift-model/drift-heart-disease", cfg.drift.schedule)):  # fmt: skip
        deployed = json.loads(get(f"{api}/deployments/name/{name}")[1])
        schedules = [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
                     for s in deployed["schedules"]]  # fmt: skip
        assert schedules == [(cron, "UTC", True)], (name, schedules)
    workers = post(f"{api}/work_pools/mlsteward-process/workers/filter", {})
    assert any(w["name"] == "mlsteward-worker" and w["status"] == "ONLINE" for w in workers)

    # A short-interval schedule: the server's scheduler creates runs, the worker completes one.
    source = write_dataset(generate_cohort(n_rows=500, seed=3), platform.home / "cohort.parquet")
    ingest = get_json(f"{api}/deployments/name/ingest-data/ingest-heart-disease")
    every = {"schedule": {"interval": 10}, "active": True, "parameters": {"source": str(source)}}
    [schedule] = post(f"{api}/deployments/{ingest['id']}/schedules", [every])
    # Touch the deployment so the scheduler's recent-deployments pass (every 5 s) takes it,
    # instead of the full pass (every 60 s).
    request(f"{api}/deployments/{ingest['id']}", "PATCH", {"paused": False})
    try:
        run = wait_for_completed_scheduled_run(api, ingest["id"], timeout=150)
    finally:
        request(f"{api}/deployments/{ingest['id']}/schedules/{schedule['id']}", "DELETE")
    assert run["parameters"]["source"] == str(source)
    with audit_store(f"sqlite:///{platform.home}/audit/audit.db") as store:
        accepted = [r for r in store.query(action=Action.INGESTION_ACCEPTED)]
    assert [r.actor for r in accepted] == [f"flow-run:{run['id']}"]
    assert_the_cli_finds_the_platform(platform, api, source)

    pids = platform.pids()
    before = service_processes(pids)
    assert all(processes.is_alive(pid) for pid in pids.values())

    # A second `up` finds everything running and starts nothing.
    second = platform.make("up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already running") == len(SERVICES), second.stdout
    # The credentials are only named now: kept, never shown again.
    assert token not in second.stdout and secret not in second.stdout, second.stdout
    assert "shown only this once" not in second.stdout
    assert f"export MLSTEWARD_TOKEN=$(cat {platform.home / 'secrets' / 'admin.token'})" in (
        second.stdout
    )
    assert platform.pids() == pids
    assert service_processes(pids) == before

    doc = platform.status()
    assert doc["running"] is True
    assert {s["name"]: (s["running"], s["pid"]) for s in doc["services"]} == {
        name: (True, pid) for name, pid in pids.items()
    }

    family = set().union(*before.values())
    down = platform.make("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.index("prefect-worker") < down.stdout.index("prefect-server")
    assert_nothing_left(platform, pids, family)


def assert_the_credentials_are_made_and_shown_once(
    platform: Platform, stdout: str
) -> tuple[str, str]:
    """Nothing was exported, yet an admin token and a webhook secret exist: each in a file only
    its owner can read, each printed once with what it is for."""
    folder = platform.home / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    values = []
    for name in ("admin.token", "webhook.secret"):
        path = folder / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        values.append(path.read_text().strip())
        assert stdout.count(values[-1]) == 1, f"{name} not shown exactly once:\n{stdout}"
    assert stdout.count("shown only this once") == 2
    assert f"export MLSTEWARD_TOKEN=$(cat {folder / 'admin.token'})" in stdout
    for log in (platform.home / "logs").iterdir():  # never in a service's log
        assert not any(v in log.read_text(errors="replace") for v in values), log
    return values[0], values[1]


def assert_the_api_answers_with_authentication_on(platform: Platform, token: str) -> None:
    status, body = get(platform.url("API", "/api/v1/health"))
    assert status == 200 and json.loads(body)["ok"] is True
    whoami = platform.url("API", "/api/v1/whoami")
    status, body = get(whoami, {"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(body)["identity"] == "user:admin"
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(whoami)
    assert refused.value.code == 401
    console = platform.url("API", "/ui/models")
    status, body = get(console, {"Cookie": f"msw_console={token}"})
    assert status == 200 and b"signed in as <strong>user:admin</strong>" in body
    with pytest.raises(urllib.error.HTTPError) as signin:
        get(console)
    assert signin.value.code == 401 and b"Sign in" in signin.value.read()


def assert_the_gateway_checks_the_secret_it_made(platform: Platform, secret: str) -> None:
    """The gateway runs although no secret was exported, and checks the one ``up`` made: a
    request signed with another is a 401, one signed with it passes the signature check (and
    is then refused for its unknown model, so no run starts)."""
    hook = platform.url("GATEWAY", "/hooks/ci")
    for signed_with, status in (("another-secret", 401), (secret, 422)):
        body, headers = build_request("train", "no_such_model", {}, signed_with)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(hook, body, headers), timeout=10)
        assert refused.value.code == status, refused.value.read()


def assert_the_cli_finds_the_platform(platform: Platform, api: str, source: Path) -> None:
    """A command that runs a flow uses the platform's Prefect server with nothing exported
    (not even its ports): no temporary server, and the run is on the platform's server."""
    env = {k: v for k, v in platform.env.items() if not k.endswith("_PORT")}
    env["PREFECT_HOME"] = os.environ["PREFECT_HOME"]  # the session's, not the user's
    done = subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", "ingest", "heart_disease", "--source", str(source)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "temporary server" not in done.stderr, done.stderr
    assert f"View at {platform.url('PREFECT', '/runs/flow-run/')}" in done.stderr, done.stderr
    local = post(f"{api}/flow_runs/filter", {"flow_runs": {"deployment_id": {"is_null_": True}}})
    assert [r["state_type"] for r in local] == ["COMPLETED"], local
    with audit_store(f"sqlite:///{platform.home}/audit/audit.db") as store:
        actors = {r.actor for r in store.query(action=Action.INGESTION_ACCEPTED)}
    # The command acted for the local operator (nothing exported), and its run for it.
    assert f"flow-run:{local[0]['id']} for {local_principal().actor}" in actors


def wait_for_completed_scheduled_run(api: str, deployment_id: str, timeout: float) -> Any:
    """The first run the scheduler (not a person) created for the deployment, once completed."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        runs = post(
            f"{api}/flow_runs/filter",
            {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        )
        seen = [(r["name"], r["state_type"]) for r in runs]
        for r in runs:
            assert r["auto_scheduled"], r
            assert r["state_type"] not in ("FAILED", "CRASHED"), r["state"]
            if r["state_type"] == "COMPLETED":
                return r
        time.sleep(1)
    raise AssertionError(f"no scheduled run completed within {timeout:.0f} s: {seen}")

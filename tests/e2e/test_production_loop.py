"""The whole loop on the production profile, as a user runs it: ``make up PROFILE=production`` on
this machine's PostgreSQL and Redis, then the CLI (ingest, materialize, train, score, drift), the
drift event starting the training deployment on the worker, and the prediction service answering
from Redis. Every store is checked to be the shared engine, not a file under the home."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from mlsteward.config.profiles import Profile
from mlsteward.platform import processes
from tests.conftest import REPO_ROOT
from tests.support.platform import (
    SERVICES,
    Platform,
    assert_nothing_left,
    get_json,
    post,
    service_processes,
)

# boots the whole platform with `make up`: run by `make test-platform` (and CI), not `make test`
pytestmark = pytest.mark.platform

MODEL = "heart_disease"


def cli(plat: Platform, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", *args, "--json"],
        cwd=REPO_ROOT,
        env=plat.client_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"mlsteward {' '.join(args)}:\n{out.stdout}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout)


def predict(url: str, ids: list[int], token: str) -> Any:
    body = json.dumps({"entity_ids": ids}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
        return json.loads(r.read())


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture
def platform_profile(production_profile: Profile) -> Profile:
    """The platform starts on the production profile (and stops before it is dropped)."""
    return production_profile


def test_the_whole_loop_runs_unchanged_on_the_production_profile(
    platform: Platform, production_profile: Profile, tmp_path: Path
) -> None:
    _loop(platform, production_profile, tmp_path)


def _loop(plat: Platform, profile: Any, tmp_path: Path) -> None:
    pg = profile.postgres
    up = plat.make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "profile production (" in up.stdout, up.stdout
    api = plat.url("PREFECT", "/api")

    # ingest -> materialize -> train -> gates -> promote
    cohort = tmp_path / "cohort.parquet"
    cli(plat, "generate", MODEL, "--rows", "3000", "--out", str(cohort))
    cli(plat, "ingest", MODEL, "--source", str(cohort))
    cli(plat, "materialize", MODEL)
    trained = cli(plat, "train", MODEL, "--max-evals", "3")
    assert trained["governance"]["decision"] == "promoted", trained["governance"]

    # score: the service loads the champion through the MLflow server, features from Redis
    def ready() -> Any:
        try:
            return get_json(plat.url("SERVING", "/readyz"))
        except OSError:
            return None

    wait_for("the prediction service ready with a champion", ready, 120)
    # authentication is on: the admin token the first `up` made
    token = (plat.home / "secrets" / "admin.token").read_text().strip()
    answer = predict(plat.url("SERVING", f"/v1/models/{MODEL}/predict"), [1, 2, 3], token)
    assert [p["version"] for p in answer["predictions"]] == ["1"] * 3
    month = tmp_path / "2025-08.parquet"
    cli(plat, "generate", MODEL, "--start", "2025-08-01", "--days", "31", "--rows", "1500",
        "--seed", "102", "--id-offset", "1001000000", "--shift", "bmi=1.5", "--shift",
        "cholesterol=1.5", "--out", str(month), "--append-to-source")  # fmt: skip
    scored = cli(plat, "score", MODEL, "--source", str(month))
    assert scored["rows"] == 1500

    # drift -> the drift event -> the training deployment runs on the worker
    drift = cli(plat, "drift", MODEL)
    assert drift["decision"]["retrain"] is True
    assert drift["retrain"]["triggered"] and drift["retrain"]["mode"] == "deployment"
    train = get_json(f"{api}/deployments/name/train-model/train-{MODEL.replace('_', '-')}")

    def retrained() -> Any:
        runs = post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [train["id"]]}}})
        for run in runs:
            assert run["state_type"] not in ("FAILED", "CRASHED"), run["state"]
        done = [r for r in runs if r["state_type"] == "COMPLETED"]
        return done[0] if done else None

    run = wait_for("the drift-triggered training run", retrained, 420)
    assert run["parameters"]["reason"].startswith("drift:")

    # Every store is the shared engine.
    with psycopg.connect(pg.database_url("mlflow")) as conn:
        versions = conn.execute(
            "SELECT version FROM model_versions WHERE name = %s ORDER BY version", (MODEL,)
        ).fetchall()
    assert versions == [(1,), (2,)]
    stored = sorted(Path(plat.home, "artifact-store").rglob("model.ubj"))
    assert len(stored) >= 2, "artifacts go to the server's artifact store"
    assert not list(plat.home.glob("mlflow/**/model.ubj"))
    with psycopg.connect(pg.database_url("prefect")) as conn:
        flow_runs = conn.execute("SELECT count(*) FROM flow_run").fetchone()[0]
    assert flow_runs >= 7  # generate runs no flow; ingest, materialize, train, score, drift, ...
    verified = cli(plat, "audit", "verify")
    assert verified["ok"] is True
    with psycopg.connect(pg.database_url("audit")) as conn:
        records = conn.execute("SELECT count(*) FROM mlsteward_audit").fetchone()[0]
    assert records == verified["records"] >= 8
    with psycopg.connect(pg.database_url("feast")) as conn:
        views = conn.execute(
            "SELECT feature_view_name FROM feature_views WHERE project_id = %s",
            (profile.feast.project,),
        ).fetchall()
    assert views == [(f"{MODEL}__features",)]
    keys = redis.Redis.from_url(profile.redis_url).scan_iter(
        match=b"*" + profile.feast.project.encode()
    )
    assert sum(1 for _ in keys) >= 1000
    assert not (plat.home / "audit").exists() and not (plat.home / "feast" / "registry.db").exists()

    pids = {p.stem: int(p.read_text()) for p in (plat.home / "run").glob("*.pid")}
    assert set(pids) == set(SERVICES)
    family = set().union(*service_processes(pids).values())
    down = plat.make("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert_nothing_left(plat, pids, family)
    assert all(not processes.is_alive(p) for p in pids.values())

"""``make up`` / ``make status`` / ``make down`` for real: servers, worker and gateway on free ports
in a temporary home, a second ``up`` that starts nothing, and a ``down`` that leaves no process
and no open port behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsteward import processes
from mlsteward.config import get_model_config
from tests.integration.platform_support import (
    SERVICES,
    Platform,
    assert_nothing_left,
    get,
    platform_stopped_afterwards,
    post,
    service_processes,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def platform(mlsteward_home: Path) -> Iterator[Platform]:
    with platform_stopped_afterwards(mlsteward_home) as plat:
        yield plat


def test_up_twice_status_and_down(platform: Platform) -> None:
    first = platform.make("up")
    assert first.returncode == 0, first.stdout + first.stderr
    for url in (
        platform.url("PREFECT"),
        platform.url("MLFLOW"),
        platform.url("GATEWAY", "/hooks/ci"),
    ):
        assert url in first.stdout, f"{url} not printed:\n{first.stdout}"

    # Every service answers, and the Prefect server has the pool, the deployments and a worker.
    assert get(platform.url("PREFECT", "/api/health")) == (200, b"true")
    status, page = get(platform.url("MLFLOW", "/"))
    assert status == 200 and b"<html" in page.lower()
    assert json.loads(get(platform.url("GATEWAY", "/health"))[1])["prefect_api"] == (
        platform.url("PREFECT", "/api")
    )
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

    pids = platform.pids()
    before = service_processes(pids)
    assert all(processes.is_alive(pid) for pid in pids.values())

    # A second `up` finds everything running and starts nothing.
    second = platform.make("up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already running") == len(SERVICES), second.stdout
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

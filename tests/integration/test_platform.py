"""``make up`` / ``make status`` / ``make down`` for real: servers, worker and gateway on free ports
in a temporary home, a second ``up`` that starts nothing, and a ``down`` that leaves no process
and no open port behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsteward import processes
from mlsteward.config import get_model_config
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

SERVICES = ("prefect-server", "mlflow", "gateway", "prefect-worker")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _service_processes(roots: dict[str, int]) -> dict[str, set[int]]:
    """Each service's processes, without flow runs a schedule may start in between."""
    return {
        name: {p for p in processes.family(pid) if "prefect.engine" not in processes.cmdline(p)}
        for name, pid in roots.items()
    }


class Platform:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {k: _free_port() for k in ("PREFECT", "MLFLOW", "GATEWAY")}
        # The test harness's Prefect settings, and the make that may be running this suite.
        dropped = ("PREFECT_API_URL", "PREFECT_HOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env.update({f"MLSTEWARD_{k}_PORT": str(v) for k, v in self.ports.items()})
        self.env["MLSTEWARD_WEBHOOK_SECRET"] = "platform-test-secret"
        self.env["MLSTEWARD_HOME"] = str(home)

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        # Under `make test` (uv run) `python3` is the project's own interpreter, which has no uv:
        # hand make the uv that runs this suite, as it would find it from a shell.
        uv = os.environ.get("UV") or shutil.which("uv")
        return subprocess.run(
            ["make", target, f"MLSTEWARD_HOME={self.home}", *([f"UV={uv}"] if uv else [])],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "mlsteward.platform", "status", "--json"],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)

    def pids(self) -> dict[str, int]:
        run = self.home / "run"
        return {name: int((run / f"{name}.pid").read_text()) for name in SERVICES}

    def url(self, kind: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[kind]}{path}"


@pytest.fixture
def platform(mlsteward_home: Path) -> Iterator[Platform]:
    plat = Platform(mlsteward_home)
    try:
        yield plat
    finally:  # whatever failed, no server outlives the test
        subprocess.run(
            [sys.executable, "-m", "mlsteward.platform", "down"],
            cwd=REPO_ROOT,
            env=plat.env,
            capture_output=True,
            timeout=120,
        )


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
    assert _get(platform.url("PREFECT", "/api/health")) == (200, b"true")
    status, page = _get(platform.url("MLFLOW", "/"))
    assert status == 200 and b"<html" in page.lower()
    assert json.loads(_get(platform.url("GATEWAY", "/health"))[1])["prefect_api"] == (
        platform.url("PREFECT", "/api")
    )
    api = platform.url("PREFECT", "/api")
    # The UI is served and calls the API on our port, not on Prefect's default 4200.
    assert json.loads(_get(platform.url("PREFECT", "/ui-settings"))[1])["api_url"] == api
    pool = json.loads(_get(f"{api}/work_pools/mlsteward-process")[1])
    assert pool["type"] == "process"
    deployment = json.loads(_get(f"{api}/deployments/name/train-model/train-heart-disease")[1])
    assert deployment["work_pool_name"] == "mlsteward-process"
    # The configured schedules are on the deployed deployments, active, in UTC.
    cfg = get_model_config("heart_disease")
    for name, cron in (("score-model/score-heart-disease", cfg.scoring.schedule),
                       ("drift-model/drift-heart-disease", cfg.drift.schedule)):  # fmt: skip
        deployed = json.loads(_get(f"{api}/deployments/name/{name}")[1])
        schedules = [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
                     for s in deployed["schedules"]]  # fmt: skip
        assert schedules == [(cron, "UTC", True)], (name, schedules)
    workers = _post(f"{api}/work_pools/mlsteward-process/workers/filter", {})
    assert any(w["name"] == "mlsteward-worker" and w["status"] == "ONLINE" for w in workers)

    pids = platform.pids()
    before = _service_processes(pids)
    assert all(processes.is_alive(pid) for pid in pids.values())

    # A second `up` finds everything running and starts nothing.
    second = platform.make("up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already running") == len(SERVICES), second.stdout
    assert platform.pids() == pids
    assert _service_processes(pids) == before

    doc = platform.status()
    assert doc["running"] is True
    assert {s["name"]: (s["running"], s["pid"]) for s in doc["services"]} == {
        name: (True, pid) for name, pid in pids.items()
    }

    family = set().union(*before.values())
    down = platform.make("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.index("prefect-worker") < down.stdout.index("prefect-server")
    survivors = {p for p in family if processes.is_alive(p)}
    assert not survivors, {p: processes.cmdline(p) for p in survivors}
    groups = {
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit()
        and (info := processes.proc_info(int(d.name))) is not None
        and info.pgid in pids.values()
        and processes.is_alive(info.pid)
    }
    assert not groups, f"processes left in the services' groups: {groups}"
    assert not [kind for kind, port in platform.ports.items() if _listening(port)]
    assert not list((platform.home / "run").glob("*.pid"))
    assert platform.status()["running"] is False

"""The local platform as the end-to-end tests drive it: ``make up`` / ``make down`` on free ports
in a temporary home, with the environment a shell would give it, and the checks that a ``down``
left no process and no open port behind. The ``platform`` fixture (``tests/fixtures/platform.py``)
makes one and stops it afterwards."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlsteward.platform import processes
from tests.conftest import REPO_ROOT

SERVICES = ("prefect-server", "mlflow", "gateway", "serving", "api", "prefect-worker")


PORTS = range(20_000, 32_000)
"""Where test servers listen: below Linux's ephemeral range (32768-60999), from which the
kernel also picks the source port of every outgoing connection. A port the kernel handed out
as free could be taken by such a connection before the server binds it ("address already in
use" at start-up, seen on a busy machine); one down here can only be taken by another server."""


def free_port() -> int:
    for _ in range(200):
        port = random.SystemRandom().choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {PORTS.start} and {PORTS.stop - 1}")


RETRIED_STATUSES = (429, 502, 503)
"""What Prefect's own client retries: its server answers 503 while its SQLite database is
locked by the scheduler or a worker, which on a busy 2-core machine happens now and then."""


def _open(req: urllib.request.Request | str, attempts: int = 5) -> tuple[int, bytes]:
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRIED_STATUSES or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)
        except TimeoutError:
            # A read may be asked again (a write might have happened): Prefect's server on
            # SQLite can stall past 10 s while a busy 2-core machine runs its scheduler.
            is_read = isinstance(req, str) or req.data is None
            if not is_read or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    return _open(urllib.request.Request(url, headers=headers or {}))


def get_json(url: str) -> Any:
    return json.loads(get(url)[1])


def post(url: str, body: dict[str, Any] | list[Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return json.loads(_open(req)[1])


def request(url: str, method: str, body: dict[str, Any] | None = None) -> None:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    _open(req)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def service_processes(roots: dict[str, int]) -> dict[str, set[int]]:
    """Each service's processes, without the flow runs the worker may start at any time.

    The worker's only children are flow runs, and one caught between fork and exec still reads
    as the worker itself, so the worker counts as just its own process.
    """
    return {
        name: {pid} if name == "prefect-worker" else processes.family(pid)
        for name, pid in roots.items()
    }


class Platform:
    """One platform on its own free ports, with its state in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {k: free_port() for k in ("PREFECT", "MLFLOW", "GATEWAY", "API", "SERVING")}
        # The test harness's Prefect settings, and the make that may be running this suite.
        dropped = ("PREFECT_API_URL", "PREFECT_HOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env.update({f"MLSTEWARD_{k}_PORT": str(v) for k, v in self.ports.items()})
        # No webhook secret is exported: `up` makes one (and an admin token) on its first start.
        for var in ("MLSTEWARD_WEBHOOK_SECRET", "MLSTEWARD_WEBHOOK_SECRET_BLOCK"):
            self.env.pop(var, None)
        # The worker asks for work every 10 s by default; a run the test starts would wait
        # ~5 s on average before any of it runs.
        self.env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "2")
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

    def stop(self) -> None:
        """Stop whatever runs, quietly: a test that failed half-way must not leave servers."""
        subprocess.run(
            [sys.executable, "-m", "mlsteward.platform", "down"],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            timeout=120,
        )

    def pids(self) -> dict[str, int]:
        run = self.home / "run"
        return {name: int((run / f"{name}.pid").read_text()) for name in SERVICES}

    def url(self, kind: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[kind]}{path}"

    def client_env(self) -> dict[str, str]:
        """A shell's environment pointed at this platform's Prefect server, as ``up`` prints it.

        Without ``PREFECT_API_URL`` a command would start a temporary server of its own, and its
        flow runs would be invisible in this platform's UI.
        """
        return {
            **self.env,
            "PREFECT_API_URL": self.url("PREFECT", "/api"),
            "PREFECT_HOME": str(self.home / "prefect"),
            "MLSTEWARD_PROJECT_ROOT": str(REPO_ROOT),
        }


def assert_nothing_left(platform: Platform, pids: dict[str, int], family: set[int]) -> None:
    """No process of the services, none in their process groups, no open port, no pid file."""
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
    open_ports = {kind: port for kind, port in platform.ports.items() if listening(port)}
    assert not open_ports, f"still listening after make down: {open_ports}"
    assert not list((platform.home / "run").glob("*.pid"))
    assert platform.status()["running"] is False

"""The platform's bookkeeping without starting servers: pid files, recognising our processes,
stopping a whole process family, and refusing a port something else holds."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsteward.platform import processes
from mlsteward.platform.lifecycle import down, status, up
from mlsteward.platform.services import (
    PlatformConfig,
    PlatformError,
    Service,
    child_env,
    inspect,
    missing_module,
    services,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cfg(mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    for kind in ("PREFECT", "MLFLOW", "GATEWAY", "API"):
        monkeypatch.setenv(f"MLSTEWARD_{kind}_PORT", str(_free_port()))
    return PlatformConfig.from_env()


# A sleeping Python whose command line reads like a Prefect worker's: with ``-c`` everything
# after the code is passed through as arguments, so the process looks like ``-m prefect worker``
# to /proc without being one. It starts a grandchild in a session of its own, the way Prefect
# starts flow runs, and prints the grandchild's pid.
LOOKALIKE = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
    " start_new_session=True)\n"
    "print(c.pid, flush=True)\n"
    "time.sleep(120)",
    "-m",
    "prefect",
    "worker",
    "start",
]


@contextlib.contextmanager
def _lookalike(home: Path) -> Iterator[tuple[int, int]]:
    """A LOOKALIKE started for ``home``: yields its pid and its grandchild's; both die after."""
    env = {**os.environ, "MLSTEWARD_HOME": str(home)}
    proc = subprocess.Popen(LOOKALIKE, env=env, start_new_session=True, stdout=subprocess.PIPE)
    grandchild = 0
    try:
        assert proc.stdout is not None
        grandchild = int(proc.stdout.readline())
        yield proc.pid, grandchild
    finally:
        for kill, pid in ((os.killpg, proc.pid), (os.kill, grandchild)):
            with contextlib.suppress(ProcessLookupError):
                if pid:
                    kill(pid, signal.SIGKILL)
        proc.wait()


def test_pid_file_of_a_dead_process_is_stale_and_removed(cfg: PlatformConfig) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    worker = services(cfg)["prefect-worker"]
    processes.write_pid(worker.pid_file(cfg), proc.pid)

    state = inspect(cfg, worker)
    assert (state.running, state.stale_pid) == (False, proc.pid)
    entry = next(e for e in down(cfg) if e["name"] == "prefect-worker")
    assert "stale pid file" in entry["action"]
    assert not worker.pid_file(cfg).exists()


def test_pid_file_of_a_foreign_process_is_stale_and_the_process_is_left_alone(
    cfg: PlatformConfig,
) -> None:
    server = services(cfg)["prefect-server"]
    proc = subprocess.Popen(["sleep", "60"])
    try:
        processes.write_pid(server.pid_file(cfg), proc.pid)
        assert not inspect(cfg, server).running
        assert not next(s for s in status(cfg) if s.name == "prefect-server").running
        down(cfg)
        assert not server.pid_file(cfg).exists()
        assert processes.is_alive(proc.pid), "down must never signal a process it did not start"
    finally:
        proc.kill()
        proc.wait()


def test_the_same_command_for_another_home_is_not_ours(cfg: PlatformConfig, tmp_path: Path) -> None:
    worker = services(cfg)["prefect-worker"]
    with _lookalike(tmp_path / "elsewhere") as (pid, _):
        processes.write_pid(worker.pid_file(cfg), pid)
        assert not inspect(cfg, worker).running
        down(cfg)
        assert processes.is_alive(pid)


def test_down_stops_our_process_and_a_child_that_left_its_session(cfg: PlatformConfig) -> None:
    worker = services(cfg)["prefect-worker"]
    with _lookalike(cfg.home) as (pid, grandchild):
        assert processes.proc_info(grandchild).pgid != pid  # type: ignore[union-attr]
        processes.write_pid(worker.pid_file(cfg), pid)
        assert inspect(cfg, worker).running

        entry = next(e for e in down(cfg) if e["name"] == "prefect-worker")
        assert entry["action"] == "stopped"
        assert not processes.is_alive(pid)
        assert not processes.is_alive(grandchild)
        assert not worker.pid_file(cfg).exists()


def test_up_refuses_a_port_held_by_another_program(
    cfg: PlatformConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        monkeypatch.setenv("MLSTEWARD_PREFECT_PORT", str(port))
        with pytest.raises(PlatformError, match=rf"port {port} \(prefect-server\)"):
            up(PlatformConfig.from_env())
    assert not list((cfg.home / "run").glob("*.pid")), "nothing may start after a refusal"


def test_children_get_their_own_prefect_settings(
    cfg: PlatformConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:pw")
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/x")
    env = child_env(cfg)
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{cfg.prefect_port}/api"
    assert env["PREFECT_UI_API_URL"] == env["PREFECT_API_URL"]
    assert env["PREFECT_HOME"] == str(cfg.home / "prefect")
    assert env["PREFECT_API_AUTH_STRING"] == "admin:pw"
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://db/x"
    assert env["MLSTEWARD_HOME"] == str(cfg.home)


def test_the_production_profile_reaches_every_service(
    cfg: PlatformConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLSTEWARD_MLFLOW_URL",
                "PREFECT_SERVER_DATABASE_CONNECTION_URL", "MLSTEWARD_ARTIFACT_STORE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    local_mlflow = services(cfg)["mlflow"].args
    assert "--default-artifact-root" in local_mlflow and "--serve-artifacts" not in local_mlflow
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in child_env(cfg)

    monkeypatch.setenv("MLSTEWARD_PROFILE", "production")
    monkeypatch.setenv("MLSTEWARD_DB_PREFIX", "acme")
    args = services(cfg)["mlflow"].args
    store = args[args.index("--backend-store-uri") + 1]
    assert store == "postgresql+psycopg://postgres@127.0.0.1:5432/acme_mlflow"
    assert "--serve-artifacts" in args and "--default-artifact-root" not in args
    assert args[args.index("--artifacts-destination") + 1] == str(cfg.home / "artifact-store")
    env = child_env(cfg)
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == (
        "postgresql+asyncpg://postgres@127.0.0.1:5432/acme_prefect"
    )
    # Flow runs reach MLflow through the server this platform starts, on its port.
    assert env["MLSTEWARD_MLFLOW_URL"] == f"http://127.0.0.1:{cfg.mlflow_port}"
    assert "MLFLOW_TRACKING_URI" not in env


def test_a_service_whose_module_is_not_in_the_checkout_is_skipped_with_a_reason(
    cfg: PlatformConfig,
) -> None:
    svcs = services(cfg)
    assert missing_module(svcs["gateway"]) is None  # no secret needed any more
    assert missing_module(svcs["prefect-server"]) is None

    def ours(module: str) -> Service:
        return dataclasses.replace(svcs["gateway"], command=(module,))

    assert missing_module(ours("mlsteward.nowhere")) == (
        "not started: mlsteward.nowhere is not part of this checkout"
    )
    assert missing_module(ours("mlsteward.identity")) == (
        "not started: mlsteward.identity has no __main__ (python -m mlsteward.identity)"
    )


def test_a_bad_port_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSTEWARD_MLFLOW_PORT", "50x0")
    with pytest.raises(PlatformError, match="MLSTEWARD_MLFLOW_PORT"):
        PlatformConfig.from_env()

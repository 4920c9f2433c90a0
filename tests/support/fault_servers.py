"""Real servers a fault test owns and breaks: each on a free port with its state in a directory
of the test's own, started, killed (SIGKILL of its whole process group, as a crash or the OOM
killer does), frozen (SIGSTOP: a host that stops answering without closing its sockets) and
restarted on the same port, so clients that keep the address see the same server come back.

Each server class is self-contained (its own command line, readiness probe and clean-up); a
fixture uses one as a context manager, which stops it whatever the test did.

``KillSwitch`` picks the moment of a fault from what the server itself logged: the MLflow
server's access log says which request it has answered, so "after the alias write" is a line
to wait for, not a guess at a sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.platform import free_port

READY_TIMEOUT_SECONDS = 120.0


def venv_bin(name: str) -> str:
    """A console script of this virtualenv (beside the interpreter), else one on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


def signal_group(process: subprocess.Popen[Any], sig: int) -> None:
    """``sig`` to the process group the server leads (it was started in a session of its own),
    so its workers get it too; nothing when it has gone."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _end_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM to the group, SIGKILL when it has not exited in time; always reaped."""
    if process.poll() is None:
        signal_group(process, signal.SIGCONT)  # a frozen server cannot exit on SIGTERM
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait(timeout=10)
    signal_group(process, signal.SIGKILL)  # a worker the leader left behind
    process.wait(timeout=10)


@dataclass
class _Owned:
    """What every server here shares: a port, a state directory, one log file per start."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed_at: float | None = None
    """``time.monotonic()`` of the last kill or freeze."""

    @property
    def log_path(self) -> Path:
        return self.directory / f"server-{self.starts}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait(self, what: str, probe: Callable[[], bool], timeout: float) -> float:
        """Seconds until ``probe()`` holds; a failure with the log's tail otherwise."""
        started = time.monotonic()
        while not probe():
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{what} exited {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what} not ready in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.monotonic() - started

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL to the whole server: no shutdown, no flush, connections reset."""
        assert self.process is not None
        self.killed_at = time.monotonic()
        signal_group(self.process, signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the server holds its connections open and answers nothing."""
        assert self.process is not None
        self.killed_at = time.monotonic()
        signal_group(self.process, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        signal_group(self.process, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            _end_group(self.process)


# -- MLflow tracking server ------------------------------------------------------------------


@dataclass
class MlflowServer(_Owned):
    """``mlflow server`` with a SQLite backend store and proxied artifacts under ``directory``,
    one worker (as the platform runs it). Clients reach it at ``url``, as the production profile
    has them do (``MLFLOW_TRACKING_URI``): every artifact goes through the server too."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            venv_bin("mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.directory / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Start (or start again, same port and store); seconds until ``/health`` answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        env.pop("MLFLOW_BACKEND_STORE_URI", None)
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        # MLflow's job runner (huey consumers, for server-side jobs the product never asks
        # for) is more processes to start, kill and reap.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self._spawn(self.argv(), env)
        return self._wait("mlflow server", self.healthy, timeout)

    def healthy(self) -> bool:
        return _http_ok(f"{self.url}/health")

    def answered(self, pattern: str) -> int:
        """How many requests matching ``pattern`` (a regex over the access log's request line,
        e.g. ``POST /api/2.0/mlflow/registered-models/alias``) this start has answered."""
        regex = re.compile(pattern)
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if '"' in line and regex.search(line))


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


CLIENT_REQUEST = r'"(GET|POST|PUT|PATCH|DELETE) /(?!health)'
"""Any request a client sends but the readiness probe's."""


@dataclass
class KillSwitch:
    """Kills ``server`` once its access log shows ``count`` more answers (than when armed) to
    requests matching ``pattern``, and starts it again ``outage_seconds`` later (never, when
    None: the test restarts it). Runs on a thread while the test drives the product in the
    foreground; the times are ``time.monotonic()``."""

    server: MlflowServer
    pattern: str
    count: int = 1
    outage_seconds: float | None = 2.0
    timeout: float = 300.0
    fired_at: float | None = None
    back_at: float | None = None
    """When the restarted server answered ``/health``."""
    resumed_at: float | None = None
    """When the restarted server answered its first client request (a client's retry)."""
    error: BaseException | None = None
    _thread: threading.Thread | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def arm(self) -> KillSwitch:
        baseline = self.server.answered(self.pattern)
        self._thread = threading.Thread(target=self._run, args=(baseline,), daemon=True)
        self._thread.start()
        return self

    def _run(self, baseline: int) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while self.server.answered(self.pattern) < baseline + self.count:
                if self._cancel.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(0.005)
            self.server.kill()
            self.fired_at = self.server.killed_at
            if self.outage_seconds is None:
                return
            time.sleep(self.outage_seconds)
            self.server.start()
            self.back_at = time.monotonic()
            while not self.server.answered(CLIENT_REQUEST):
                if self._cancel.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            self.resumed_at = time.monotonic()
        except BaseException as exc:  # surfaced by ``wait``
            self.error = exc

    def wait(self, timeout: float = 300.0) -> None:
        """Until the kill, the restart and the client's first request after it are done (or
        nothing more can come: the test's operation has returned)."""
        assert self._thread is not None
        self._cancel.set()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    def ride_through(self) -> dict[str, float]:
        """An outage the client rode through, in seconds: kill to the client's next request
        (``recovery_seconds``), kill to restart, restart to that request."""
        assert self.fired_at and self.back_at and self.resumed_at
        return {
            "recovery_seconds": round(self.resumed_at - self.fired_at, 2),
            "server_down_seconds": round(self.back_at - self.fired_at, 2),
            "client_resumed_after_back_seconds": round(self.resumed_at - self.back_at, 2),
        }


@contextmanager
def mlflow_server(directory: Path) -> Iterator[MlflowServer]:
    """A started ``MlflowServer`` in ``directory``, stopped on exit (restarted or not)."""
    server = MlflowServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- Redis -----------------------------------------------------------------------------------


@dataclass
class RedisServer(_Owned):
    """A private ``redis-server`` on ``127.0.0.1:port`` with ``directory`` as its working
    directory. ``persistent``: an append-only file fsync'd every write, so a killed server
    comes back with its keys (otherwise it keeps nothing, as the default config here does)."""

    persistent: bool = True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        durable = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            venv_bin("redis-server"),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", *(durable if self.persistent else ["--appendonly", "no"]),
            "--daemonize", "no", "--protected-mode", "no",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> float:
        """Start (or start again on the same port and directory); seconds until it answers
        PING with its data loaded."""
        self._spawn(self.argv(), dict(os.environ))
        return self._wait("redis-server", self.answers, timeout)

    def answers(self) -> bool:
        """PING answered with PONG (a loading server answers -LOADING)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def keys(self) -> int:
        """DBSIZE of database 0."""
        import redis

        client: Any = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            return int(client.dbsize())
        finally:
            client.close()


@contextmanager
def redis_server(directory: Path, *, persistent: bool = True) -> Iterator[RedisServer]:
    """A started ``RedisServer`` in ``directory``, stopped on exit."""
    server = RedisServer(directory, persistent=persistent)
    try:
        server.start()
        yield server
    finally:
        server.stop()

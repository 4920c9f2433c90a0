"""The local platform: Prefect server and UI, work pool, deployments, a worker, the MLflow server
and UI (behind a login, ``mlflow_auth``), the webhook gateway, the prediction service and the
governance API, started and stopped as one unit (``make up`` / ``down`` / ``status``).

Every service runs detached in its own session with its pid in ``MLSTEWARD_HOME/run/<name>.pid``
and its output in ``MLSTEWARD_HOME/logs/<name>.log``, so later commands find it again and ``down``
stops exactly what ``up`` started. Children get an explicit environment (their own
``PREFECT_HOME`` and ``PREFECT_API_URL``) instead of whatever Prefect profile the caller has,
and everything binds to loopback unless ``MLSTEWARD_HOST`` says otherwise. Production settings
(PostgreSQL for the Prefect database, the MLflow backend store, Prefect's API auth string) pass
through from the environment untouched.

Only the standard library and our own settings are imported here: ``status`` and a second ``up``
must answer in about a second, without loading Prefect or MLflow.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlsteward.config import paths, settings
from mlsteward.errors import MlstewardError
from mlsteward.platform import processes

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000, "gateway": 8787, "api": 8788, "serving": 8800}
WORKER_NAME = "mlsteward-worker"
START_TIMEOUT = 180.0  # seconds; a cold Prefect server on 2 busy cores needs ~10-30 s
STOP_TIMEOUT = 20.0  # seconds of grace after the stop signal, then SIGKILL
WEBHOOK_PATH = "/hooks/ci"
API_HEALTH_PATH = "/api/v1/health"
GATEWAY_SECRET_VARS = ("MLSTEWARD_WEBHOOK_SECRET", "MLSTEWARD_WEBHOOK_SECRET_BLOCK")
# The governance API never falls back to single-user mode: every request needs a token.
API_ENV = {"MLSTEWARD_AUTH": "required"}
# MLflow asks every request for a login (``mlflow_auth``): people read, one account writes.
MLFLOW_APP = ("--app-name", "basic-auth")

# Quiet defaults for every child (the caller may override them). MLflow's job runner serves
# GenAI features we do not use and would add seven resident processes.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "FEAST_USAGE": "False",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
# Client settings of the caller's own Prefect profile must not leak into the platform.
DROPPED_ENV = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


class PlatformError(MlstewardError):
    """A platform service could not be started or stopped; the message names which and why."""


@dataclass(frozen=True)
class PlatformConfig:
    """Where the platform lives and listens; read from the environment once per command."""

    home: Path
    project_root: Path
    host: str
    prefect_port: int
    mlflow_port: int
    gateway_port: int
    api_port: int
    serving_port: int

    @classmethod
    def from_env(cls) -> PlatformConfig:
        def port(kind: str) -> int:
            var = f"MLSTEWARD_{kind.upper()}_PORT"
            raw = os.environ.get(var) or str(DEFAULT_PORTS[kind])
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise PlatformError(f"{var}={raw!r} is not a TCP port number")
            return int(raw)

        return cls(
            home=settings.home(),
            project_root=paths.project_root(),
            host=os.environ.get("MLSTEWARD_HOST") or DEFAULT_HOST,
            prefect_port=port("prefect"),
            mlflow_port=port("mlflow"),
            gateway_port=port("gateway"),
            api_port=port("api"),
            serving_port=port("serving"),
        )

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def client_host(self) -> str:
        """Where local clients connect: a wildcard bind is reached through loopback."""
        return DEFAULT_HOST if self.host in ("0.0.0.0", "::", "") else self.host

    def url(self, port: int, path: str = "") -> str:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{port}{path}"

    @property
    def prefect_api_url(self) -> str:
        return self.url(self.prefect_port, "/api")

    @property
    def mlflow_backend_store_uri(self) -> str:
        """The store the flows write to, so the UI shows exactly their runs and models."""
        return settings.mlflow_backend_store_uri()


@dataclass(frozen=True)
class Service:
    """One supervised process: how to start it, recognise it and tell that it is ready."""

    name: str
    command: tuple[str, ...]  # what follows ``python -m``; also how we recognise the process
    args: tuple[str, ...]
    port: int | None
    port_var: str | None
    stop_signal: signal.Signals
    url: str | None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", *self.command, *self.args]

    def pid_file(self, cfg: PlatformConfig) -> Path:
        return cfg.run_dir / f"{self.name}.pid"

    def log_file(self, cfg: PlatformConfig) -> Path:
        return cfg.log_dir / f"{self.name}.log"

    def owns(self, cfg: PlatformConfig, pid: int) -> bool:
        return processes.is_ours(pid, ("-m", *self.command), {"MLSTEWARD_HOME": str(cfg.home)})


def prefect_spec(cfg: PlatformConfig) -> dict[str, Any]:
    path = cfg.project_root / "prefect.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise PlatformError(f"{path}: cannot read the deployments ({exc})") from exc


def work_pool_name(cfg: PlatformConfig) -> str:
    """The pool the deployments in prefect.yaml run on (one pool for all of them)."""
    spec = prefect_spec(cfg)
    pools = {d["work_pool"]["name"] for d in spec.get("deployments", [])}
    if len(pools) != 1:
        raise PlatformError(
            f"{cfg.project_root / 'prefect.yaml'}: the platform runs one worker for one work "
            f"pool, but the deployments name {sorted(pools) or 'none'}"
        )
    return pools.pop()


def services(cfg: PlatformConfig) -> dict[str, Service]:
    """The services in start order (``down`` stops them in reverse: workers before servers)."""
    hostport = ("--host", cfg.host)
    return {
        s.name: s
        for s in (
            Service(
                "prefect-server",
                ("prefect", "server", "start"),
                (*hostport, "--port", str(cfg.prefect_port)),
                cfg.prefect_port,
                "MLSTEWARD_PREFECT_PORT",
                signal.SIGTERM,
                cfg.url(cfg.prefect_port),
            ),
            Service(
                "mlflow",
                ("mlflow", "server"),
                (
                    *MLFLOW_APP,
                    "--backend-store-uri",
                    cfg.mlflow_backend_store_uri,
                    *_mlflow_artifact_args(),
                    *hostport,
                    "--port",
                    str(cfg.mlflow_port),
                    "--workers",
                    "1",
                ),
                cfg.mlflow_port,
                "MLSTEWARD_MLFLOW_PORT",
                signal.SIGTERM,
                cfg.url(cfg.mlflow_port),
            ),
            Service(
                "gateway",
                ("mlsteward.gateway",),
                (*hostport, "--port", str(cfg.gateway_port)),
                cfg.gateway_port,
                "MLSTEWARD_GATEWAY_PORT",
                signal.SIGTERM,
                cfg.url(cfg.gateway_port, WEBHOOK_PATH),
            ),
            # Finishes in-flight requests and writes its queued predictions on SIGTERM.
            Service(
                "serving",
                ("mlsteward.serving",),
                (*hostport, "--port", str(cfg.serving_port)),
                cfg.serving_port,
                "MLSTEWARD_SERVING_PORT",
                signal.SIGTERM,
                cfg.url(cfg.serving_port),
            ),
            # The governance API, with authentication on (see ``API_ENV``).
            Service(
                "api",
                ("mlsteward.api",),
                (*hostport, "--port", str(cfg.api_port)),
                cfg.api_port,
                "MLSTEWARD_API_PORT",
                signal.SIGTERM,
                cfg.url(cfg.api_port),
            ),
            # A process worker finishes its flow runs on SIGINT; SIGTERM is only forwarded.
            Service(
                "prefect-worker",
                ("prefect", "worker", "start"),
                ("--pool", work_pool_name(cfg), "--name", WORKER_NAME),
                None,
                None,
                signal.SIGINT,
                None,
            ),
        )
    }


def _mlflow_artifact_args() -> tuple[str, ...]:
    """Local profile: the flows write artifact files themselves and the UI reads them. Through
    a server (production): the server alone holds the object-store credentials and proxies."""
    if settings.mlflow_proxies_artifacts():
        return (
            "--serve-artifacts",
            "--artifacts-destination",
            settings.mlflow_artifacts_destination(),
        )
    return ("--default-artifact-root", settings.mlflow_artifact_root())


@dataclass
class ServiceState:
    name: str
    running: bool
    pid: int | None
    url: str | None
    log: str
    stale_pid: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None or k == "pid"}


def inspect(cfg: PlatformConfig, svc: Service) -> ServiceState:
    """Whether the service recorded in its pid file still runs; a pid not ours counts as stale."""
    pid = processes.read_pid(svc.pid_file(cfg))
    running = pid is not None and svc.owns(cfg, pid)
    port = running_port(pid) if running and pid is not None else None
    url = svc.url
    if port is not None and port != svc.port:
        # Show where it really listens, even if the port settings changed since it started.
        url = cfg.url(port, WEBHOOK_PATH if svc.name == "gateway" else "")
    return ServiceState(
        name=svc.name,
        running=running,
        pid=pid if running else None,
        url=url,
        log=str(svc.log_file(cfg)),
        stale_pid=None if running else pid,
    )


def running_port(pid: int) -> int | None:
    """The ``--port`` a running service was started with."""
    argv = processes.cmdline(pid)
    for flag, value in itertools.pairwise(argv):
        if flag == "--port" and value.isdigit():
            return int(value)
    return None


# ---------------------------------------------------------------------------------------------
# environment, HTTP and readiness


def child_env(cfg: PlatformConfig) -> dict[str, str]:
    """The environment of every platform process: the caller's, pointed at this platform."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    for key, value in QUIET_ENV.items():
        env.setdefault(key, value)
    env.update(
        MLSTEWARD_HOME=str(cfg.home),
        MLSTEWARD_PROJECT_ROOT=str(cfg.project_root),
        PREFECT_HOME=str(cfg.prefect_home),
        PREFECT_API_URL=cfg.prefect_api_url,
        # where rollout flows read the prediction service's metrics
        MLSTEWARD_SERVING_URL=cfg.url(cfg.serving_port),
    )
    if "PREFECT_UI_API_URL" not in env and "PREFECT_SERVER_UI_API_URL" not in env:
        # Without it the UI calls the API on the default port, not on ours.
        env["PREFECT_UI_API_URL"] = cfg.prefect_api_url
    if env.get("PREFECT_SERVER_API_AUTH_STRING"):
        env.setdefault("PREFECT_API_AUTH_STRING", env["PREFECT_SERVER_API_AUTH_STRING"])
    if settings.mlflow_proxies_artifacts():
        # The profile's clients talk to the MLflow server: the one started here.
        env.setdefault("MLSTEWARD_MLFLOW_URL", cfg.url(cfg.mlflow_port))
    elif os.environ.get("MLFLOW_BACKEND_STORE_URI"):
        # Flow runs must write to the store the MLflow UI shows.
        env.setdefault("MLFLOW_TRACKING_URI", os.environ["MLFLOW_BACKEND_STORE_URI"])
    if database := settings.prefect_database_url():
        env.setdefault("PREFECT_SERVER_DATABASE_CONNECTION_URL", database)
    return env


def http_json(url: str, env: dict[str, str], body: Any = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``body`` as JSON); the decoded reply, or ``None`` when there is no answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if auth := env.get("PREFECT_API_AUTH_STRING"):
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise PlatformError(
                f"{url} refused the credentials (HTTP {exc.code}): set PREFECT_API_AUTH_STRING "
                "to the server's PREFECT_SERVER_API_AUTH_STRING"
            ) from exc
        return None
    except (urllib.error.URLError, OSError):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def wait_ready(cfg: PlatformConfig, svc: Service, pid: int, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if not processes.is_alive(pid):
            raise PlatformError(
                f"{svc.name} (pid {pid}) exited while starting; the end of "
                f"{svc.log_file(cfg)}:\n{processes.tail(svc.log_file(cfg))}"
            )
        if time.monotonic() > deadline:
            raise PlatformError(
                f"{svc.name} (pid {pid}) was not ready after {START_TIMEOUT:.0f} s; see "
                f"{svc.log_file(cfg)}"
            )
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# the gateway


def missing_module(svc: Service) -> str | None:
    """Why one of our own services cannot start from this checkout (its package or its
    ``__main__`` is missing), or ``None`` when it can; third-party servers are always there.

    Looked up without importing it: ``up`` must not fail because of a service's own imports.
    """
    import importlib.util

    module = svc.command[0]
    if len(svc.command) != 1 or not module.startswith("mlsteward."):
        return None
    spec = importlib.util.find_spec(module)
    if spec is None:
        return f"not started: {module} is not part of this checkout"
    if spec.submodule_search_locations and not any(
        (Path(loc) / "__main__.py").exists() for loc in spec.submodule_search_locations
    ):
        return f"not started: {module} has no __main__ (python -m {module})"
    return None

"""The local platform: Prefect server and UI, work pool, deployments, a worker, the MLflow UI,
the webhook gateway and the prediction service, started and stopped as one unit (``make up`` /
``down`` / ``status``).

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

import argparse
import base64
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mlsteward.config import paths, profiles, settings
from mlsteward.errors import MlstewardError
from mlsteward.platform import processes
from mlsteward.platform.provision import provision

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000, "gateway": 8787, "serving": 8800}
WORKER_NAME = "mlsteward-worker"
START_TIMEOUT = 180.0  # seconds; a cold Prefect server on 2 busy cores needs ~10-30 s
STOP_TIMEOUT = 20.0  # seconds of grace after the stop signal, then SIGKILL
WEBHOOK_PATH = "/hooks/ci"
GATEWAY_SECRET_VARS = ("MLSTEWARD_WEBHOOK_SECRET", "MLSTEWARD_WEBHOOK_SECRET_BLOCK")

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


def _http(url: str, env: dict[str, str], body: Any = None, timeout: float = 5.0) -> Any:
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


def _wait(cfg: PlatformConfig, svc: Service, pid: int, ready: Callable[[], bool]) -> None:
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
# work pool and deployments


def _prefect_spec(cfg: PlatformConfig) -> dict[str, Any]:
    path = cfg.project_root / "prefect.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise PlatformError(f"{path}: cannot read the deployments ({exc})") from exc


def work_pool_name(cfg: PlatformConfig) -> str:
    """The pool the deployments in prefect.yaml run on (one pool for all of them)."""
    spec = _prefect_spec(cfg)
    pools = {d["work_pool"]["name"] for d in spec.get("deployments", [])}
    if len(pools) != 1:
        raise PlatformError(
            f"{cfg.project_root / 'prefect.yaml'}: the platform runs one worker for one work "
            f"pool, but the deployments name {sorted(pools) or 'none'}"
        )
    return pools.pop()


def deployments_digest(cfg: PlatformConfig) -> str:
    """What a deployment is made of: prefect.yaml, the flows' signatures and the project root."""
    h = hashlib.sha256(str(cfg.project_root).encode())
    for path in [cfg.project_root / "prefect.yaml", *sorted(cfg.project_root.glob("flows/*.py"))]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _deployments_current(cfg: PlatformConfig, env: dict[str, str], pool: str) -> bool:
    stamp = cfg.run_dir / "deployments.sha256"
    if not stamp.exists() or stamp.read_text().strip() != deployments_digest(cfg):
        return False
    names = [d["name"] for d in _prefect_spec(cfg).get("deployments", [])]
    found = _http(
        f"{cfg.prefect_api_url}/deployments/filter",
        env,
        {"deployments": {"name": {"any_": names}}},
    )
    if not isinstance(found, list):
        return False
    here = {
        d["name"]
        for d in found
        if d.get("work_pool_name") == pool and str(cfg.project_root) in _pull_dirs(d)
    }
    return set(names) <= here


def _pull_dirs(deployment: dict[str, Any]) -> list[str]:
    """The checkouts a deployment's runs start in (its ``set_working_directory`` steps)."""
    steps = deployment.get("pull_steps") or []
    key = "prefect.deployments.steps.set_working_directory"
    return [s[key].get("directory", "") for s in steps if isinstance(s.get(key), dict)]


def _prefect_cli(cfg: PlatformConfig, env: dict[str, str], *args: str) -> tuple[int, str]:
    log = cfg.log_dir / "deploy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=cfg.project_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    with log.open("a") as out:
        out.write(f"$ prefect {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    return proc.returncode, proc.stdout + proc.stderr


def ensure_work_pool(cfg: PlatformConfig, env: dict[str, str]) -> str:
    pool = work_pool_name(cfg)
    if _http(f"{cfg.prefect_api_url}/work_pools/{pool}", env) is None:
        rc, out = _prefect_cli(cfg, env, "work-pool", "create", pool, "--type", "process")
        if rc != 0 and "already exists" not in out:
            raise PlatformError(f"creating work pool {pool} failed:\n{out[-2000:]}")
    return pool


def ensure_deployments(cfg: PlatformConfig, env: dict[str, str], pool: str) -> str:
    """(Re)deploy prefect.yaml unless the server already has every deployment as it stands.

    Deploying costs ~10 s, so it runs only when a deployment is missing, points at another
    checkout, or prefect.yaml or a flow changed since the last deploy from this home.
    """
    if _deployments_current(cfg, env, pool):
        return f"work pool {pool}; deployments up to date"
    rc, out = _prefect_cli(cfg, env, "--no-prompt", "deploy", "--all")
    if rc != 0:
        raise PlatformError(
            f"prefect deploy --all failed (see {cfg.log_dir / 'deploy.log'}):\n{out[-2000:]}"
        )
    processes.write_atomic(cfg.run_dir / "deployments.sha256", deployments_digest(cfg) + "\n")
    count = len(_prefect_spec(cfg).get("deployments", []))
    return f"work pool {pool}; {count} deployments created from prefect.yaml"


def _worker_online(
    cfg: PlatformConfig, env: dict[str, str], pool: str, since: datetime
) -> Callable[[], bool]:
    """Ready once our worker has sent a heartbeat since it was started (not an old record)."""

    def ready() -> bool:
        workers = _http(f"{cfg.prefect_api_url}/work_pools/{pool}/workers/filter", env, {})
        for w in workers if isinstance(workers, list) else []:
            beat = w.get("last_heartbeat_time")
            if (
                w.get("name") == WORKER_NAME
                and w.get("status") == "ONLINE"
                and beat
                and datetime.fromisoformat(beat.replace("Z", "+00:00")) >= since
            ):
                return True
        return False

    return ready


# ---------------------------------------------------------------------------------------------
# the gateway


def gateway_unavailable() -> str | None:
    """Why the webhook gateway cannot start here, or ``None`` when it can.

    Looked up without importing it: ``up`` must not fail because of the gateway's own imports.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlsteward.gateway")
    if spec is None:
        return "not started: mlsteward.gateway is not part of this checkout"
    if spec.submodule_search_locations and not any(
        (Path(loc) / "__main__.py").exists() for loc in spec.submodule_search_locations
    ):
        return "not started: mlsteward.gateway has no __main__ (python -m mlsteward.gateway)"
    if not any(os.environ.get(v) for v in GATEWAY_SECRET_VARS):
        return (
            "not started: no webhook secret (set MLSTEWARD_WEBHOOK_SECRET or "
            "MLSTEWARD_WEBHOOK_SECRET_BLOCK; it never runs unauthenticated)"
        )
    return None


# ---------------------------------------------------------------------------------------------
# up / down / status


def _provision() -> str:
    """Create the profile's missing databases before anything needs them (production)."""
    profile = profiles.active()
    if profile.postgres is None and profile.redis_url is None:
        return profile.name
    done = provision(profile)
    created = ", ".join(done["created"]) or "nothing new"
    return f"{profile.name} (created {created}; {len(done['existing'])} already there)"


@contextlib.contextmanager
def _lock(cfg: PlatformConfig) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per home: two concurrent ``up`` must not both start."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.run_dir / "platform.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class UpReport:
    services: list[ServiceState] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)
    deployments: str = ""
    profile: str = "local"


def _discard_stale(cfg: PlatformConfig, svc: Service, state: ServiceState) -> str | None:
    if state.stale_pid is None:
        return None
    svc.pid_file(cfg).unlink(missing_ok=True)
    return f"removed stale pid file (pid {state.stale_pid} is not a running {svc.name})"


def up(cfg: PlatformConfig) -> UpReport:
    """Start what is not running; a second call finds everything running and starts nothing."""
    svcs = services(cfg)
    env = child_env(cfg)
    report = UpReport()
    if cfg.mlflow_backend_store_uri.startswith(("http://", "https://")):
        raise PlatformError(
            f"MLFLOW_BACKEND_STORE_URI={cfg.mlflow_backend_store_uri} is an MLflow server, not a "
            "store an MLflow server can open: set it to the database URI, or unset it"
        )
    with _lock(cfg):
        report.profile = _provision()
        states = {name: inspect(cfg, svc) for name, svc in svcs.items()}
        notes = {name: _discard_stale(cfg, svcs[name], s) for name, s in states.items()}
        gateway_reason = gateway_unavailable()
        wanted = [n for n in svcs if not states[n].running]
        if gateway_reason is not None and "gateway" in wanted:
            wanted.remove("gateway")
        for name in wanted:
            svc = svcs[name]
            if svc.port is not None and processes.port_in_use(cfg.host, svc.port):
                raise PlatformError(
                    f"port {svc.port} ({svc.name}) on {cfg.host} is already in use by a process "
                    f"this platform did not start; stop it or set {svc.port_var} to a free port"
                )
        started: dict[str, int] = {}
        try:
            since = datetime.now().astimezone() - timedelta(seconds=5)
            # The servers start side by side; the worker needs the Prefect server.
            for name in ("prefect-server", "mlflow", "gateway"):
                if name in wanted:
                    started[name] = _start(cfg, svcs[name], env)
            server = svcs["prefect-server"]
            server_pid = started.get(server.name) or states[server.name].pid or 0
            _wait(cfg, server, server_pid, _prefect_healthy(cfg, env))
            pool = ensure_work_pool(cfg, env)
            worker = svcs["prefect-worker"]
            if worker.name in wanted:  # it polls the pool; deploying meanwhile saves ~5 s
                started[worker.name] = _start(cfg, worker, env)
            report.deployments = ensure_deployments(cfg, env, pool)
            if worker.name in started:
                _wait(cfg, worker, started[worker.name], _worker_online(cfg, env, pool, since))
            if "mlflow" in started:
                mlflow = svcs["mlflow"]
                health = cfg.url(cfg.mlflow_port, "/health")
                _wait(cfg, mlflow, started["mlflow"], lambda: _http(health, env) == "OK")
            if "serving" in wanted:
                # Only once MLflow answers: both would create a new store's tables at once
                # ("duplicate column name"). Alive is enough: there may be no champion yet.
                started["serving"] = _start(cfg, svcs["serving"], env)
                alive = cfg.url(cfg.serving_port, "/healthz")
                _wait(
                    cfg, svcs["serving"], started["serving"], lambda: _http(alive, env) is not None
                )
        except BaseException:
            # Leave nothing half-started behind; the original error is the one to report.
            for name in reversed(list(started)):
                with contextlib.suppress(PlatformError):
                    _stop(cfg, svcs[name], started[name])
            raise
        if "gateway" in started:
            gateway = svcs["gateway"]
            try:
                health = cfg.url(cfg.gateway_port, "/health")
                _wait(cfg, gateway, started["gateway"], lambda: _http(health, env) is not None)
            except PlatformError as exc:
                _stop(cfg, gateway, started.pop("gateway"))
                gateway_reason = f"not started: {exc}"
        for name, svc in svcs.items():
            state = inspect(cfg, svc)
            if name in started:
                report.actions[name] = "started"
            elif state.running:
                report.actions[name] = "already running"
            else:
                report.actions[name] = "not started"
                state.note = gateway_reason if name == "gateway" else None
            if notes.get(name) and not state.note:
                state.note = notes[name]
            report.services.append(state)
    return report


def _prefect_healthy(cfg: PlatformConfig, env: dict[str, str]) -> Callable[[], bool]:
    return lambda: _http(f"{cfg.prefect_api_url}/health", env, timeout=2.0) is True


def _start(cfg: PlatformConfig, svc: Service, env: dict[str, str]) -> int:
    pid = processes.spawn(svc.argv(), env, svc.log_file(cfg), cfg.project_root)
    processes.write_pid(svc.pid_file(cfg), pid)
    return pid


def _stop(cfg: PlatformConfig, svc: Service, pid: int) -> set[int]:
    port = running_port(pid)
    family = processes.stop(pid, svc.stop_signal, STOP_TIMEOUT)
    if port is not None and not processes.wait_port_free(cfg.host, port, 10.0):
        raise PlatformError(f"{svc.name}: port {port} is still open after its processes ended")
    svc.pid_file(cfg).unlink(missing_ok=True)
    return family


def down(cfg: PlatformConfig) -> list[dict[str, Any]]:
    """Stop exactly the processes ``up`` recorded (and their children), workers first."""
    svcs = services(cfg)
    result = []
    with _lock(cfg):
        for svc in reversed(list(svcs.values())):
            state = inspect(cfg, svc)
            entry: dict[str, Any] = {"name": svc.name, "pid": state.pid}
            if state.running and state.pid is not None:
                family = _stop(cfg, svc, state.pid)
                survivors = sorted(p for p in family if processes.is_alive(p))
                if survivors:
                    raise PlatformError(f"{svc.name}: processes {survivors} survived SIGKILL")
                entry.update(action="stopped", processes=len(family))
            else:
                entry["action"] = _discard_stale(cfg, svc, state) or "was not running"
            result.append(entry)
    return result


def status(cfg: PlatformConfig) -> list[ServiceState]:
    states = [inspect(cfg, svc) for svc in services(cfg).values()]
    for state in states:
        if state.name == "gateway" and not state.running:
            state.note = gateway_unavailable()
    return states


def running_prefect_api(cfg: PlatformConfig | None = None) -> str | None:
    """The API of the Prefect server ``up`` started for this home, if it runs and answers.

    Found from its pid file and the port it really listens on, so a client needs nothing
    exported; ``None`` when it is not running, not healthy, or the settings cannot be read.
    """
    try:
        cfg = cfg or PlatformConfig.from_env()
        state = inspect(cfg, services(cfg)["prefect-server"])
        if not state.running or state.url is None:
            return None
        api = f"{state.url}/api"
        healthy = _http(f"{api}/health", dict(os.environ), timeout=2.0) is True
    except PlatformError:
        return None
    return api if healthy else None


# ---------------------------------------------------------------------------------------------
# command line


def urls(cfg: PlatformConfig, states: list[ServiceState]) -> dict[str, str | None]:
    """Where a person opens each service; the webhook only when the gateway runs."""
    by_name = {s.name: s for s in states}
    return {
        "prefect_ui": by_name["prefect-server"].url,
        "prefect_api": cfg.prefect_api_url,
        "mlflow_ui": by_name["mlflow"].url,
        "webhook": by_name["gateway"].url if by_name["gateway"].running else None,
        "predictions": by_name["serving"].url,
    }


def _service_line(state: ServiceState, action: str | None = None) -> str:
    what = action or ("running" if state.running else "stopped")
    pid = f"pid {state.pid}" if state.pid else ""
    line = f"  {state.name:<15} {what:<16} {pid:<10} {state.url or ''}".rstrip()
    return line + (f"\n  {'':<15} {state.note}" if state.note else "")


def _print_up(cfg: PlatformConfig, report: UpReport) -> None:
    print(f"mlsteward platform (state in {cfg.home}; profile {report.profile})")
    for state in report.services:
        print(_service_line(state, report.actions[state.name]))
    print(f"  {report.deployments}")
    links = urls(cfg, report.services)
    print()
    print(f"Prefect UI   {links['prefect_ui']}")
    print(f"MLflow UI    {links['mlflow_ui']}")
    print(f"Webhook      {links['webhook'] or 'not started (see gateway above)'}")
    print(f"Predictions  {links['predictions']}/v1/models/<model>/predict   (docs: /docs)")
    profile = os.environ.get("MLSTEWARD_PROFILE")
    same = f" (with MLSTEWARD_PROFILE={profile})" if profile else ""
    print(f"\nmlsteward commands find this Prefect server by themselves{same}; other clients:")
    print(f"  export PREFECT_API_URL={cfg.prefect_api_url}")
    print(f"Logs: {cfg.log_dir}   pids: {cfg.run_dir}")
    print("Stop with: make down   (or python -m mlsteward.platform down)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlsteward.platform",
        description="Start, stop or show the local platform (Prefect, worker, MLflow, gateway, "
        "prediction service).",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    try:
        cfg = PlatformConfig.from_env()
        if args.command == "up":
            report = up(cfg)
            doc: dict[str, Any] = {
                "home": str(cfg.home),
                "services": [
                    {**s.to_dict(), "action": report.actions[s.name]} for s in report.services
                ],
                "deployments": report.deployments,
                "profile": report.profile,
                "urls": urls(cfg, report.services),
            }
            if not args.json:
                _print_up(cfg, report)
        elif args.command == "down":
            stopped = down(cfg)
            doc = {"home": str(cfg.home), "services": stopped}
            if not args.json:
                for entry in stopped:
                    pid = f"pid {entry['pid']}" if entry["pid"] else ""
                    print(f"  {entry['name']:<15} {entry['action']} {pid}".rstrip())
        else:
            states = status(cfg)
            # A gateway that cannot run here (no module or no secret) does not count as down.
            expected = [s for s in states if not (s.name == "gateway" and s.note)]
            doc = {
                "home": str(cfg.home),
                "running": all(s.running for s in expected),
                "services": [s.to_dict() for s in states],
                "urls": urls(cfg, states),
            }
            if not args.json:
                profile = profiles.active().name
                print(f"mlsteward platform (state in {cfg.home}; profile {profile})")
                for state in states:
                    print(_service_line(state))
    except PlatformError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **doc}, indent=2))
    return 0

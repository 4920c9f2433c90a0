"""``up``, ``down`` and ``status``: start the platform's services in order and wait for each to
answer, stop exactly what was started, and report what runs (one ``up`` at a time per home).
The first ``up`` also makes the credentials the services authenticate with (``credentials``),
and MLflow runs behind a login (``mlflow_auth``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mlsteward.config import profiles
from mlsteward.platform import processes
from mlsteward.platform.credentials import (
    MLFLOW_PASSWORD_FILE,
    WEBHOOK_SECRET_VAR,
    Credentials,
    ensure_credentials,
    secrets_dir,
)
from mlsteward.platform.deployments import (
    ensure_alert_automations,
    ensure_deployments,
    ensure_work_pool,
    worker_online,
)
from mlsteward.platform.mlflow_auth import check_governance_login
from mlsteward.platform.provision import provision
from mlsteward.platform.services import (
    API_ENV,
    API_HEALTH_PATH,
    STOP_TIMEOUT,
    PlatformConfig,
    PlatformError,
    Service,
    ServiceState,
    child_env,
    http_json,
    inspect,
    missing_module,
    running_port,
    services,
    wait_ready,
)


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
    credentials: Credentials | None = None


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
    _refuse_server_as_store(cfg)
    with _lock(cfg):
        report.profile = _provision()
        report.credentials = ensure_credentials(cfg.home)
        envs = _service_envs(cfg, svcs, env, report.credentials)
        states = {name: inspect(cfg, svc) for name, svc in svcs.items()}
        notes = {name: _discard_stale(cfg, svcs[name], s) for name, s in states.items()}
        notes["gateway"] = notes["gateway"] or _older_secret(states["gateway"], envs["gateway"])
        reasons = {name: why for name, svc in svcs.items() if (why := missing_module(svc))}
        wanted = _wanted(cfg, svcs, states, skip=set(reasons))
        started: dict[str, int] = {}
        try:
            report.deployments = _start_in_order(cfg, svcs, states, wanted, env, envs, started)
        except BaseException:
            # Leave nothing half-started behind; the original error is the one to report.
            for name in reversed(list(started)):
                with contextlib.suppress(PlatformError):
                    _stop(cfg, svcs[name], started[name])
            raise
        if why := _settle_gateway(cfg, svcs["gateway"], env, started):
            reasons["gateway"] = why
        report.actions, report.services = _summary(cfg, svcs, started, notes, reasons)
    return report


RUN_HEARTBEAT = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
"""The worker's runs send a heartbeat every 30 s (Prefect's default is 180 s), so the reaper's
default timeout (twice that, at least 300 s) finds a run whose process died within minutes."""


def _service_envs(
    cfg: PlatformConfig, svcs: dict[str, Service], env: dict[str, str], credentials: Credentials
) -> dict[str, dict[str, str]]:
    """Each service's environment: the platform's, with the webhook secret for the gateway
    alone (no other process needs it), authentication on for the governance API, a viewer's
    token for the worker (its rollouts read the prediction service), MLflow's basic auth for
    its server, the governance account's MLflow login for the processes that write to it, and
    frequent run heartbeats for the worker's runs (the reaper judges by them)."""
    mlflow_login = credentials.mlflow_client_env()
    extra = {
        "gateway": credentials.gateway_env(),
        "mlflow": credentials.mlflow_server_env(cfg.home),
        "api": {**API_ENV, **mlflow_login},
        "serving": mlflow_login,
        "prefect-worker": {**credentials.worker_env(), **mlflow_login, **RUN_HEARTBEAT},
    }
    return {name: {**env, **extra.get(name, {})} for name in svcs}


def _older_secret(state: ServiceState, gateway_env: dict[str, str]) -> str | None:
    """A running gateway keeps the secret it started with: say so when that is not the current
    one (the file was deleted for a new one, or another secret was exported)."""
    wanted = gateway_env.get(WEBHOOK_SECRET_VAR)
    if not state.running or state.pid is None or not wanted:
        return None
    if processes.environ(state.pid).get(WEBHOOK_SECRET_VAR) == wanted:
        return None
    return "checks an older webhook secret: make down && make up to use the current one"


def _refuse_server_as_store(cfg: PlatformConfig) -> None:
    if cfg.mlflow_backend_store_uri.startswith(("http://", "https://")):
        raise PlatformError(
            f"MLFLOW_BACKEND_STORE_URI={cfg.mlflow_backend_store_uri} is an MLflow server, not a "
            "store an MLflow server can open: set it to the database URI, or unset it"
        )


def _wanted(
    cfg: PlatformConfig,
    svcs: dict[str, Service],
    states: dict[str, ServiceState],
    *,
    skip: set[str],
) -> list[str]:
    """The services to start; refused before any starts if a port is taken by a stranger."""
    wanted = [n for n in svcs if not states[n].running and n not in skip]
    for name in wanted:
        svc = svcs[name]
        if svc.port is not None and processes.port_in_use(cfg.host, svc.port):
            raise PlatformError(
                f"port {svc.port} ({svc.name}) on {cfg.host} is already in use by a process "
                f"this platform did not start; stop it or set {svc.port_var} to a free port"
            )
    return wanted


def _start_in_order(
    cfg: PlatformConfig,
    svcs: dict[str, Service],
    states: dict[str, ServiceState],
    wanted: list[str],
    env: dict[str, str],
    envs: dict[str, dict[str, str]],
    started: dict[str, int],
) -> str:
    """Start the wanted services, filling ``started`` as each starts (so a failure can stop
    them); the deployments' summary. ``env`` is the platform's own, ``envs`` each service's."""
    since = datetime.now().astimezone() - timedelta(seconds=5)
    # The servers start side by side; the worker needs the Prefect server.
    for name in ("prefect-server", "mlflow", "gateway"):
        if name in wanted:
            started[name] = _start(cfg, svcs[name], envs[name])
    server = svcs["prefect-server"]
    server_pid = started.get(server.name) or states[server.name].pid or 0
    wait_ready(cfg, server, server_pid, _prefect_healthy(cfg, env))
    pool = ensure_work_pool(cfg, env)
    worker = svcs["prefect-worker"]
    if worker.name in wanted:  # it polls the pool; deploying meanwhile saves ~5 s
        started[worker.name] = _start(cfg, worker, envs[worker.name])
    deployments = ensure_deployments(cfg, env, pool)
    deployments += "; " + ensure_alert_automations(cfg, env)
    if worker.name in started:
        wait_ready(cfg, worker, started[worker.name], worker_online(cfg, env, pool, since))
    if "mlflow" in started:
        health = cfg.url(cfg.mlflow_port, "/health")
        wait_ready(cfg, svcs["mlflow"], started["mlflow"], lambda: http_json(health, env) == "OK")
    _check_mlflow_login(cfg, svcs["mlflow"], envs["mlflow"])
    # Only once MLflow answers: they would create a new store's tables at the same time as the
    # MLflow server ("duplicate column name"). Alive is enough: there may be no champion yet.
    alive = {
        "serving": cfg.url(cfg.serving_port, "/healthz"),
        "api": cfg.url(cfg.api_port, API_HEALTH_PATH),
    }
    late = [name for name in alive if name in wanted]
    for name in late:
        started[name] = _start(cfg, svcs[name], envs[name])
    for name in late:
        wait_ready(cfg, svcs[name], started[name], _answers(alive[name], env))
    return deployments


def _check_mlflow_login(cfg: PlatformConfig, mlflow: Service, mlflow_env: dict[str, str]) -> None:
    """The running MLflow server (just started or found running) takes the governance login
    its clients are about to get."""
    state = inspect(cfg, mlflow)
    if state.running and state.url is not None:
        check_governance_login(
            state.url,
            mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"],
            secrets_dir(cfg.home) / MLFLOW_PASSWORD_FILE,
        )


def _settle_gateway(
    cfg: PlatformConfig, gateway: Service, env: dict[str, str], started: dict[str, int]
) -> str | None:
    """Wait for a started gateway; one that never answers is stopped and the rest keep running
    (the loop works without webhooks). Why it is not running, or None."""
    if gateway.name not in started:
        return None
    try:
        health = cfg.url(cfg.gateway_port, "/health")
        wait_ready(cfg, gateway, started[gateway.name], lambda: http_json(health, env) is not None)
    except PlatformError as exc:
        _stop(cfg, gateway, started.pop(gateway.name))
        return f"not started: {exc}"
    return None


def _summary(
    cfg: PlatformConfig,
    svcs: dict[str, Service],
    started: dict[str, int],
    notes: dict[str, str | None],
    reasons: dict[str, str],
) -> tuple[dict[str, str], list[ServiceState]]:
    actions: dict[str, str] = {}
    states: list[ServiceState] = []
    for name, svc in svcs.items():
        state = inspect(cfg, svc)
        if name in started:
            actions[name] = "started"
        elif state.running:
            actions[name] = "already running"
        else:
            actions[name] = "not started"
            state.note = reasons.get(name)
        if notes.get(name) and not state.note:
            state.note = notes[name]
        states.append(state)
    return actions, states


def _answers(url: str, env: dict[str, str]) -> Callable[[], bool]:
    return lambda: http_json(url, env) is not None


def _prefect_healthy(cfg: PlatformConfig, env: dict[str, str]) -> Callable[[], bool]:
    return lambda: http_json(f"{cfg.prefect_api_url}/health", env, timeout=2.0) is True


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
    states = []
    for svc in services(cfg).values():
        state = inspect(cfg, svc)
        if not state.running:
            state.note = missing_module(svc)
        states.append(state)
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
        healthy = http_json(f"{api}/health", dict(os.environ), timeout=2.0) is True
    except PlatformError:
        return None
    return api if healthy else None

"""The Prefect side of the platform: the work pool, the deployments of ``prefect.yaml`` (written
from the model configs, applied again only when they changed) and the worker's heartbeat.

Standard library and YAML only, like the rest of the platform: ``up`` must not load Prefect.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mlsteward.errors import ConfigError
from mlsteward.platform import prefect_yaml, processes
from mlsteward.platform.services import (
    WORKER_NAME,
    PlatformConfig,
    PlatformError,
    http_json,
    prefect_spec,
    work_pool_name,
)


def deployments_digest(cfg: PlatformConfig) -> str:
    """What a deployment is made of: prefect.yaml, the flows' signatures, the project root and
    what each model config gives its deployments (its name and schedules), so a new or changed
    model deploys again even where prefect.yaml was not yet written from it."""
    h = hashlib.sha256(str(cfg.project_root).encode())
    for path in [cfg.project_root / "prefect.yaml", *sorted(cfg.project_root.glob("flows/*.py"))]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    models = prefect_yaml.declared_models(prefect_yaml.models_dir(cfg.project_root))
    h.update(json.dumps([m.to_dict() for m in models], sort_keys=True).encode())
    return h.hexdigest()


def _deployments_current(cfg: PlatformConfig, env: dict[str, str], pool: str) -> bool:
    stamp = cfg.run_dir / "deployments.sha256"
    if not stamp.exists() or stamp.read_text().strip() != deployments_digest(cfg):
        return False
    names = [d["name"] for d in prefect_spec(cfg).get("deployments", [])]
    found = http_json(
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


def _run_logged(
    cfg: PlatformConfig, env: dict[str, str], argv: list[str], label: str, timeout: float
) -> tuple[int, str, str]:
    """A deploy step in its own process, its output appended to ``deploy.log`` under ``label``;
    exit code, stdout and stderr."""
    log = cfg.log_dir / "deploy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        argv, cwd=cfg.project_root, env=env, capture_output=True, text=True, timeout=timeout
    )
    with log.open("a") as out:
        out.write(f"$ {label}\n{proc.stdout}{proc.stderr}\n")
    return proc.returncode, proc.stdout, proc.stderr


def _prefect_cli(cfg: PlatformConfig, env: dict[str, str], *args: str) -> tuple[int, str]:
    argv = [sys.executable, "-m", "prefect", *args]
    rc, out, err = _run_logged(cfg, env, argv, f"prefect {' '.join(args)}", 600)
    return rc, out + err


def ensure_work_pool(cfg: PlatformConfig, env: dict[str, str]) -> str:
    pool = work_pool_name(cfg)
    if http_json(f"{cfg.prefect_api_url}/work_pools/{pool}", env) is None:
        rc, out = _prefect_cli(cfg, env, "work-pool", "create", pool, "--type", "process")
        if rc != 0 and "already exists" not in out:
            raise PlatformError(f"creating work pool {pool} failed:\n{out[-2000:]}")
    return pool


def write_deployment_files(cfg: PlatformConfig) -> list[str]:
    """Write prefect.yaml and its Kubernetes variant again from config/models; the files that
    changed.

    Written rather than checked and refused: the files are a pure function of the committed
    model configs, so writing them can only make the deploy match the configs, and adding a
    model is then adding its YAML and running ``make up``. The copies in git stay reviewed all
    the same: a unit test fails while they differ from what the configs render.
    """
    try:
        return prefect_yaml.write(cfg.project_root)
    except ConfigError as exc:
        raise PlatformError(f"the deployments cannot be written: {exc}") from exc


def ensure_deployments(cfg: PlatformConfig, env: dict[str, str], pool: str) -> str:
    """(Re)deploy prefect.yaml, written from the model configs first, unless the server already
    has every deployment as it stands.

    Deploying costs ~10 s, so it runs only when a deployment is missing, points at another
    checkout, or prefect.yaml, a flow or a model's deployments changed since the last deploy
    from this home.
    """
    written = write_deployment_files(cfg)
    note = f" ({', '.join(written)} written from config/models)" if written else ""
    if _deployments_current(cfg, env, pool):
        return f"work pool {pool}; deployments up to date{note}"
    rc, out = _prefect_cli(cfg, env, "--no-prompt", "deploy", "--all")
    if rc != 0:
        raise PlatformError(
            f"prefect deploy --all failed (see {cfg.log_dir / 'deploy.log'}):\n{out[-2000:]}"
        )
    processes.write_atomic(cfg.run_dir / "deployments.sha256", deployments_digest(cfg) + "\n")
    count = len(prefect_spec(cfg).get("deployments", []))
    return f"work pool {pool}; {count} deployments created from prefect.yaml{note}"


def ensure_alert_automations(cfg: PlatformConfig, env: dict[str, str]) -> str:
    """Each model's notification blocks and automation as its config says
    (``mlsteward alerts sync``, in a process of its own: ``up`` does not load Prefect)."""
    argv = [sys.executable, "-m", "mlsteward.cli", "alerts", "sync", "--json"]
    rc, out, err = _run_logged(cfg, env, argv, "mlsteward alerts sync --json", 300)
    try:
        answer = json.loads(out)
    except json.JSONDecodeError:
        answer = None
    if rc != 0 or not isinstance(answer, dict):
        why = answer.get("error") if isinstance(answer, dict) else err[-2000:]
        raise PlatformError(f"the alert notifications cannot be set up: {why}")
    notified = [m["model"] for m in answer["models"] if m["blocks"]]
    return (
        f"alert notifications for {', '.join(notified)}"
        if notified
        else "alerts as events and audit records (no channels configured)"
    )


def worker_online(
    cfg: PlatformConfig, env: dict[str, str], pool: str, since: datetime
) -> Callable[[], bool]:
    """Ready once our worker has sent a heartbeat since it was started (not an old record)."""

    def ready() -> bool:
        workers = http_json(f"{cfg.prefect_api_url}/work_pools/{pool}/workers/filter", env, {})
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

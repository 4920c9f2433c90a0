"""A trained stack for the serving and rollout tests: champion v1, challenger v2, online store,
the prediction service as a real subprocess, and live traffic against it.

Training is the slow part, so each test module shares one home (it overrides the per-test
``mlsteward_home``); tests that change aliases or canary tags put them back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flows.ingestion import ingestion_flow, materialize_flow
from flows.training import training_flow
from mlsteward.config.models import get_model_config
from mlsteward.data.synthetic import generate_cohort, write_dataset
from mlsteward.serving.app import create_app
from mlsteward.serving.settings import ServingSettings
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, WEAK_TUNING, write_config
from tests.support.platform import free_port


@contextmanager
def module_home(
    tmp_path_factory: pytest.TempPathFactory, name: str, **config: Any
) -> Iterator[Path]:
    """One MLSTEWARD_HOME and model config for a test module (it overrides the per-test one),
    the config written with ``config`` overrides (default: fast tuning)."""
    home = tmp_path_factory.mktemp(name) / "home"
    config_dir = home.parent / "config"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(home))
        mp.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
        mp.setenv("MLSTEWARD_CONFIG_DIR", str(config_dir))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLSTEWARD_SNAPSHOT_ROOT", raising=False)
        mp.delenv("MLSTEWARD_SERVING_FAULTS", raising=False)
        write_config(config_dir, **(config or {"tuning": FAST_TUNING}))
        yield home


FAST_TUNING = {"max_evals": 1, "num_boost_round": 60}


def train_two_versions(work: Path) -> dict[str, Any]:
    """On a 3,000-row cohort written to ``work``: v1 a weak model, promoted (champion); v2 a
    better one that passes every gate, the champion comparison included, but is not promoted:
    the challenger."""
    cohort = write_dataset(generate_cohort(n_rows=3_000, seed=5), work / "cohort.parquet")
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    write_config(config_dir, tuning=WEAK_TUNING)
    ingestion_flow(model=MODEL, source=str(cohort))
    first = training_flow(model=MODEL)
    assert first.governance.decision == "promoted", first.governance
    write_config(config_dir, tuning=FAST_TUNING)
    second = training_flow(model=MODEL, promote=False)
    assert second.governance.decision == "challenger", second.governance
    materialize_flow(model=MODEL)
    entities = pd.read_parquet(cohort, columns=["patient_id"])["patient_id"].unique().tolist()
    return {"champion": first.version, "challenger": second.version, "ids": entities}


@contextmanager
def serving(faults: dict[str, Any] | None = None) -> Iterator[TestClient]:
    settings = ServingSettings(models=[MODEL], faults=faults or {})
    app = create_app([get_model_config(MODEL)], settings)
    with TestClient(app) as client:
        yield client


SERVICE_SETTINGS = {"serving": {"poll_seconds": 0.2, "log_flush_seconds": 0.2}}


READY_TIMEOUT_SECONDS = 90.0


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, as ``make down`` sends it; the exit status (uvicorn re-raises the signal
        after its graceful shutdown, so -SIGTERM is the normal one)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@contextmanager
def running_service(
    home: Path, model: str, faults: dict[str, Any] | None = None
) -> Iterator[Service]:
    """``python -m mlsteward.serving`` on a free port with the test's home; SIGTERM on exit."""
    port = free_port()
    env = {
        **os.environ,
        "MLSTEWARD_HOME": os.environ["MLSTEWARD_HOME"],
        "MLSTEWARD_CONFIG_DIR": os.environ["MLSTEWARD_CONFIG_DIR"],
        "MLSTEWARD_PROJECT_ROOT": os.environ["MLSTEWARD_PROJECT_ROOT"],
    }
    env.pop("MLSTEWARD_SERVING_FAULTS", None)
    if faults:
        env["MLSTEWARD_SERVING_FAULTS"] = json.dumps(faults)
    log_path = home.parent / f"serving-{port}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.serving", "--port", str(port), "--model", model,
             "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    service = Service(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"service exited {process.returncode}:\n{service.log_tail()}")
            try:
                if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"service not ready in time:\n{service.log_tail()}")
            time.sleep(0.3)
        yield service
    finally:
        service.stop()


@dataclass
class Traffic:
    """Counts of what the background client sent and got back."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    arms: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@contextmanager
def live_traffic(
    url: str, model: str, ids: list[Any], per_request: int = 3, threads: int = 2
) -> Iterator[Traffic]:
    """Clients posting ``entity_ids`` continuously (cycling through ``ids``) until the block
    ends."""
    stats = Traffic()
    stop = threading.Event()
    lock = threading.Lock()

    def run(offset: int) -> None:
        n = offset
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                batch = [ids[(n + k) % len(ids)] for k in range(per_request)]
                n += per_request * threads
                try:
                    r = client.post(f"/v1/models/{model}/predict", json={"entity_ids": batch})
                    ok = r.status_code == 200
                    arms = [p.get("arm", "") for p in r.json()["predictions"]] if ok else []
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    ok, arms = False, []
                    with lock:
                        stats.errors.append(str(exc))
                with lock:
                    stats.sent += 1
                    stats.answered += ok
                    stats.failed += not ok
                    for a in arms:
                        stats.arms[a] = stats.arms.get(a, 0) + 1

    workers = [
        threading.Thread(target=run, args=(t * per_request,), daemon=True) for t in range(threads)
    ]
    for w in workers:
        w.start()
    try:
        yield stats
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)

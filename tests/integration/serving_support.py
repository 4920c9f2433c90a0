"""A trained stack for the serving and rollout tests: champion v1, challenger v2, online store.

Training is the slow part, so each test module shares one home (it overrides the per-test
``mlsteward_home``); tests that change aliases or canary tags put them back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flows.ingestion import ingestion_flow, materialize_flow
from flows.training import training_flow
from mlsteward.config import get_model_config
from mlsteward.serving.app import create_app
from mlsteward.serving.settings import ServingSettings
from tests.conftest import REPO_ROOT
from tests.integration.governance_support import MODEL, WEAK_TUNING, write_config


@contextmanager
def module_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    home = tmp_path_factory.mktemp(name) / "home"
    config_dir = home.parent / "config"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(home))
        mp.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
        mp.setenv("MLSTEWARD_CONFIG_DIR", str(config_dir))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLSTEWARD_SNAPSHOT_ROOT", raising=False)
        mp.delenv("MLSTEWARD_SERVING_FAULTS", raising=False)
        write_config(config_dir, tuning=FAST_TUNING)
        yield home


FAST_TUNING = {"max_evals": 1, "num_boost_round": 60}


def train_two_versions(cohort: Path) -> dict[str, Any]:
    """v1 a weak model, promoted (champion); v2 a better one that passes every gate, the
    champion comparison included, but is not promoted: the challenger."""
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    write_config(config_dir, tuning=WEAK_TUNING)
    ingestion_flow(model=MODEL, source=str(cohort))
    first = training_flow(model=MODEL)
    assert first["governance"]["decision"] == "promoted", first["governance"]
    write_config(config_dir, tuning=FAST_TUNING)
    second = training_flow(model=MODEL, promote=False)
    assert second["governance"]["decision"] == "challenger", second["governance"]
    materialize_flow(model=MODEL)
    entities = pd.read_parquet(cohort, columns=["patient_id"])["patient_id"].unique().tolist()
    return {"champion": first["version"], "challenger": second["version"], "ids": entities}


@contextmanager
def serving(faults: dict[str, Any] | None = None) -> Iterator[TestClient]:
    settings = ServingSettings(models=[MODEL], faults=faults or {})
    app = create_app([get_model_config(MODEL)], settings)
    with TestClient(app) as client:
        yield client


SERVICE_SETTINGS = {"serving": {"poll_seconds": 0.2, "log_flush_seconds": 0.2}}


class ServiceProcess:
    """``python -m mlsteward.serving`` on a free loopback port, as ``make up`` runs it."""

    def __init__(self, port: int, log_path: Path, faults: dict[str, Any] | None = None) -> None:
        import json

        env = dict(os.environ)
        if faults:
            env["MLSTEWARD_SERVING_FAULTS"] = json.dumps(faults)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.serving", "--port", str(port), "--model", MODEL,
             "--log-level", "warning"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"service not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

"""One model's broken YAML does not stop the platform's servers: the prediction service and the
webhook gateway start as ``make up`` starts them, serve the valid models, and name the broken
file and key (in their log, ``/readyz`` to a caller who may read, and ``/health``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsteward.config.models import model_names
from tests.conftest import REPO_ROOT
from tests.support.platform import free_port
from tests.support.serving import bearer, issue_token
from tests.support.stack import stop_process, wait_for

BROKEN = "broken"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The project's config plus ``broken.yaml``: the demo model with one key set wrong."""
    conf = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", conf)
    text = (conf / "models" / "heart_disease.yaml").read_text()
    assert "name: heart_disease\n" in text and "  max_evals: 20\n" in text
    text = text.replace("name: heart_disease\n", f"name: {BROKEN}\n")
    (conf / "models" / f"{BROKEN}.yaml").write_text(text.replace("max_evals: 20", "max_evals: x"))
    return conf


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


@pytest.fixture
def start(tmp_path: Path, config_dir: Path) -> Iterator[Any]:
    """Start ``python -m MODULE`` on a free port with the broken config; stopped afterwards."""
    procs: list[subprocess.Popen[str]] = []

    def run(module: str, health: str, **env: str) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"{module}.log"
        environ = {**os.environ, "MLSTEWARD_CONFIG_DIR": str(config_dir), **env}
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--port", str(port)],
                env=environ,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, f"{module} exited:\n{log.read_text()[-3000:]}"
            return call(base + health)[0] == 200

        wait_for(f"{module} to answer {health}", up, timeout=180)
        return base, log

    yield run
    for proc in procs:
        stop_process(proc)


def test_the_prediction_service_serves_the_valid_models_and_names_the_broken_one(
    start: Any, config_dir: Path
) -> None:
    base, log = start("mlsteward.serving", "/healthz")
    broken_file = str(config_dir / "models" / f"{BROKEN}.yaml")
    token = issue_token("viewer")

    assert call(f"{base}/readyz") == (503, {"ready": False})  # details need a token
    status, ready = call(f"{base}/readyz", token=token)
    assert status == 503  # a new home: no champion yet, for the model that is served
    assert sorted(ready["models"]) == model_names(REPO_ROOT / "config" / "models")
    problem = ready["config_errors"][BROKEN]
    assert problem.startswith(broken_file) and "tuning.max_evals" in problem

    status, answer = call(f"{base}/v1/models/{BROKEN}/predict", {"entity_ids": [1]}, token)
    assert status == 404
    assert "its config is broken" in answer["detail"][0]["msg"]
    assert "tuning.max_evals" in answer["detail"][0]["msg"]
    assert call(f"{base}/v1/models/heart_disease", token=token)[0] == 200
    assert f"not serving {BROKEN}: {broken_file}" in log.read_text()


def test_the_gateway_starts_and_names_the_broken_config(start: Any, config_dir: Path) -> None:
    base, log = start(
        "mlsteward.gateway",
        "/health",
        MLSTEWARD_WEBHOOK_SECRET="broken-config-test-secret",
        PREFECT_API_URL="http://127.0.0.1:9/api",  # no run is started here
    )
    health = call(f"{base}/health")[1]
    assert health["ok"] is True
    assert list(health["config_errors"]) == [BROKEN]
    assert "tuning.max_evals" in health["config_errors"][BROKEN]
    assert f"model {BROKEN}: runs it starts will fail" in log.read_text()

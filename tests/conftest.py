"""Shared fixtures: every test gets its own MLSTEWARD_HOME, so state never leaks between tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("FEAST_USAGE", "False")


@pytest.fixture(autouse=True)
def mlsteward_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlsteward_home"
    monkeypatch.setenv("MLSTEWARD_HOME", str(home))
    monkeypatch.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
    monkeypatch.delenv("MLSTEWARD_CONFIG_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLSTEWARD_PROFILE", raising=False)
    return home

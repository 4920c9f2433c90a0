"""Where state lives. Everything is under one home directory so a run is easy to inspect or wipe.

Environment variables override locations (``MLSTEWARD_HOME``, ``MLSTEWARD_CONFIG_DIR``,
``MLFLOW_TRACKING_URI``) so the same code runs embedded (SQLite, no server) or against a
production profile. Paths are computed on each call, never at import, so tests can repoint them.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    return Path(os.environ.get("MLSTEWARD_PROJECT_ROOT", os.getcwd())).resolve()


def config_dir() -> Path:
    env = os.environ.get("MLSTEWARD_CONFIG_DIR")
    return Path(env).resolve() if env else project_root() / "config"


def home() -> Path:
    env = os.environ.get("MLSTEWARD_HOME")
    path = Path(env).expanduser() if env else project_root() / ".mlsteward"
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(*parts: str) -> Path:
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlflow_dir() -> Path:
    return _sub("mlflow")


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return os.environ.get("MLSTEWARD_ARTIFACT_ROOT") or (mlflow_dir() / "artifacts").as_uri()


def feast_dir() -> Path:
    return _sub("feast")


def snapshot_root() -> Path:
    """Root of the content-addressed snapshot store: ``MLSTEWARD_SNAPSHOT_ROOT`` (any mounted
    filesystem path, e.g. shared storage), by default ``MLSTEWARD_HOME/snapshots``."""
    env = os.environ.get("MLSTEWARD_SNAPSHOT_ROOT")
    path = Path(env).expanduser().resolve() if env else home() / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def snapshots_dir(model: str) -> Path:
    path = snapshot_root() / model
    path.mkdir(parents=True, exist_ok=True)
    return path


def reproductions_dir(model: str) -> Path:
    """Reports and rebuilt artifacts of ``mlsteward reproduce`` runs."""
    return _sub("reproductions", model)


def predictions_dir(model: str) -> Path:
    """The append-only prediction log of one model (one parquet file per scored batch)."""
    return _sub("predictions", model)


def quarantine_dir(model: str) -> Path:
    return _sub("quarantine", model)


def state_dir() -> Path:
    return _sub("state")


def feature_repo_dir() -> Path:
    env = os.environ.get("MLSTEWARD_FEATURE_REPO")
    return Path(env).resolve() if env else project_root() / "feature_repo"


def audit_url() -> str:
    """Where the audit trail lives: ``MLSTEWARD_AUDIT_URL`` (``sqlite:///…`` or
    ``postgresql://…``), by default a SQLite file under the home directory."""
    return os.environ.get("MLSTEWARD_AUDIT_URL") or f"sqlite:///{_sub('audit') / 'audit.db'}"


def scored_dir(model: str) -> Path:
    """Scored batches (one parquet per scoring run), for people and downstream systems."""
    return _sub("scored", model)


def drift_reports_dir(model: str) -> Path:
    """Evidently HTML reports of drift runs."""
    return _sub("reports", "drift", model)


DEFAULT_SERVING_PORT = 8800


def serving_url() -> str:
    """Where the prediction service answers: ``MLSTEWARD_SERVING_URL``, or loopback on
    ``MLSTEWARD_SERVING_PORT`` (default 8800), as ``make up`` starts it."""
    url = os.environ.get("MLSTEWARD_SERVING_URL", "").strip()
    if url:
        return url.rstrip("/")
    port = os.environ.get("MLSTEWARD_SERVING_PORT", "").strip() or str(DEFAULT_SERVING_PORT)
    return f"http://127.0.0.1:{port}"

"""A throwaway production profile on this machine's PostgreSQL and Redis.

Each use gets its own database prefix and Feast project (so its own databases and Redis keys),
provisioned through the same code ``make up PROFILE=production`` runs and dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mlsteward.config import profiles
from mlsteward.platform.provision import drop, provision

POSTGRES_URL = os.environ.get("MLSTEWARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MLSTEWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def production_profile(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[profiles.Profile]:
    """Switch this process to a fresh production profile; drop everything it made on exit."""
    name = f"t{secrets.token_hex(5)}"
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLSTEWARD_AUDIT_URL",
                "PREFECT_SERVER_DATABASE_CONNECTION_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLSTEWARD_PROFILE", "production")
    monkeypatch.setenv("MLSTEWARD_POSTGRES_URL", POSTGRES_URL)
    monkeypatch.setenv("MLSTEWARD_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("MLSTEWARD_DB_PREFIX", name)
    monkeypatch.setenv("MLSTEWARD_FEAST_PROJECT", name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    profile = profiles.active()
    provision(profile)
    try:
        yield profile
    finally:
        drop(profile)

"""A trained stack for the serving and rollout tests: champion v1, challenger v2, online store.

Training is the slow part, so each test module shares one home (it overrides the per-test
``mlsteward_home``); tests that change aliases or canary tags put them back.
"""

from __future__ import annotations

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
        write_config(config_dir, tuning={"max_evals": 1, "num_boost_round": 60})
        yield home


def train_two_versions(cohort: Path) -> dict[str, Any]:
    """v1 promoted (champion); v2 a weaker model that passes the gates but stays challenger."""
    ingestion_flow(model=MODEL, source=str(cohort))
    first = training_flow(model=MODEL)
    assert first["governance"]["decision"] == "promoted", first["governance"]
    second = training_flow(model=MODEL, promote=False)
    materialize_flow(model=MODEL)
    entities = pd.read_parquet(cohort, columns=["patient_id"])["patient_id"].unique().tolist()
    return {"champion": first["version"], "challenger": second["version"], "ids": entities}


def weak_config(config_dir: Path) -> None:
    write_config(config_dir, tuning=WEAK_TUNING)


@contextmanager
def serving(faults: dict[str, Any] | None = None) -> Iterator[TestClient]:
    settings = ServingSettings(models=[MODEL], faults=faults or {})
    app = create_app([get_model_config(MODEL)], settings)
    with TestClient(app) as client:
        yield client

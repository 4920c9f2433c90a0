"""Training runs that register versions of their own, each test in its own home: the same
data and seed give the same model, and a pinned git ref is checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.ingestion import ingestion_flow
from flows.training import training_flow
from mlsteward.config.settings import mlflow_tracking_uri
from tests.support.governance import write_config

MODEL = "heart_disease"


def test_same_data_and_seed_give_identical_params_and_artifact(
    small_cohort_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real search (three TPE trials, early stopping) on fewer boosting rounds than the demo's
    # 400: the same seed must still give the same search and the same bytes
    write_config(tmp_path / "config", tuning={"num_boost_round": 80, "early_stopping_rounds": 10})
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    first = training_flow(model=MODEL, max_evals=3, seed=11)
    second = training_flow(model=MODEL, max_evals=3, seed=11)
    assert first.version != second.version
    assert first.best_params == second.best_params
    assert first.artifact_sha256 == second.artifact_sha256


def test_a_git_ref_other_than_the_checkout_stops_the_run_before_any_work(
    small_cohort_path: Path,
) -> None:
    from mlsteward.errors import MlstewardError
    from mlsteward.training.lineage import git_info
    from tests.conftest import REPO_ROOT

    ingestion_flow(model="heart_disease", source=str(small_cohort_path))
    uri = mlflow_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # this test's own store
    with pytest.raises(MlstewardError, match="'no-such-ref' is unknown to the checkout"):
        training_flow(model="heart_disease", max_evals=1, git_ref="no-such-ref")
    assert not client.search_registered_models()

    head = git_info(REPO_ROOT)["commit"]
    out = training_flow(model="heart_disease", max_evals=1, git_ref=head)
    tags = client.get_model_version("heart_disease", out.version).tags
    assert tags["lineage.git_commit"] == head

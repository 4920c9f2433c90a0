"""The training flow end to end on the real stack: Prefect harness, MLflow on SQLite, Feast.

Every test here reads one registered version, trained once for the module; the runs that
train versions of their own are in ``test_training_runs.py``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.ingestion import ingestion_flow
from flows.results import TrainingResult
from flows.training import training_flow
from mlsteward.config.settings import mlflow_tracking_uri
from mlsteward.data.state import current_snapshot
from mlsteward.data.synthetic import generate_cohort, write_dataset
from mlsteward.features.encoding import FeatureEncoding, encode
from mlsteward.training.lineage import REQUIRED_TAGS

MODEL = "heart_disease"


def mlflow_client() -> MlflowClient:
    uri = mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    """The demo model's own tuning: these tests read what a default run registers."""
    return {}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): every test here reads the same
    registered version, so it is trained once."""
    return module_home


@pytest.fixture(scope="module")
def trained(mlsteward_home: Path) -> TrainingResult:
    cohort = write_dataset(
        generate_cohort(n_rows=4_000, seed=7), mlsteward_home.parent / "cohort.parquet"
    )
    ingestion_flow(model=MODEL, source=str(cohort))
    return training_flow(model=MODEL, max_evals=3)


def test_version_registered_with_full_lineage_and_sane_metrics(trained: TrainingResult) -> None:
    client = mlflow_client()
    mv = client.get_model_version(MODEL, trained.version)
    missing = [t for t in REQUIRED_TAGS if t not in mv.tags]
    assert not missing, f"lineage tags missing: {missing}"
    snap = current_snapshot(MODEL)
    assert mv.tags["lineage.data_digest"] == snap.digest
    assert mv.tags["lineage.feature_service"] == MODEL
    assert client.get_run(trained.run_id).data.tags["mlsteward.trigger_reason"] == "manual"
    # the first version passes the gates and becomes champion by the no-champion path
    assert trained.governance.decision == "promoted", trained.governance
    assert mv.tags["lifecycle"] == "champion" and mv.tags["validation_status"] == "passed"
    # no lost rows: the training set is every snapshot row
    assert int(mv.tags["lineage.training_rows"]) == snap.rows
    # the recorded SHA-256 is the stored artifact's
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source))
    assert (
        hashlib.sha256((local / "model.ubj").read_bytes()).hexdigest()
        == mv.tags["model_artifact_sha256"]
    )
    # the synthetic risk function is learnable
    assert trained.test_metrics["roc_auc"] > 0.75
    assert 0 < trained.test_metrics["brier"] < 0.25


def test_trials_are_nested_runs_and_training_input_is_logged(trained: TrainingResult) -> None:
    client = mlflow_client()
    run = client.get_run(trained.run_id)
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{trained.run_id}'",
    )
    assert len(children) == 3
    assert all("loss" in c.data.metrics and "max_depth" in c.data.params for c in children)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(trained.test_metrics["roc_auc"])
    assert run.inputs.dataset_inputs, "training dataset not logged with mlflow.log_input"
    assert run.inputs.dataset_inputs[0].dataset.name == f"{MODEL}-training-set"


def test_registered_model_loads_natively_and_predicts_probabilities(
    trained: TrainingResult,
) -> None:
    model = mlflow.xgboost.load_model(trained.model_uri)
    holdout = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=trained.run_id, artifact_path="holdout/test_predictions.parquet"
        )
    )
    enc_path = mlflow.artifacts.download_artifacts(
        run_id=trained.run_id, artifact_path="feature_encoding.json"
    )
    enc = FeatureEncoding.from_dict(json.loads(Path(enc_path).read_text()))
    proba = model.predict_proba(encode(holdout, enc))[:, 1]
    assert proba == pytest.approx(holdout["prediction_proba"].to_numpy(), abs=1e-6)


def test_flow_run_leaves_metrics_table_and_lineage_markdown(trained: TrainingResult) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = mlflow_client().get_run(trained.run_id).data.tags["mlsteward.prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert {"heart-disease-test-metrics", "heart-disease-lineage"} <= set(by_key)
    assert by_key["heart-disease-test-metrics"].type == "table"
    assert "roc_auc" in str(by_key["heart-disease-test-metrics"].data)
    lineage_md = str(by_key["heart-disease-lineage"].data)
    assert f"version **{trained.version}**" in lineage_md
    assert trained.lineage["data_digest"] in lineage_md

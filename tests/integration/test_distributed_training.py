"""Training sets above ``distributed.above_rows`` train with xgboost.dask on a real LocalCluster.

One version is trained for the module through the real training flow (Feast, MLflow, Prefect
harness), with the threshold set low so the 3,000-row cohort counts as large: it is joined in
chunks of 700 entity rows, its training rows staged as parquet partitions and read on two Dask
worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from distributed import LocalCluster
from mlflow.tracking import MlflowClient
from pandas.testing import assert_frame_equal

from flows.ingestion import ingestion_flow
from flows.reproduce import reproduce_flow
from flows.results import TrainingResult
from flows.training import training_flow
from mlsteward import report
from mlsteward.config.models import get_model_config
from mlsteward.config.sections.training import DistributedTraining
from mlsteward.config.settings import mlflow_tracking_uri, training_sets_dir
from mlsteward.data.state import current_snapshot
from mlsteward.data.synthetic import generate_cohort, write_dataset
from mlsteward.errors import ConfigError
from mlsteward.features.retrieval import get_training_frame
from mlsteward.features.store import get_store
from mlsteward.training.build import fit_evaluate, tune_prepared
from mlsteward.training.distributed import dask_client, worker_slots
from mlsteward.training.prepared import prepare, prepare_partitioned
from mlsteward.training.spec import TrainingSpec
from tasks.features import entity_frame
from tests.support.governance import MODEL

# Ray and Dask clusters compete for the cores with the rest of the suite: make test-platform
pytestmark = pytest.mark.cluster

DISTRIBUTED = {"above_rows": 1_000, "chunk_rows": 700, "workers": 2, "threads_per_worker": 1}


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    return {"tuning": {"max_evals": 3, "num_boost_round": 80}, "distributed": DISTRIBUTED}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained version is shared."""
    return module_home


@pytest.fixture(scope="module")
def trained(mlsteward_home: Path) -> TrainingResult:
    cohort = write_dataset(
        generate_cohort(n_rows=3_000, seed=21), mlsteward_home.parent / "cohort.parquet"
    )
    ingestion_flow(model=MODEL, source=str(cohort))
    return training_flow(model=MODEL, promote=False)


def client() -> MlflowClient:
    uri = mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_large_set_trains_on_dask_and_records_it(trained: TrainingResult) -> None:
    version = client().get_model_version(MODEL, trained.version)
    run = client().get_run(version.run_id)
    assert run.data.tags["mlsteward.tuning.runner"] == "xgboost.dask"
    lineage = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/lineage.json")
    assert lineage["tuning_execution"]["distributed"] == {
        "engine": "xgboost.dask",
        "workers": 2,
        "chunk_rows": 700,
        # 3,000 entity rows in chunks of 700; the cohort is in time order, so the newest two
        # chunks hold only validation and test rows and stage no partition.
        "partitions": 3,
    }
    # A real model came out of it, evaluated on the in-memory test split.
    assert float(version.tags["test_roc_auc"]) > 0.75
    # The staged partitions are removed when the run ends.
    assert list(training_sets_dir(MODEL).iterdir()) == []
    # The model card says where it was trained.
    text = report.render_markdown(report.collect_model_card(MODEL))
    assert (
        "xgboost.dask, TPE batches of 1; xgboost.dask on 2 worker slots, 3 partitions from "
        "chunks of 700 rows" in text
    )


def test_chunked_join_gives_the_rows_and_split_of_one_join(
    trained: TrainingResult, tmp_path: Path
) -> None:
    cfg = get_model_config(MODEL)
    snapshot = current_snapshot(MODEL)
    entities = entity_frame(cfg, snapshot)
    store = get_store()
    whole = prepare(cfg, get_training_frame(cfg, entities, store=store), snapshot)
    calls: list[int] = []

    def retrieve(rows: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(rows))
        return get_training_frame(cfg, rows, store=store)

    parted = prepare_partitioned(cfg, entities, retrieve, snapshot, tmp_path / "parts")
    assert calls == [700, 700, 700, 700, 200]
    assert parted.split.sizes() == whole.split.sizes()
    assert_frame_equal(parted.split.validation, whole.split.validation)
    assert_frame_equal(parted.split.test, whole.split.test)
    assert_frame_equal(parted.x_test, whole.x_test)
    assert parted.encoding == whole.encoding
    assert parted.train_partitions is not None
    staged = pd.concat(pd.read_parquet(p) for p in parted.train_partitions.paths)
    expected = whole.split.train.sort_values("row_id").reset_index(drop=True)
    assert_frame_equal(staged.reset_index(drop=True), expected, check_dtype=False)
    assert parted.time_range(cfg.timestamp_column) == whole.time_range(cfg.timestamp_column)
    assert parted.training_set_digest != whole.training_set_digest  # another digest scheme


def test_same_partitions_and_workers_give_the_same_model_bytes(
    trained: TrainingResult, tmp_path: Path
) -> None:
    """Two fresh LocalClusters: Dask places partitions differently each time; pinning makes the
    trees the same anyway."""
    cfg = get_model_config(MODEL)
    snapshot = current_snapshot(MODEL)
    store = get_store()
    data = prepare_partitioned(
        cfg,
        entity_frame(cfg, snapshot),
        lambda rows: get_training_frame(cfg, rows, store=store),
        snapshot,
        tmp_path / "parts",
    )
    spec = TrainingSpec.resolve(cfg, max_evals=2, seed=3)
    tuning = tune_prepared(spec, data)
    assert tuning.runner == "xgboost.dask"
    first = fit_evaluate(spec, data, tuning)
    second = fit_evaluate(spec, data, tuning)
    raw = [bytes(m.model.get_booster().save_raw("ubj")) for m in (first, second)]
    assert raw[0] == raw[1]
    assert first.test_metrics == second.test_metrics


def test_reproduce_rebuilds_the_distributed_version_byte_for_byte(trained: TrainingResult) -> None:
    report = reproduce_flow(model=MODEL, version=trained.version)
    assert report.result == "identical", report
    steps = {s.name: s for s in report.steps}
    assert "partitioned for xgboost.dask" in steps["training_set"].detail
    assert steps["artifact"].status == "same"
    assert list(training_sets_dir(MODEL).iterdir()) == []


def test_a_cluster_smaller_than_the_configured_workers_is_refused() -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        dask_client(DistributedTraining(workers=1), cluster.scheduler_address) as c,
        pytest.raises(ConfigError, match=r"distributed.workers is 2 .* 1 worker"),
    ):
        worker_slots(c, 2)

"""Parallel Hyperopt trials on real Prefect task runners: a thread pool, a Dask LocalCluster
(2 worker processes) and Ray give the same, reproducible search as in-process batches.

24 trials so that TPE itself (not only its 20 random start-up trials) runs on every runner.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.training import tuning_flow
from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.training import TuningConfig
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance import mlflow_adapter
from mlsteward.governance.registry import VersionInfo
from mlsteward.training.fitting import Split, TuningResult, make_dmatrix, tune
from mlsteward.training.handover import handed_over
from mlsteward.training.prepared import PreparedData
from mlsteward.training.reproduce import ReproductionReport
from mlsteward.training.spec import TrainingSpec
from tasks.reproduce import RecordedVersion, rebuild_params
from tasks.training import trial_task_runner

# Ray and Dask clusters compete for the cores with the rest of the suite: make test-platform
pytestmark = pytest.mark.cluster

TRIALS = 24
BATCH = 4
SEED = 13


def model_config(runner: str) -> ModelConfig:
    tuning = {
        "num_boost_round": 40,
        "early_stopping_rounds": 5,
        "parallel": {"runner": runner, "batch_size": BATCH, "workers": 2},
    }
    return ModelConfig.model_validate(
        {
            "name": "parallel_demo",
            "task": "binary_classification",
            "source": {"path": "x", "entity": "id"},
            "label": "y",
            "features": ["a", "b", "c"],
            "tuning": tuning,
        }
    )


@pytest.fixture(scope="module")
def data() -> PreparedData:
    rng = np.random.default_rng(3)
    n = 1_500
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    frame["y"] = (frame.a + 0.5 * frame.b * frame.c + 0.7 * rng.normal(size=n) > 0).astype(int)
    cfg = model_config("threads")
    parts = frame.iloc[:900], frame.iloc[900:1200], frame.iloc[1200:]
    split = Split(*(p.reset_index(drop=True) for p in parts))
    enc = make_encoding(cfg, dict.fromkeys("abc", "float"), split.train)
    return PreparedData(
        split=split,
        encoding=enc,
        label="y",
        x_train=encode(split.train, enc),
        x_val=encode(split.validation, enc),
        x_test=encode(split.test, enc),
    )


@pytest.fixture(scope="module")
def in_process(data: PreparedData) -> TuningResult:
    """The reference: the same batches evaluated by ``tune`` in this process, no Prefect."""
    cfg = model_config("threads")
    dtrain = make_dmatrix(data.x_train, data.y("train"), data.encoding)
    dval = make_dmatrix(data.x_val, data.y("validation"), data.encoding)
    return tune(dtrain, dval, cfg.tuning, max_evals=TRIALS, seed=SEED)


def run_on(runner: str, data: PreparedData, run_id: str) -> tuple[TuningResult, str]:
    """The training flow's tuning step, with the subflow id so its task runs can be read."""
    spec = TrainingSpec.resolve(model_config(runner), max_evals=TRIALS, seed=SEED)
    ids: list[str] = []

    @flow(name="parallel-tuning-test")
    def parent() -> TuningResult:
        with handed_over(data) as key:
            sub = tuning_flow.with_options(task_runner=trial_task_runner(spec.search.plan))
            state = sub(spec, key, run_id, return_state=True)
        ids.append(str(state.state_details.flow_run_id))
        return state.result()

    return parent(), ids[0]


def trial_task_names(flow_run_id: str) -> list[str]:
    async def read() -> list[str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return sorted(r.name for r in runs if r.name.startswith("trial-"))

    return asyncio.run(read())


def same_search(a: TuningResult, b: TuningResult) -> bool:
    return [(t.number, t.params, t.loss, t.best_iteration) for t in a.trials] == [
        (t.number, t.params, t.loss, t.best_iteration) for t in b.trials
    ] and (a.best_params, a.best_loss) == (b.best_params, b.best_loss)


@pytest.fixture
def run_id() -> str:
    """A training run in this test's own MLflow store (trials become its nested runs)."""
    return mlflow_adapter.start_run("parallel_demo", "parallel-tuning-test", tags={})


@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_runner_gives_the_in_process_search(
    runner: str, data: PreparedData, in_process: TuningResult, run_id: str
) -> None:
    result, sub_id = run_on(runner, data, run_id)
    assert same_search(result, in_process)
    assert (result.runner, result.batch_size) == (runner, BATCH)
    # Every trial was its own task run, visible under the tuning subflow.
    assert trial_task_names(sub_id) == [f"trial-{n:03d}" for n in range(1, TRIALS + 1)]
    # ... and a second run with the same seed and batch size repeats it exactly.
    if runner == "threads":
        again, _ = run_on(runner, data, run_id)
        assert same_search(again, result)
    else:  # one Dask search serves the reproduction check too: a cluster start-up is ~20 s
        assert_full_reproduction_uses_the_recorded_batch_size(result, data)


def test_ray_gives_the_in_process_search(
    data: PreparedData, in_process: TuningResult, run_id: str
) -> None:
    pytest.importorskip("prefect_ray")
    result, _ = run_on("ray", data, run_id)
    assert same_search(result, in_process)


def test_trials_are_nested_mlflow_runs_in_trial_order(data: PreparedData, run_id: str) -> None:
    result, _ = run_on("threads", data, run_id)
    client = mlflow_adapter.client()
    children = client.search_runs(
        [mlflow_adapter.experiment_of(run_id)],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        max_results=100,
    )
    by_trial = sorted(children, key=lambda r: int(r.data.tags["mlsteward.trial"]))
    assert [int(r.data.tags["mlsteward.trial"]) for r in by_trial] == list(range(1, TRIALS + 1))
    assert [r.data.metrics["loss"] for r in by_trial] == [t.loss for t in result.trials]
    started = [r.info.start_time for r in by_trial]
    assert started == sorted(started)  # logged in trial order, whichever finished first
    tags = client.get_run(run_id).data.tags
    assert tags["mlsteward.tuning.runner"] == "threads"
    assert tags["mlsteward.tuning.batch_size"] == str(BATCH)


def test_tuning_subflow_refuses_data_it_was_not_handed(run_id: str) -> None:
    from mlsteward.errors import MlstewardError

    with pytest.raises(MlstewardError, match="handed over"):
        spec = TrainingSpec.resolve(model_config("threads"), max_evals=2, seed=SEED)
        tuning_flow(spec, "no-such-key", run_id)


def test_parallel_config_round_trips_through_the_recorded_config() -> None:
    """Reproduction re-validates the recorded config: the batch size comes back with it."""
    cfg = model_config("dask")
    again = ModelConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.tuning.parallel == cfg.tuning.parallel
    old = cfg.model_dump(mode="json")
    del old["tuning"]["parallel"]  # a version recorded before batching existed
    assert ModelConfig.model_validate(old).tuning.parallel.batch_size == 1
    assert TuningConfig().parallel.runner == "sequential"


def recorded_version(result: TuningResult, cfg: ModelConfig) -> RecordedVersion:
    """A version as reproduction loads it: the recorded config plus the tuning outcome."""
    recipe = {
        "config": cfg.model_dump(mode="json"),
        "tuning": {
            "seed": result.seed,
            "max_evals": len(result.trials),
            "best_params": result.best_params,
            "best_iteration": result.best_iteration,
            "best_loss": result.best_loss,
        },
    }
    info = VersionInfo(name=cfg.name, version="1", run_id="r", source="models:/m-1")
    return RecordedVersion(info, recipe, None, {}, None)


def assert_full_reproduction_uses_the_recorded_batch_size(
    trained: TuningResult, data: PreparedData
) -> None:
    """A search trained on Dask in batches of 4 re-runs identically (on local threads) from
    its recorded config; had reproduction ignored the batch size, TPE's trials after the
    start-up would differ."""
    cfg = model_config("dask")
    report = ReproductionReport(model=cfg.name, version="1", mode="full")
    rebuilt = rebuild_params.fn(recorded_version(trained, cfg), data, True, report)
    assert report.step("params").status == "same", report.step("params").detail
    assert "batches of 4" in report.step("params").detail
    assert (rebuilt.runner, rebuilt.batch_size) == ("threads", BATCH)

    unbatched = cfg.model_copy(
        update={
            "tuning": cfg.tuning.model_copy(
                update={"parallel": cfg.tuning.parallel.model_copy(update={"batch_size": 1})}
            )
        }
    )
    report = ReproductionReport(model=cfg.name, version="1", mode="full")
    rebuild_params.fn(recorded_version(trained, unbatched), data, True, report)
    assert report.step("params").status == "differs"

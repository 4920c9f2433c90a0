"""Batched Hyperopt TPE: batch size 1 is fmin, batches are TPE, and results never depend on who
evaluated a trial or when it finished."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hyperopt import STATUS_OK, Trials, fmin, hp, rand, space_eval, tpe
from pydantic import ValidationError

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.training import ParallelTuning, TuningConfig
from mlsteward.errors import ConfigError
from mlsteward.features.encoding import make_encoding
from mlsteward.training.fitting import (
    TrialSpec,
    build_search_space,
    local_evaluator,
    make_dmatrix,
    search,
    train_trial,
    tune,
    typed_params,
)
from mlsteward.training.tuning import (
    PendingTrial,
    batched_search,
    ok,
    plan_execution,
    require_runner_package,
)

SPACE = {
    "x": hp.uniform("x", -3, 3),
    "depth": hp.quniform("depth", 2, 8, 1),
    "kind": hp.choice("kind", ["a", "b", "c"]),
    "rate": hp.loguniform("rate", -4, 0),
}


def bowl(p: dict[str, Any]) -> float:
    return (p["x"] - 1) ** 2 + 0.05 * p["depth"] + (0.3 if p["kind"] == "b" else 0.0) + p["rate"]


def serial(batch: Sequence[PendingTrial]) -> list[dict[str, Any]]:
    return [ok(bowl(p.params)) for p in batch]


def history(trials: Trials) -> list[tuple[int, dict, dict, dict]]:
    """Everything a trial document holds except wall-clock timestamps."""
    return [(d["tid"], d["misc"]["idxs"], d["misc"]["vals"], d["result"]) for d in trials.trials]


def test_batch_size_one_is_fmin_trial_for_trial() -> None:
    expected = Trials()
    fmin(
        bowl,
        SPACE,
        algo=tpe.suggest,
        max_evals=32,
        trials=expected,
        rstate=np.random.default_rng(5),
        show_progressbar=False,
    )
    got = batched_search(SPACE, serial, max_evals=32, batch_size=1, rstate=np.random.default_rng(5))
    assert history(got) == history(expected)
    assert got.argmin == expected.argmin


def test_same_seed_and_batch_size_repeat_and_other_batch_sizes_differ() -> None:
    def run(batch: int, seed: int = 3) -> list:
        rstate = np.random.default_rng(seed)
        return history(batched_search(SPACE, serial, max_evals=40, batch_size=batch, rstate=rstate))

    four = run(4)
    assert four == run(4)
    one = run(1)
    # TPE's random start-up (20 trials) draws the same points; after it, the batch size is part
    # of the search, which is why it is recorded with every version.
    assert four[:20] == one[:20]
    assert four[20:] != one[20:]
    assert len(four) == 40 and len(run(7)) == 40  # a last, shorter batch


def test_completion_order_does_not_change_the_search() -> None:
    def shuffled_threads(batch: Sequence[PendingTrial]) -> list[dict[str, Any]]:
        def slow(p: PendingTrial) -> dict[str, Any]:
            time.sleep(random.random() / 200)
            return ok(bowl(p.params))

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(slow, batch))

    a = batched_search(SPACE, serial, max_evals=30, batch_size=4, rstate=np.random.default_rng(9))
    b = batched_search(
        SPACE, shuffled_threads, max_evals=30, batch_size=4, rstate=np.random.default_rng(9)
    )
    assert history(a) == history(b)


def test_batches_after_the_startup_trials_are_tpe_not_random() -> None:
    def run(algo: Any) -> Trials:
        rstate = np.random.default_rng(1)
        return batched_search(SPACE, serial, max_evals=60, batch_size=4, rstate=rstate, algo=algo)

    tpe_trials, rand_trials = run(tpe.suggest), run(rand.suggest)
    # tpe.suggest hands its first 20 trials to rand.suggest with the same seed draws...
    assert history(tpe_trials)[:20] == history(rand_trials)[:20]
    # ...then models the losses: its later suggestions concentrate where the bowl is low.
    tpe_late = np.mean(tpe_trials.losses()[20:])
    rand_late = np.mean(rand_trials.losses()[20:])
    assert tpe_late < 0.6 * rand_late, (tpe_late, rand_late)


def test_pending_trials_steer_the_rest_of_their_batch() -> None:
    """Within one batch, each suggestion sees the earlier ones as pending (loss +inf)."""
    seen: list[int] = []

    def count_pending(batch: Sequence[PendingTrial]) -> list[dict[str, Any]]:
        seen.append(len(batch))
        return serial(batch)

    trials = batched_search(
        SPACE, count_pending, max_evals=28, batch_size=8, rstate=np.random.default_rng(2)
    )
    assert seen == [8, 8, 8, 4]
    last_batch = [d["misc"]["vals"]["x"][0] for d in trials.trials[24:]]
    assert len(set(last_batch)) == 4  # distinct points, not one suggestion four times


def test_evaluator_must_answer_every_trial() -> None:
    with pytest.raises(ValueError, match="2 results for 3 trials"):
        batched_search(
            SPACE,
            lambda b: serial(b)[:2],
            max_evals=3,
            batch_size=3,
            rstate=np.random.default_rng(0),
        )


# --------------------------------------------------------------------------------------------
# XGBoost trials
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrices() -> tuple[xgb.DMatrix, xgb.DMatrix]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(900, 3)), columns=["a", "b", "c"]).astype(np.float32)
    y = pd.Series((x.a + 0.5 * x.b * x.c + 0.6 * rng.normal(size=900) > 0).astype(int))
    cfg = ModelConfig.model_validate(
        {
            "name": "m",
            "task": "binary_classification",
            "source": {"path": "x", "entity": "id"},
            "label": "y",
            "features": ["a", "b", "c"],
        }
    )
    enc = make_encoding(cfg, dict.fromkeys("abc", "float"), x)
    return make_dmatrix(x[:600], y[:600], enc), make_dmatrix(x[600:], y[600:], enc)


FAST = {"num_boost_round": 40, "early_stopping_rounds": 5}


def test_default_tune_is_the_fmin_search_it_replaced(matrices: tuple) -> None:
    """The sequential default gives what ``fmin`` gave before batching existed."""
    dtrain, dval = matrices
    tuning = TuningConfig(**FAST)
    space = build_search_space(tuning.search_space)
    losses: list[float] = []

    def objective(sampled: dict[str, Any]) -> dict[str, Any]:
        spec = TrialSpec(len(losses) + 1, typed_params(sampled, tuning.search_space))
        losses.append(train_trial(dtrain, dval, tuning, 4, spec).loss)
        return {"loss": losses[-1], "status": STATUS_OK}

    raw = fmin(
        objective,
        space,
        algo=tpe.suggest,
        max_evals=24,
        trials=Trials(),
        rstate=np.random.default_rng(4),
        show_progressbar=False,
    )
    result = tune(dtrain, dval, tuning, max_evals=24, seed=4)
    assert [t.loss for t in result.trials] == losses
    assert result.best_params == typed_params(space_eval(space, raw), tuning.search_space)
    assert (result.runner, result.batch_size) == ("sequential", 1)


def test_threads_give_the_batches_serial_evaluation_gives(matrices: tuple) -> None:
    dtrain, dval = matrices
    parallel = {"runner": "threads", "batch_size": 3, "workers": 2, "trial_nthread": 1}
    tuning = TuningConfig(**FAST, parallel=parallel)
    threaded = tune(dtrain, dval, tuning, max_evals=24, seed=8)
    one_by_one = plan_execution(ParallelTuning(batch_size=3))
    serial_result = search(
        tuning,
        local_evaluator(dtrain, dval, tuning, 8, one_by_one),
        one_by_one,
        max_evals=24,
        seed=8,
    )
    assert [(t.params, t.loss) for t in threaded.trials] == [
        (t.params, t.loss) for t in serial_result.trials
    ]
    assert threaded.best_params == serial_result.best_params
    assert (threaded.runner, threaded.batch_size, threaded.trial_nthread) == ("threads", 3, 1)
    assert [t.number for t in threaded.trials] == list(range(1, 25))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_default_config_stays_sequential() -> None:
    plan = plan_execution(TuningConfig().parallel, nthread=0, cores=2)
    assert (plan.runner, plan.batch_size, plan.workers, plan.trial_nthread) == (
        "sequential",
        1,
        1,
        0,
    )


@pytest.mark.parametrize(
    ("parallel", "cores", "expected"),
    [
        ({"runner": "threads", "batch_size": 4}, 2, (2, 1)),
        ({"runner": "threads", "batch_size": 4}, 8, (4, 2)),
        ({"runner": "dask", "batch_size": 1}, 8, (1, 8)),
        ({"runner": "ray", "batch_size": 6, "workers": 3, "trial_nthread": 2}, 2, (3, 2)),
    ],
)
def test_workers_and_threads_never_oversubscribe_by_default(
    parallel: dict, cores: int, expected: tuple[int, int]
) -> None:
    plan = plan_execution(ParallelTuning(**parallel), cores=cores)
    assert (plan.workers, plan.trial_nthread) == expected


@pytest.mark.parametrize(
    ("parallel", "message"),
    [
        ({"runner": "spark"}, "runner"),
        ({"runner": "threads", "batch_size": 0}, "batch_size"),
        ({"runner": "threads", "address": "tcp://x:8786"}, "address"),
        ({"runner": "sequential", "address": "ray://x:10001"}, "address"),
        ({"runner": "dask", "batches": 4}, "batches"),
    ],
)
def test_bad_parallel_config_is_rejected_naming_the_key(parallel: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TuningConfig.model_validate({"parallel": parallel})


def test_missing_runner_package_names_the_package_and_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"prefect-ray.*mlsteward\[ray\]"):
        require_runner_package("ray", find_spec=lambda name: None)
    with pytest.raises(ConfigError, match="prefect-dask"):
        require_runner_package("dask", find_spec=lambda name: None)
    require_runner_package("dask")  # installed here
    require_runner_package("threads", find_spec=lambda name: None)  # needs nothing


def spec_config(**tuning: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "spec_demo",
            "task": "binary_classification",
            "source": {"path": "x", "entity": "id"},
            "label": "y",
            "features": ["a"],
            "tuning": tuning,
            "distributed": {"workers": 3, "threads_per_worker": 2},
        }
    )


def test_a_training_spec_resolves_trials_seed_and_plans_once() -> None:
    from mlsteward.training.spec import TrainingSpec

    cfg = spec_config(max_evals=12, seed=5, parallel={"runner": "threads", "batch_size": 4})
    spec = TrainingSpec.resolve(cfg)
    assert (spec.search.max_evals, spec.search.seed) == (12, 5)  # the config's defaults
    assert spec.search.plan == plan_execution(cfg.tuning.parallel, cfg.tuning.nthread)
    given = TrainingSpec.resolve(cfg, max_evals=3, seed=0, promote=False, reason="ci: x@1")
    assert (given.search.max_evals, given.search.seed) == (3, 0)  # seed 0 is a seed
    assert (given.promote, given.reason, given.git_ref) == (False, "ci: x@1", None)
    # a partitioned set: the same trials and seed, one at a time on the whole Dask cluster
    on_dask = spec.search_for(partitioned=True)
    assert (on_dask.max_evals, on_dask.seed) == (12, 5)
    assert (on_dask.plan.runner, on_dask.plan.batch_size) == ("xgboost.dask", 4)
    assert (on_dask.plan.workers, on_dask.plan.trial_nthread) == (3, 2)
    assert spec.search_for(partitioned=False) == spec.search


def test_the_dask_plan_shares_the_tuning_runners_scheduler() -> None:
    from mlsteward.training.spec import dask_plan

    parallel = {"runner": "dask", "address": "tcp://scheduler:8786"}
    assert dask_plan(spec_config(parallel=parallel)).address == "tcp://scheduler:8786"
    assert dask_plan(spec_config()).address is None


def test_an_in_process_search_keeps_the_batches_and_runs_them_on_threads() -> None:
    from mlsteward.training.tuning import SearchSpec

    tuning = TuningConfig(parallel={"runner": "dask", "batch_size": 4, "workers": 2})
    local = SearchSpec.resolve(tuning, cores=2).in_process()
    assert (local.plan.runner, local.plan.batch_size, local.plan.workers) == ("threads", 4, 2)
    sequential = SearchSpec.resolve(TuningConfig())
    assert sequential.in_process() is sequential


def test_reproduction_needs_no_runner_package_a_training_run_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlsteward.training.spec as spec_module
    from mlsteward.training.spec import TrainingSpec

    def missing(runner: str) -> None:
        require_runner_package(runner, find_spec=lambda name: None)

    monkeypatch.setattr(spec_module, "require_runner_package", missing)
    cfg = spec_config(parallel={"runner": "ray"})
    with pytest.raises(ConfigError, match="prefect-ray"):
        TrainingSpec.resolve(cfg)
    assert TrainingSpec.resolve(cfg, require_runner=False).search.plan.runner == "ray"


def test_lineage_records_how_the_search_ran(tmp_path: Any) -> None:
    from mlsteward.training.fitting import TuningResult
    from mlsteward.training.lineage import UNKNOWN, build_lineage

    result = TuningResult({}, 3, 0.4, [], 42, batch_size=4, runner="dask", trial_nthread=1)
    common = {
        "model": "m",
        "data_digest": "d",
        "data_path": "p",
        "data_source": "s",
        "feature_service": "fs",
        "features": ["a"],
        "training_rows": 10,
        "time_range": ("t0", "t1"),
        "split_sizes": {"train": 10},
        "best_params": {},
        "seed": 42,
        "max_evals": 8,
        "project_root": tmp_path,
        "config_path": tmp_path / "m.yaml",
    }
    tags = build_lineage(**common, tuning_execution=result.execution()).to_tags()
    assert json.loads(tags["lineage.tuning_execution"]) == {
        "runner": "dask",
        "batch_size": 4,
        "trial_nthread": 1,
    }
    # Not told, lineage says so rather than guessing "sequential".
    assert build_lineage(**common).to_tags()["lineage.tuning_execution"] == UNKNOWN

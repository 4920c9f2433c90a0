"""A model from a prepared training set: the search, then the refit and its evaluation.

In this process for a set in memory, on the Dask cluster (``xgboost.dask``) for a partitioned
one. Training and reproduction both build through here, so a rebuilt version is made the same
way. Parallel trials as Prefect tasks are the training tasks' business (``tasks.training``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.training.fitting import (
    TrialCallback,
    TuningResult,
    choose_threshold,
    evaluate,
    fit_final,
    make_dmatrix,
    search,
    tune,
)
from mlsteward.training.prepared import FittedModel, PreparedData
from mlsteward.training.tuning import ExecutionPlan, plan_execution


def tuning_dask_address(cfg: ModelConfig) -> str | None:
    parallel = cfg.tuning.parallel
    return parallel.address if parallel.runner == "dask" else None


def dask_plan(cfg: ModelConfig) -> ExecutionPlan:
    """Trials of a partitioned set run one at a time, each on the whole cluster; TPE still
    suggests them in the configured batches. The cluster is ``distributed.address``, else the
    tuning runner's Dask scheduler (one cluster serves both), else a LocalCluster."""
    d = cfg.distributed
    return ExecutionPlan(
        "xgboost.dask",
        cfg.tuning.parallel.batch_size,
        d.workers,
        d.threads_per_worker,
        d.address or tuning_dask_address(cfg),
    )


@contextlib.contextmanager
def on_dask(cfg: ModelConfig, data: PreparedData) -> Iterator[Any]:
    """The model's Dask cluster with ``data``'s training and validation matrices loaded.

    Imported here: Dask and ``xgboost.dask`` add about a second to every flow's start-up and
    only a partitioned training set needs them.
    """
    from mlsteward.training.distributed import dask_training

    assert data.train_partitions is not None
    with dask_training(
        cfg.distributed,
        dask_plan(cfg).address,
        data.train_partitions,
        data.x_val,
        data.y("validation"),
        data.encoding,
        data.label,
    ) as session:
        yield session


def tune_prepared(
    cfg: ModelConfig,
    data: PreparedData,
    max_evals: int | None,
    seed: int | None,
    on_trial: TrialCallback | None = None,
) -> tuple[TuningResult, ExecutionPlan]:
    """The search in this process, or on the Dask cluster for a partitioned training set."""
    if data.train_partitions is None:
        dtrain = make_dmatrix(data.x_train, data.y("train"), data.encoding)
        dval = make_dmatrix(data.x_val, data.y("validation"), data.encoding)
        result = tune(dtrain, dval, cfg.tuning, max_evals=max_evals, seed=seed, on_trial=on_trial)
        return result, plan_execution(cfg.tuning.parallel, cfg.tuning.nthread)
    seed = cfg.tuning.seed if seed is None else seed
    plan = dask_plan(cfg)
    with on_dask(cfg, data) as session:
        result = search(
            cfg.tuning,
            session.evaluator(cfg.tuning, seed),
            plan,
            max_evals=max_evals or cfg.tuning.max_evals,
            seed=seed,
            on_trial=on_trial,
        )
    result.distributed = {
        "engine": "xgboost.dask",
        "workers": cfg.distributed.workers,
        "chunk_rows": cfg.distributed.chunk_rows,
        "partitions": len(data.train_partitions.paths),
    }
    return result, plan


def fit_evaluate(cfg: ModelConfig, data: PreparedData, tuning: TuningResult) -> FittedModel:
    """Refit the best trial, choose the label threshold on validation, score the test set.

    One function for training and reproduction, so a rebuilt version is made the same way.
    """
    if data.train_partitions is None:
        model = fit_final(data.x_train, data.y("train"), data.encoding, cfg.tuning, tuning)
    else:
        with on_dask(cfg, data) as session:
            model = session.fit(cfg.tuning, tuning)
    val_proba = model.predict_proba(data.x_val)[:, 1]
    dt = cfg.decision_threshold
    threshold = choose_threshold(data.y("validation").to_numpy(), val_proba, dt.strategy, dt.value)
    test_proba = model.predict_proba(data.x_test)[:, 1]
    return FittedModel(
        model=model,
        threshold=threshold,
        test_metrics=evaluate(data.y("test").to_numpy(), test_proba, threshold),
        validation_metrics=evaluate(data.y("validation").to_numpy(), val_proba, threshold),
        test_proba=pd.Series(test_proba, index=data.x_test.index),
    )

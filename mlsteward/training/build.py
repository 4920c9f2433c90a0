"""A model from a prepared training set: the search, then the refit and its evaluation.

In this process for a set in memory, on the Dask cluster (``xgboost.dask``) for a partitioned
one. Training and reproduction both build through here, so a rebuilt version is made the same
way. Parallel trials as Prefect tasks are the training tasks' business (``tasks.training``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from mlsteward.training.fitting import (
    TrialCallback,
    TuningResult,
    XGBModel,
    fit_final,
    make_dmatrix,
    search,
    tune_in_process,
)
from mlsteward.training.metrics import choose_threshold, evaluate_for
from mlsteward.training.prepared import FittedModel, PreparedData
from mlsteward.training.spec import TrainingSpec


@contextlib.contextmanager
def on_dask(spec: TrainingSpec, data: PreparedData) -> Iterator[Any]:
    """The run's Dask cluster with ``data``'s training and validation matrices loaded.

    Imported here: Dask and ``xgboost.dask`` add about a second to every flow's start-up and
    only a partitioned training set needs them.
    """
    from mlsteward.training.distributed import dask_training

    assert data.train_partitions is not None
    with dask_training(
        spec.cfg.distributed,
        spec.dask.address,
        data.train_partitions,
        data.x_val,
        data.y("validation"),
        data.encoding,
        data.label,
    ) as session:
        yield session


def tune_prepared(
    spec: TrainingSpec, data: PreparedData, on_trial: TrialCallback | None = None
) -> TuningResult:
    """The search in this process, or on the Dask cluster for a partitioned training set."""
    tuning = spec.cfg.tuning
    if data.train_partitions is None:
        dtrain = make_dmatrix(data.x_train, data.y("train"), data.encoding)
        dval = make_dmatrix(data.x_val, data.y("validation"), data.encoding)
        return tune_in_process(dtrain, dval, tuning, spec.search, on_trial)
    run = spec.search_for(partitioned=True)
    with on_dask(spec, data) as session:
        result = search(
            tuning,
            session.evaluator(tuning, run.seed),
            run.plan,
            max_evals=run.max_evals,
            seed=run.seed,
            on_trial=on_trial,
        )
    result.distributed = {
        "engine": "xgboost.dask",
        "workers": spec.cfg.distributed.workers,
        "chunk_rows": spec.cfg.distributed.chunk_rows,
        "partitions": len(data.train_partitions.paths),
    }
    return result


def predict(model: XGBModel, x: pd.DataFrame) -> np.ndarray:
    """The positive class's probability, or the predicted number in the label's units."""
    if isinstance(model, xgb.XGBClassifier):
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def fit_evaluate(spec: TrainingSpec, data: PreparedData, tuning: TuningResult) -> FittedModel:
    """Refit the best trial, choose the label threshold on validation (classification), score
    the test set.

    One function for training and reproduction, so a rebuilt version is made the same way.
    """
    cfg = spec.cfg
    if data.train_partitions is None:
        model = fit_final(data.x_train, data.y("train"), data.encoding, cfg.tuning, tuning)
    else:
        with on_dask(spec, data) as session:
            model = session.fit(cfg.tuning, tuning)
    val_pred = predict(model, data.x_val)
    y_val = data.y("validation").to_numpy()
    threshold = None
    if not cfg.is_regression:
        dt = cfg.decision_threshold
        threshold = choose_threshold(y_val, val_pred, dt.strategy, dt.value)
    test_pred = predict(model, data.x_test)
    return FittedModel(
        model=model,
        threshold=threshold,
        test_metrics=evaluate_for(cfg, data.y("test").to_numpy(), test_pred, threshold),
        validation_metrics=evaluate_for(cfg, y_val, val_pred, threshold),
        test_prediction=pd.Series(test_pred, index=data.x_test.index),
    )

"""Training-stage tasks: prepare (split + encode), tune, refit and evaluate.

Each task wraps functions from ``mlsteward.training``; the tasks add logging, MLflow trial runs
and Prefect bookkeeping only. Frames pass between tasks in memory, so caching is off (hashing a
100k-row frame for a cache key would cost more than it saves).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import xgboost as xgb
from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward import mlflow_adapter
from mlsteward.config import ModelConfig
from mlsteward.lineage import require_git_ref
from mlsteward.recipe import frame_digest
from mlsteward.settings import project_root
from mlsteward.state import SnapshotInfo
from mlsteward.training import (
    FeatureEncoding,
    Split,
    TrialResult,
    TuningResult,
    choose_threshold,
    encode,
    evaluate,
    fit_final,
    make_dmatrix,
    make_encoding,
    time_split,
    tune,
)
from tasks.common import run_logger


@dataclass
class PreparedData:
    split: Split
    encoding: FeatureEncoding
    label: str
    x_train: pd.DataFrame
    x_val: pd.DataFrame
    x_test: pd.DataFrame
    training_set_digest: str = ""
    """SHA-256 of the point-in-time training set's content (``recipe.frame_digest``)."""

    def y(self, part: str) -> pd.Series:
        return getattr(self.split, part)[self.label]


@dataclass
class FittedModel:
    model: xgb.XGBClassifier
    threshold: float
    test_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    test_proba: pd.Series


def prepare(cfg: ModelConfig, frame: pd.DataFrame, snapshot: SnapshotInfo) -> PreparedData:
    s = cfg.split
    split = time_split(
        frame,
        cfg.timestamp_column,
        s.train,
        s.validation,
        keep_ties_together=not snapshot.timestamp_assigned,
    )
    enc = make_encoding(cfg, snapshot.feature_dtypes, split.train)
    return PreparedData(
        training_set_digest=frame_digest(frame),
        split=split,
        encoding=enc,
        label=cfg.label,
        x_train=encode(split.train, enc),
        x_val=encode(split.validation, enc),
        x_test=encode(split.test, enc),
    )


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(cfg: ModelConfig, frame: pd.DataFrame, snapshot: SnapshotInfo) -> PreparedData:
    data = prepare(cfg, frame, snapshot)
    run_logger().info("time split %s", data.split.sizes())
    return data


@task(name="tune-hyperparameters", cache_policy=NO_CACHE)
def tune_hyperparameters(
    cfg: ModelConfig, data: PreparedData, run_id: str, max_evals: int | None, seed: int | None
) -> TuningResult:
    """Hyperopt TPE; every trial becomes a nested MLflow run with its params and loss.

    Trial runs are written inline, as each trial ends, so they appear in the MLflow UI while
    the search runs. (A background writer was measured slower: XGBoost re-enters Python every
    boosting round and the writer thread competes with it for both cores and the GIL.)
    """
    log = run_logger()
    experiment_id = mlflow_adapter.experiment_of(run_id)

    def on_trial(trial: TrialResult, best: TrialResult, total: int) -> None:
        mlflow_adapter.log_nested_run(
            run_id,
            f"trial-{trial.number:03d}",
            trial.params,
            {
                "loss": trial.loss,
                f"val_{cfg.tuning.eval_metric}": trial.best_score,
                "best_iteration": trial.best_iteration,
            },
            tags={"mlsteward.trial": trial.number},
            experiment_id=experiment_id,
        )
        log.info(
            "trial %d/%d: loss %.5f, %d trees (best so far: trial %d, loss %.5f)",
            trial.number,
            total,
            trial.loss,
            trial.best_iteration + 1,
            best.number,
            best.loss,
        )

    dtrain = make_dmatrix(data.x_train, data.y("train"), data.encoding)
    dval = make_dmatrix(data.x_val, data.y("validation"), data.encoding)
    result = tune(dtrain, dval, cfg.tuning, max_evals=max_evals, seed=seed, on_trial=on_trial)
    log.info(
        "best params after %d trials: %s (%d trees)",
        len(result.trials),
        result.best_params,
        result.best_iteration + 1,
    )
    return result


def fit_evaluate(cfg: ModelConfig, data: PreparedData, tuning: TuningResult) -> FittedModel:
    """Refit the best trial, choose the label threshold on validation, score the test set.

    One function for training and reproduction, so a rebuilt version is made the same way.
    """
    model = fit_final(data.x_train, data.y("train"), data.encoding, cfg.tuning, tuning)
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


@task(name="fit-and-evaluate", cache_policy=NO_CACHE)
def fit_and_evaluate(cfg: ModelConfig, data: PreparedData, tuning: TuningResult) -> FittedModel:
    """Refit the best trial, choose the label threshold on validation, score the test set."""
    fitted = fit_evaluate(cfg, data, tuning)
    test_metrics = fitted.test_metrics
    run_logger().info(
        "test ROC-AUC %.4f, PR-AUC %.4f, log loss %.4f, Brier %.4f, F1 %.4f at threshold %.3f",
        test_metrics["roc_auc"],
        test_metrics["pr_auc"],
        test_metrics["log_loss"],
        test_metrics["brier"],
        test_metrics["f1"],
        fitted.threshold,
    )
    return fitted


@task(name="verify-code-version", cache_policy=NO_CACHE)
def verify_code_version(git_ref: str) -> str:
    """The requested commit is the one checked out, before any data is read or run opened."""
    commit = require_git_ref(project_root(), git_ref)
    run_logger().info("training commit %s (requested as %r)", commit[:12], git_ref)
    return commit

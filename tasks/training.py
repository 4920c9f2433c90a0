"""Training-stage tasks: prepare (split + encode), tune, refit and evaluate.

Tuning takes one of two shapes, chosen by ``tuning.parallel`` in the model config: the default
runs the whole search inside one ``tune-hyperparameters`` task; a parallel runner makes every
trial its own ``evaluate-trial`` task on a thread pool, Dask or Ray (``flows.training`` runs
them in a ``tune-trials`` subflow with that task runner), batch after batch of Hyperopt TPE.
A training set above ``distributed.above_rows`` is searched in the one task too, each trial an
``xgboost.dask`` training on the Dask cluster (``mlsteward.training.distributed``).

Each task wraps functions from ``mlsteward.training.fitting``; the tasks add logging, MLflow trial
runs
and Prefect bookkeeping only. Frames pass between tasks in memory, so caching is off (hashing a
100k-row frame for a cache key would cost more than it saves).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mlsteward.config.models import ModelConfig
from mlsteward.config.paths import project_root
from mlsteward.config.sections.training import TuningConfig
from mlsteward.data.state import SnapshotInfo
from mlsteward.errors import ConfigError, MlstewardError
from mlsteward.features.encoding import FeatureEncoding, encode, make_encoding
from mlsteward.governance import mlflow_adapter
from mlsteward.training.fitting import (
    Split,
    TrialCallback,
    TrialEvaluator,
    TrialResult,
    TrialSpec,
    TuningResult,
    choose_threshold,
    evaluate,
    fit_final,
    make_dmatrix,
    search,
    time_split,
    train_trial,
    tune,
)
from mlsteward.training.lineage import require_git_ref
from mlsteward.training.partitioned_set import Retrieve, TrainPartitions, build_partitioned_set
from mlsteward.training.recipe import frame_digest
from mlsteward.training.tuning import ExecutionPlan, plan_execution, require_runner_package
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
    """SHA-256 of the point-in-time training set's content (``recipe.frame_digest``, or
    ``partitioned_set.chunked_digest`` for a partitioned set)."""
    train_partitions: TrainPartitions | None = None
    """Set when the training rows are parquet partitions for ``xgboost.dask`` (the set is above
    ``distributed.above_rows``); ``split.train`` and ``x_train`` then hold no rows."""

    @classmethod
    def encoded(
        cls,
        split: Split,
        enc: FeatureEncoding,
        label: str,
        digest: str,
        partitions: TrainPartitions | None = None,
    ) -> PreparedData:
        return cls(
            split=split,
            encoding=enc,
            label=label,
            x_train=encode(split.train, enc),
            x_val=encode(split.validation, enc),
            x_test=encode(split.test, enc),
            training_set_digest=digest,
            train_partitions=partitions,
        )

    def y(self, part: str) -> pd.Series:
        return getattr(self.split, part)[self.label]

    def example_rows(self) -> pd.DataFrame:
        """A few encoded rows for the model's signature and input example."""
        return (self.x_val if self.train_partitions else self.x_train).head(5)

    def time_range(self, ts: str) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last event time over all three parts."""
        parts = [p[ts] for p in (self.split.train, self.split.validation, self.split.test)]
        if self.train_partitions:
            tp = self.train_partitions
            parts.append(pd.Series([tp.first_time, tp.last_time]))
        return min(p.min() for p in parts if len(p)), max(p.max() for p in parts if len(p))


@dataclass
class FittedModel:
    model: xgb.XGBClassifier
    threshold: float
    test_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    test_proba: pd.Series


def prepare(cfg: ModelConfig, frame: pd.DataFrame, snapshot: SnapshotInfo) -> PreparedData:
    return prepare_frame(
        cfg, frame, snapshot.feature_dtypes, keep_ties_together=not snapshot.timestamp_assigned
    )


def prepare_frame(
    cfg: ModelConfig,
    frame: pd.DataFrame,
    feature_dtypes: dict[str, str],
    keep_ties_together: bool = True,
) -> PreparedData:
    """The time split and encoding of a training frame (also for frames with no snapshot, such
    as the scale benchmark's cohort)."""
    s = cfg.split
    split = time_split(
        frame,
        cfg.timestamp_column,
        s.train,
        s.validation,
        keep_ties_together=keep_ties_together,
    )
    enc = make_encoding(cfg, feature_dtypes, split.train)
    return PreparedData.encoded(split, enc, cfg.label, frame_digest(frame))


def prepare_partitioned(
    cfg: ModelConfig,
    entities: pd.DataFrame,
    retrieve: Retrieve,
    snapshot: SnapshotInfo,
    directory: Path,
) -> PreparedData:
    """The same split and encoding as ``prepare``, with the training rows left in parquet
    partitions under ``directory`` for ``xgboost.dask`` (``mlsteward.training.partitioned_set``)."""
    pset = build_partitioned_set(
        cfg,
        entities,
        retrieve,
        directory,
        snapshot.feature_dtypes,
        keep_ties_together=not snapshot.timestamp_assigned,
    )
    observed = pd.DataFrame(
        {c: pd.Series(v, dtype=object) for c, v in pset.observed_categories.items()}
    )
    enc = make_encoding(cfg, snapshot.feature_dtypes, observed)
    split = Split(pset.schema, pset.validation, pset.test, train_rows=pset.partitions.rows)
    return PreparedData.encoded(split, enc, cfg.label, pset.digest, pset.partitions)


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


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(cfg: ModelConfig, frame: pd.DataFrame, snapshot: SnapshotInfo) -> PreparedData:
    data = prepare(cfg, frame, snapshot)
    run_logger().info("time split %s", data.split.sizes())
    return data


def _trial_logger(cfg: ModelConfig, run_id: str) -> TrialCallback:
    """Each trial as a nested MLflow run plus a log line; always called in the flow process."""
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

    return on_trial


def _record_tuning(run_id: str, result: TuningResult, plan: ExecutionPlan) -> None:
    """Runner, batch size and per-trial threads on the training run: the batch size is part of
    what the search computed, the rest says where and how it ran."""
    mlflow_adapter.set_run_tags(
        run_id,
        {
            "mlsteward.tuning.runner": result.runner,
            "mlsteward.tuning.batch_size": result.batch_size,
            "mlsteward.tuning.workers": plan.workers,
            "mlsteward.tuning.trial_nthread": result.trial_nthread,
        },
    )
    run_logger().info(
        "best params after %d trials (%s, batches of %d, %d XGBoost threads per trial): %s "
        "(%d trees)",
        len(result.trials),
        result.runner,
        result.batch_size,
        result.trial_nthread,
        result.best_params,
        result.best_iteration + 1,
    )


@task(name="tune-hyperparameters", cache_policy=NO_CACHE)
def tune_hyperparameters(
    cfg: ModelConfig, data: PreparedData, run_id: str, max_evals: int | None, seed: int | None
) -> TuningResult:
    """Hyperopt TPE in this task's process; every trial becomes a nested MLflow run.

    The sequential runner (the default) comes here: no per-trial Prefect tasks, so nothing is
    added to the search's cost. Trial runs are written inline, as each trial ends, so they
    appear in the MLflow UI while the search runs. (A background writer was measured slower:
    XGBoost re-enters Python every boosting round and the writer thread competes with it for
    both cores and the GIL.)
    """
    on_trial = _trial_logger(cfg, run_id)
    result, plan = tune_prepared(cfg, data, max_evals, seed, on_trial)
    _record_tuning(run_id, result, plan)
    return result


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


# --------------------------------------------------------------------------------------------
# Trials as Prefect tasks on a task runner (threads, Dask, Ray)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialData:
    """What a trial needs from the training set, as plain picklable frames and arrays.

    ``key`` names one search's data, so a worker builds its DMatrix pair once per search and
    not once per trial (see ``trial_matrices``).
    """

    key: str
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_val: pd.DataFrame
    y_val: np.ndarray
    encoding: FeatureEncoding

    @classmethod
    def from_prepared(cls, data: PreparedData) -> TrialData:
        return cls(
            key=uuid.uuid4().hex,
            x_train=data.x_train,
            y_train=data.y("train").to_numpy(),
            x_val=data.x_val,
            y_val=data.y("validation").to_numpy(),
            encoding=data.encoding,
        )


_MATRICES: dict[str, tuple[xgb.DMatrix, xgb.DMatrix]] = {}
_MATRICES_LOCK = threading.Lock()


def trial_matrices(data: TrialData) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """The search's DMatrix pair, built once per worker process and shared by its trials.

    Only the latest search's pair is kept: long-lived workers (a production Dask or Ray
    cluster) would otherwise hold every past training set in memory. Two searches alternating
    on one worker just rebuild (correct, slower).
    """
    with _MATRICES_LOCK:
        if data.key not in _MATRICES:
            _MATRICES.clear()
            _MATRICES[data.key] = tuple(
                make_dmatrix(x, y, data.encoding)
                for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val))
            )
        return _MATRICES[data.key]


def release_trial_matrices(key: str) -> None:
    with _MATRICES_LOCK:
        _MATRICES.pop(key, None)


@task(name="stage-training-data", cache_policy=NO_CACHE)
def stage_training_data(data: TrialData) -> TrialData:
    """Ships the training matrices to the cluster once: trials take this task's future, so
    Dask/Ray hand them the copy already in worker memory instead of one copy per trial."""
    return data


@task(name="evaluate-trial", cache_policy=NO_CACHE, task_run_name="trial-{number:03d}")
def evaluate_trial(
    data: TrialData,
    tuning: TuningConfig,
    seed: int,
    number: int,
    params: dict[str, Any],
    nthread: int,
) -> TrialResult:
    """One Hyperopt trial (an early-stopped XGBoost fit), wherever the task runner puts it."""
    dtrain, dval = trial_matrices(data)
    return train_trial(dtrain, dval, tuning, seed, TrialSpec(number, params), nthread)


def trial_task_runner(plan: ExecutionPlan) -> TaskRunner:
    """The Prefect task runner for ``plan``: a thread pool, a Dask cluster or a Ray cluster.

    Dask and Ray start a local cluster for the run unless ``address`` names one. The local Dask
    cluster has one single-threaded worker process per worker (XGBoost's own threads, capped by
    ``trial_nthread``, do the parallel work inside a trial); Ray reserves ``trial_nthread`` CPUs
    per trial, so a cluster runs as many trials at once as it has CPUs for.

    Raises:
        ConfigError: the runner's Prefect integration is not installed.
    """
    require_runner_package(plan.runner)
    if plan.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=plan.workers)
    if plan.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if plan.address:
            return DaskTaskRunner(address=plan.address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": plan.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    if plan.runner == "ray":
        from prefect_ray import RayTaskRunner

        if plan.address:
            return RayTaskRunner(address=plan.address)
        cpus = plan.workers * plan.trial_nthread
        return RayTaskRunner(init_kwargs={"num_cpus": cpus, "include_dashboard": False})
    raise ConfigError(f"runner {plan.runner!r} evaluates trials in process, not on a task runner")


def _runner_options(plan: ExecutionPlan) -> contextlib.AbstractContextManager[Any]:
    """Ray schedules by declared CPUs: a trial declares the threads it will use."""
    if plan.runner != "ray":
        return contextlib.nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(num_cpus=plan.trial_nthread)


def task_evaluator(
    tuning: TuningConfig, seed: int, plan: ExecutionPlan, data: Any
) -> TrialEvaluator:
    """Each batch as ``evaluate-trial`` tasks mapped on the current flow's task runner.

    Results are gathered in batch order, whatever order the trials finish in.
    """

    def evaluate(specs: Sequence[TrialSpec]) -> list[TrialResult]:
        with _runner_options(plan):
            futures = evaluate_trial.map(
                data=unmapped(data),
                tuning=unmapped(tuning),
                seed=unmapped(seed),
                number=[s.number for s in specs],
                params=[s.params for s in specs],
                nthread=unmapped(plan.trial_nthread),
            )
        return [f.result() for f in futures]

    return evaluate


def tune_on_task_runner(
    cfg: ModelConfig, data: PreparedData, run_id: str, max_evals: int | None, seed: int | None
) -> TuningResult:
    """The batched search with its trials as Prefect tasks; call it inside a flow whose task
    runner is ``trial_task_runner(plan)`` (``flows.training.tuning_flow``).

    On threads the trials share this process's matrices; on Dask or Ray the matrices go to the
    cluster once (``stage-training-data``) and each worker builds its DMatrix pair once.
    """
    tuning = cfg.tuning
    seed = tuning.seed if seed is None else seed
    plan = plan_execution(tuning.parallel, tuning.nthread)
    trial_data = TrialData.from_prepared(data)
    staged: Any = trial_data
    if plan.runner != "threads":
        with _runner_options(plan):
            staged = stage_training_data.submit(trial_data)
    try:
        result = search(
            tuning,
            task_evaluator(tuning, seed, plan, staged),
            plan,
            max_evals=max_evals or tuning.max_evals,
            seed=seed,
            on_trial=_trial_logger(cfg, run_id),
        )
    finally:
        release_trial_matrices(trial_data.key)
    _record_tuning(run_id, result, plan)
    return result


_STAGED: dict[str, PreparedData] = {}


@contextlib.contextmanager
def handed_over(data: PreparedData) -> Iterator[str]:
    """A key under which a subflow in this process finds ``data``.

    Why: a subflow's parameters are JSON-encoded into its flow-run record; a training frame
    would be encoded value by value. Subflows called from a flow run in the same process, so a
    key is enough.
    """
    key = uuid.uuid4().hex
    _STAGED[key] = data
    try:
        yield key
    finally:
        _STAGED.pop(key, None)


def handed_over_data(key: str) -> PreparedData:
    try:
        return _STAGED[key]
    except KeyError:
        raise MlstewardError(
            f"no training data handed over under {key!r}: the tuning subflow runs only when "
            "called from the training flow"
        ) from None


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

"""Training-stage tasks: prepare (split + encode), tune, refit and evaluate.

Tuning takes one of two shapes, chosen by ``tuning.parallel`` in the model config: the default
runs the whole search inside one ``tune-hyperparameters`` task; a parallel runner makes every
trial its own ``evaluate-trial`` task on a thread pool, Dask or Ray (``flows.training`` runs
them in a ``tune-trials`` subflow with that task runner), batch after batch of Hyperopt TPE.
A training set above ``distributed.above_rows`` is searched in the one task too, each trial an
``xgboost.dask`` training on the Dask cluster (``mlsteward.training.distributed``).

Each task wraps functions from the training room (``mlsteward.training``: the prepared set, the
search and refit on it, the trial cache, the hand-over to a subflow); the tasks add logging,
MLflow trial runs and Prefect bookkeeping only. Frames pass between tasks in memory, so caching
is off (hashing a 100k-row frame for a cache key would cost more than it saves).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pandas as pd
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mlsteward.config.models import ModelConfig
from mlsteward.config.paths import project_root
from mlsteward.config.sections.training import TuningConfig
from mlsteward.data.state import SnapshotInfo
from mlsteward.errors import ConfigError
from mlsteward.governance import mlflow_adapter
from mlsteward.training.build import fit_evaluate, tune_prepared
from mlsteward.training.fitting import (
    TrialCallback,
    TrialEvaluator,
    TrialResult,
    TrialSpec,
    TuningResult,
    search,
    train_trial,
)
from mlsteward.training.lineage import require_git_ref
from mlsteward.training.prepared import FittedModel, PreparedData, prepare
from mlsteward.training.spec import TrainingSpec
from mlsteward.training.trials import TrialData, release_trial_matrices, trial_matrices
from mlsteward.training.tuning import ExecutionPlan, require_runner_package
from tasks.common import run_logger


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
                f"val_{cfg.tuning.metric}": trial.best_score,
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
def tune_hyperparameters(spec: TrainingSpec, data: PreparedData, run_id: str) -> TuningResult:
    """Hyperopt TPE in this task's process; every trial becomes a nested MLflow run.

    The sequential runner (the default) comes here: no per-trial Prefect tasks, so nothing is
    added to the search's cost. Trial runs are written inline, as each trial ends, so they
    appear in the MLflow UI while the search runs. (A background writer was measured slower:
    XGBoost re-enters Python every boosting round and the writer thread competes with it for
    both cores and the GIL.)
    """
    result = tune_prepared(spec, data, _trial_logger(spec.cfg, run_id))
    partitioned = data.train_partitions is not None
    _record_tuning(run_id, result, spec.search_for(partitioned).plan)
    return result


# --------------------------------------------------------------------------------------------
# Trials as Prefect tasks on a task runner (threads, Dask, Ray)
# --------------------------------------------------------------------------------------------


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
        # Imported here: prefect_dask loads Dask, about a second of every flow's start-up.
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
        # Imported here: prefect-ray is an optional extra (mlsteward[ray]).
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
    # Imported here: prefect-ray is an optional extra (mlsteward[ray]).
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


def tune_on_task_runner(spec: TrainingSpec, data: PreparedData, run_id: str) -> TuningResult:
    """The batched search with its trials as Prefect tasks; call it inside a flow whose task
    runner is ``trial_task_runner(plan)`` (``flows.training.tuning_flow``).

    On threads the trials share this process's matrices; on Dask or Ray the matrices go to the
    cluster once (``stage-training-data``) and each worker builds its DMatrix pair once.
    """
    tuning, search_spec = spec.cfg.tuning, spec.search
    plan = search_spec.plan
    trial_data = TrialData.from_prepared(data)
    staged: Any = trial_data
    if plan.runner != "threads":
        with _runner_options(plan):
            staged = stage_training_data.submit(trial_data)
    try:
        result = search(
            tuning,
            task_evaluator(tuning, search_spec.seed, plan, staged),
            plan,
            max_evals=search_spec.max_evals,
            seed=search_spec.seed,
            on_trial=_trial_logger(spec.cfg, run_id),
        )
    finally:
        release_trial_matrices(trial_data.key)
    _record_tuning(run_id, result, plan)
    return result


@task(name="fit-and-evaluate", cache_policy=NO_CACHE)
def fit_and_evaluate(spec: TrainingSpec, data: PreparedData, tuning: TuningResult) -> FittedModel:
    """Refit the best trial, choose the label threshold on validation (classification), score
    the test set."""
    fitted = fit_evaluate(spec, data, tuning)
    m = fitted.test_metrics
    if fitted.threshold is None:
        run_logger().info(
            "test RMSE %.4g, MAE %.4g, R2 %.4f, mean prediction %.4g vs outcome %.4g",
            m["rmse"],
            m["mae"],
            m["r2"],
            m["mean_prediction"],
            m["mean_outcome"],
        )
    else:
        run_logger().info(
            "test ROC-AUC %.4f, PR-AUC %.4f, log loss %.4f, Brier %.4f, F1 %.4f at threshold %.3f",
            m["roc_auc"],
            m["pr_auc"],
            m["log_loss"],
            m["brier"],
            m["f1"],
            fitted.threshold,
        )
    return fitted


@task(name="verify-code-version", cache_policy=NO_CACHE)
def verify_code_version(git_ref: str) -> str:
    """The requested commit is the one checked out, before any data is read or run opened."""
    commit = require_git_ref(project_root(), git_ref)
    run_logger().info("training commit %s (requested as %r)", commit[:12], git_ref)
    return commit

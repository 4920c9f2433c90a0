"""The training flow: contract-checked snapshot → Feast → Hyperopt/XGBoost → MLflow registry."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.governance import govern
from flows.results import TrainingResult
from mlsteward.config.models import get_model_config
from mlsteward.training.fitting import TuningResult
from mlsteward.training.handover import handed_over, handed_over_data
from mlsteward.training.prepared import PreparedData
from mlsteward.training.spec import TrainingSpec
from tasks.common import run_actor
from tasks.features import (
    release_training_set,
    resolve_snapshot,
    retrieve_partitioned_training_set,
    retrieve_training_set,
)
from tasks.lineage import lineage_hooks
from tasks.reaper import reap_before_start
from tasks.registry import (
    close_training_run,
    open_training_run,
    publish_run_artifacts,
    register_model,
)
from tasks.training import (
    fit_and_evaluate,
    prepare_data,
    trial_task_runner,
    tune_hyperparameters,
    tune_on_task_runner,
    verify_code_version,
)


@flow(name="tune-trials")
def tuning_flow(spec: TrainingSpec, data_key: str, run_id: str) -> TuningResult:
    """Hyperopt TPE batches with every trial an ``evaluate-trial`` task on this subflow's task
    runner (set per run from ``tuning.parallel``: threads, Dask or Ray)."""
    data = handed_over_data(data_key)
    return tune_on_task_runner(spec, data, run_id)


def tune_model(spec: TrainingSpec, data: PreparedData, run_id: str) -> TuningResult:
    """The search as the model's ``tuning.parallel`` asks: in one task (sequential, the
    default), or trial by trial on a thread pool, Dask or Ray in a ``tune-trials`` subflow.
    A partitioned training set is searched in one task too, each trial on the Dask cluster."""
    plan = spec.search.plan
    if plan.runner == "sequential" or data.train_partitions is not None:
        return tune_hyperparameters(spec, data, run_id)
    with handed_over(data) as key:
        subflow = tuning_flow.with_options(task_runner=trial_task_runner(plan))
        return subflow(spec, key, run_id)


@flow(name="train-model", log_prints=True, **lineage_hooks("training"))
def training_flow(
    model: str = "heart_disease",
    max_evals: int | None = None,
    seed: int | None = None,
    promote: bool = True,
    reason: str = "manual",
    git_ref: str | None = None,
    requested_by: str | None = None,
) -> TrainingResult:
    """Train, evaluate, register and validate a new version of MODEL from its current data
    snapshot, then promote it per the model's policy.

    Hyperopt trials run as the model's ``tuning.parallel`` says: one after another (default),
    or in TPE batches on a thread pool, Dask or Ray; the same seed and batch size give the same
    version on every runner. A training set above ``distributed.above_rows`` entity rows is
    joined in chunks and trained with ``xgboost.dask`` on a Dask cluster instead.

    Args:
        model: name of a model config in config/models.
        max_evals: Hyperopt trials (default: the model's tuning.max_evals).
        seed: seed for Hyperopt and XGBoost (default: the model's tuning.seed).
        promote: False stops after the gates: a passing version stays the challenger, for a
            later promote-model run.
        reason: why this run started (e.g. "manual", "schedule", "ci: REPO@COMMIT", or the drift
            finding that triggered it); recorded on the MLflow run and in the audit trail.
        git_ref: commit, tag or branch this run must train (e.g. the commit CI tested); the
            run refuses to start when the deployment's checkout is at another commit.
        requested_by: the principal this run acts for (``user:alice``), set by the CLI, the
            API or the gateway; recorded with the run as the actor and as the version's
            submitter, whom four eyes keeps from approving it.
    """
    # 0. The run's settings, worked out once (trials, seed and runner default to the config)
    spec = TrainingSpec.resolve(
        get_model_config(model),
        max_evals=max_evals,
        seed=seed,
        promote=promote,
        reason=reason,
        git_ref=git_ref,
    )
    cfg = spec.cfg
    reap_before_start(cfg.name)  # runs whose process died: marked Crashed, canaries closed
    actor = run_actor(requested_by)
    if spec.git_ref:
        verify_code_version(spec.git_ref)

    # 1. Data: the verified current snapshot, point-in-time through the feature service
    # (above distributed.above_rows: joined in chunks, training rows staged for xgboost.dask)
    snapshot = resolve_snapshot(cfg)
    if cfg.distributed.applies(snapshot.rows):
        data = retrieve_partitioned_training_set(cfg, snapshot)
    else:
        frame = retrieve_training_set(cfg, snapshot)
        data = prepare_data(cfg, frame, snapshot)

    # 2. Tune, refit, evaluate inside one MLflow run (trials are nested runs)
    try:
        run_id = open_training_run(cfg, snapshot, flow_run.get_id(), spec.reason)
        try:
            tuning = tune_model(spec, data, run_id)
            fitted = fit_and_evaluate(spec, data, tuning)
            # 3. Register with lineage
            outcome = register_model(
                cfg, snapshot, data, tuning, fitted, run_id, actor, spec.reason
            )
        except BaseException:
            close_training_run(run_id, "FAILED")
            raise
        close_training_run(run_id)
    finally:
        release_training_set(data)

    # 4. What a person reads in the Prefect UI
    publish_run_artifacts(outcome)

    # 5. Governance: validation gates, then promotion per the model's policy
    decision = govern(cfg, outcome.version, actor=actor, promote=spec.promote)
    return TrainingResult(**outcome.model_dump(), governance=decision)

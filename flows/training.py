"""The training flow: contract-checked snapshot → Feast → Hyperopt/XGBoost → MLflow registry."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.governance import govern, run_actor
from mlsteward.config import get_model_config
from tasks.features import resolve_snapshot, retrieve_training_set
from tasks.registry import (
    close_training_run,
    open_training_run,
    publish_run_artifacts,
    register_model,
)
from tasks.training import (
    fit_and_evaluate,
    prepare_data,
    tune_hyperparameters,
    verify_code_version,
)


@flow(name="train-model", log_prints=True)
def training_flow(
    model: str = "heart_disease",
    max_evals: int | None = None,
    seed: int | None = None,
    promote: bool = True,
    reason: str = "manual",
    git_ref: str | None = None,
) -> dict:
    """Train, evaluate, register and validate a new version of MODEL from its current data
    snapshot, then promote it per the model's policy.

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
    """
    cfg = get_model_config(model)
    if git_ref:
        verify_code_version(git_ref)
    evals = max_evals or cfg.tuning.max_evals

    # 1. Data: the verified current snapshot, point-in-time through the feature service
    snapshot = resolve_snapshot(cfg)
    frame = retrieve_training_set(cfg, snapshot)
    data = prepare_data(cfg, frame, snapshot)

    # 2. Tune, refit, evaluate inside one MLflow run (trials are nested runs)
    run_id = open_training_run(cfg, snapshot, flow_run.get_id(), reason)
    try:
        tuning = tune_hyperparameters(cfg, data, run_id, evals, seed)
        fitted = fit_and_evaluate(cfg, data, tuning)
        # 3. Register with lineage
        outcome = register_model(cfg, snapshot, data, tuning, fitted, run_id, run_actor(), reason)
    except BaseException:
        close_training_run(run_id, "FAILED")
        raise
    close_training_run(run_id)

    # 4. What a person reads in the Prefect UI
    publish_run_artifacts(outcome)

    # 5. Governance: validation gates, then promotion per the model's policy
    decision = govern(cfg, outcome.version, actor=run_actor(), promote=promote)
    return {**outcome.to_dict(), "governance": decision}

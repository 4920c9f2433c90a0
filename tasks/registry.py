"""Registry-stage tasks: the MLflow training run, model registration with lineage, and the
Prefect artifacts a person reads after a run."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig, model_config_path
from mlsteward.config.paths import project_root
from mlsteward.data.state import SnapshotInfo
from mlsteward.features.repo import snapshot_entity_dtype
from mlsteward.governance import mlflow_adapter
from mlsteward.governance.abandoned_runs import end_abandoned_runs
from mlsteward.governance.mlflow_adapter import RegisteredVersion
from mlsteward.governance.promotion import open_audit
from mlsteward.governance.registry import TrainedVersion
from mlsteward.training.fitting import TuningResult
from mlsteward.training.lineage import Lineage, build_lineage
from mlsteward.training.prepared import FittedModel, PreparedData
from mlsteward.training.recipe import (
    RECIPE_ARTIFACT,
    RECIPE_SHA_TAG,
    build_recipe,
    feature_service_definition,
    recipe_sha256,
)
from tasks.common import artifact_key, run_logger

MODEL_RUNTIME_PACKAGES = ("xgboost", "pandas", "numpy", "scikit-learn")


def pip_requirements() -> list[str]:
    """Exact pins for the runtime the model needs, so MLflow need not infer them (~10 s)."""
    return [f"{p}=={metadata.version(p)}" for p in MODEL_RUNTIME_PACKAGES]


@task(name="open-training-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def open_training_run(
    cfg: ModelConfig, snapshot: SnapshotInfo, flow_run_id: str | None, reason: str = "manual"
) -> str:
    """The MLflow run this training writes to; first, the runs earlier trainings of the model
    could not end (their flow runs are over) are ended as FAILED."""
    try:
        end_abandoned_runs(cfg.name)
    except Exception as exc:  # housekeeping: the training goes on without it
        run_logger().warning("runs left RUNNING by earlier trainings were not checked: %s", exc)
    run_id = mlflow_adapter.start_run(
        cfg.name,
        run_name=f"train-{cfg.name}",
        tags={
            "mlsteward.model": cfg.name,
            "mlsteward.data_digest": snapshot.digest,
            "mlsteward.prefect_flow_run_id": flow_run_id or "none",
            "mlsteward.trigger_reason": reason[:5000],
        },
    )
    run_logger().info("MLflow run %s", run_id)
    return run_id


def make_lineage(
    cfg: ModelConfig,
    snapshot: SnapshotInfo,
    data: PreparedData,
    tuning: TuningResult,
) -> Lineage:
    start, end = data.time_range(cfg.timestamp_column)
    return build_lineage(
        model=cfg.name,
        data_digest=snapshot.digest,
        data_path=snapshot.path,
        data_source=snapshot.source_path,
        feature_service=cfg.feature_service_name,
        features=cfg.feature_names,
        training_rows=sum(data.split.sizes().values()),
        time_range=(start.isoformat(), end.isoformat()),
        split_sizes=data.split.sizes(),
        best_params=tuning.best_params,
        seed=tuning.seed,
        max_evals=len(tuning.trials),
        project_root=project_root(),
        config_path=model_config_path(cfg.name),
        training_set_digest=data.training_set_digest,
        best_iteration=tuning.best_iteration,
        tuning_execution=tuning.execution(),
    )


def make_recipe(
    cfg: ModelConfig,
    snapshot: SnapshotInfo,
    data: PreparedData,
    tuning: TuningResult,
    threshold: float | None,
) -> dict:
    """The document ``mlsteward reproduce`` rebuilds this version from (see ``recipe``)."""
    entity_dtype = snapshot_entity_dtype(cfg, Path(snapshot.path))
    return build_recipe(
        cfg=cfg,
        snapshot=snapshot,
        feature_service=feature_service_definition(cfg, snapshot.feature_dtypes, entity_dtype),
        entity_rows=sum(data.split.sizes().values()),
        training_set_digest=data.training_set_digest,
        split_sizes=data.split.sizes(),
        seed=tuning.seed,
        max_evals=len(tuning.trials),
        best_params=tuning.best_params,
        best_iteration=tuning.best_iteration,
        best_loss=tuning.best_loss,
        decision_threshold=threshold,
    )


def log_training_run(
    cfg: ModelConfig,
    snapshot: SnapshotInfo,
    data: PreparedData,
    tuning: TuningResult,
    fitted: FittedModel,
    run_id: str,
    lineage: Lineage,
) -> dict:
    """Params, metrics and lineage tags, the training input, the holdout predictions, the
    encoding, the lineage and the recipe on the training run; returns the recipe."""
    metrics = {f"test_{k}": v for k, v in fitted.test_metrics.items()}
    metrics |= {f"val_{k}": v for k, v in fitted.validation_metrics.items()}
    metrics["best_trial_loss"] = tuning.best_loss
    params = {
        **tuning.best_params,
        **cfg.tuning.objective_params(),
        "n_estimators": tuning.best_iteration + 1,
        "seed": tuning.seed,
        "max_evals": len(tuning.trials),
    }
    if fitted.threshold is not None:
        params["decision_threshold"] = fitted.threshold
    mlflow_adapter.log_params_metrics(run_id, params, metrics)
    mlflow_adapter.set_run_tags(run_id, lineage.to_tags())

    parts = data.train_partitions
    mlflow_adapter.log_training_input(
        run_id,
        pd.read_parquet(parts.paths[0]).head(100) if parts else data.split.train,
        source=snapshot.path,
        name=f"{cfg.name}-training-set",
        label=cfg.label,
        digest=snapshot.digest,
        rows=data.split.sizes()["train"],
    )
    holdout = data.split.test.copy()
    if fitted.threshold is None:
        holdout["prediction"] = fitted.test_prediction.to_numpy()
    else:
        holdout["prediction_proba"] = fitted.test_prediction.to_numpy()
        holdout["prediction"] = (holdout["prediction_proba"] >= fitted.threshold).astype("int64")
    mlflow_adapter.log_frame_artifact(run_id, holdout, "holdout/test_predictions.parquet")
    mlflow_adapter.log_dict_artifact(run_id, data.encoding.to_dict(), "feature_encoding.json")
    mlflow_adapter.log_dict_artifact(run_id, lineage.to_dict(), "lineage.json")
    recipe = make_recipe(cfg, snapshot, data, tuning, fitted.threshold)
    mlflow_adapter.log_dict_artifact(run_id, recipe, RECIPE_ARTIFACT)
    return recipe


def audit_registration(
    cfg: ModelConfig,
    snapshot: SnapshotInfo,
    tuning: TuningResult,
    fitted: FittedModel,
    run_id: str,
    registered: RegisteredVersion,
    lineage: Lineage,
    actor: str,
    reason: str,
) -> None:
    """The ``version_registered`` record: where the version came from and what it scored."""
    with open_audit() as audit:
        audit.append(
            Action.VERSION_REGISTERED,
            model=cfg.name,
            version=registered.version,
            actor=actor,
            reason=f"trained on data version {snapshot.digest[:12]}",
            details={
                "run_id": run_id,
                "artifact_sha256": registered.artifact_sha256,
                "signature_key_id": registered.signing_key_id,
                "data_digest": snapshot.digest,
                "test_metrics": {k: round(v, 6) for k, v in fitted.test_metrics.items()},
                "best_params": tuning.best_params,
                "seed": tuning.seed,
                "git_commit": lineage.git_commit,
                "trigger_reason": reason,
            },
        )


@task(name="register-model", cache_policy=NO_CACHE)
def register_model(
    cfg: ModelConfig,
    snapshot: SnapshotInfo,
    data: PreparedData,
    tuning: TuningResult,
    fitted: FittedModel,
    run_id: str,
    actor: str = "system",
    reason: str = "manual",
) -> TrainedVersion:
    """Log metrics, the training input, holdout predictions and the model; register a version
    whose tags carry the full lineage and the artifact's SHA-256."""
    lineage = make_lineage(cfg, snapshot, data, tuning)
    recipe = log_training_run(cfg, snapshot, data, tuning, fitted, run_id, lineage)
    version_tags = {
        **lineage.to_tags(),
        RECIPE_SHA_TAG: recipe_sha256(recipe),
        "lifecycle": "candidate",
        "task": cfg.task,
        "objective": cfg.tuning.objective,
        "feature_encoding": data.encoding.to_dict(),
        **{f"test_{k}": round(v, 6) for k, v in fitted.test_metrics.items()},
    }
    model_metadata = {"mlsteward_feature_encoding": data.encoding.to_dict(), "task": cfg.task}
    if fitted.threshold is not None:
        version_tags["decision_threshold"] = fitted.threshold
        model_metadata["decision_threshold"] = fitted.threshold
    registered = mlflow_adapter.log_and_register(
        run_id,
        fitted.model,
        data.example_rows(),
        cfg.name,
        pip_requirements(),
        version_tags,
        metadata=model_metadata,
    )
    audit_registration(cfg, snapshot, tuning, fitted, run_id, registered, lineage, actor, reason)
    run_logger().info(
        "registered %s version %s (artifact sha256 %s)",
        cfg.name,
        registered.version,
        registered.artifact_sha256[:12],
    )
    return TrainedVersion(
        model=cfg.name,
        version=registered.version,
        model_uri=registered.model_uri,
        run_id=run_id,
        artifact_sha256=registered.artifact_sha256,
        test_metrics=fitted.test_metrics,
        best_params=tuning.best_params,
        trials=len(tuning.trials),
        threshold=fitted.threshold,
        task=cfg.task,
        objective=cfg.tuning.objective,
        lineage={**lineage.to_dict(), "model_artifact_sha256": registered.artifact_sha256},
    )


@task(name="close-training-run", cache_policy=NO_CACHE)
def close_training_run(run_id: str, status: str = "FINISHED") -> None:
    mlflow_adapter.end_run(run_id, status)


def lineage_markdown(outcome: TrainedVersion) -> str:
    lin = outcome.lineage
    rows = [
        ("registered model", f"`{outcome.model}` version **{outcome.version}**"),
        ("data version (snapshot SHA-256)", f"`{lin['data_digest']}`"),
        ("snapshot", f"`{lin['data_path']}`"),
        ("feature service", f"`{lin['feature_service']}`"),
        ("training-set rows", f"{lin['training_rows']} ({lin['split_sizes']})"),
        ("event-time range", f"{lin['time_range'][0]} .. {lin['time_range'][1]}"),
        ("best params", f"`{outcome.best_params}`"),
        ("seed / trials", f"{lin['seed']} / {outcome.trials}"),
        ("code", f"`{lin['git_commit']}` (dirty: {lin['git_dirty']})"),
        ("uv.lock SHA-256", f"`{lin['lock_sha256']}`"),
        ("model artifact SHA-256", f"`{outcome.artifact_sha256}`"),
        ("MLflow run", f"`{outcome.run_id}`"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# Lineage of {outcome.model} v{outcome.version}\n\n| | |\n|---|---|\n{body}\n"


@task(name="publish-run-artifacts", cache_policy=NO_CACHE)
def publish_run_artifacts(outcome: TrainedVersion) -> None:
    """Leave a metrics table and a lineage page on the flow run, visible in the Prefect UI."""
    create_table_artifact(
        key=artifact_key(outcome.model, "test-metrics"),
        table=[{"metric": k, "value": round(v, 6)} for k, v in outcome.test_metrics.items()],
        description=f"Test-set metrics of {outcome.model} v{outcome.version}",
    )
    create_markdown_artifact(
        key=artifact_key(outcome.model, "lineage"),
        markdown=lineage_markdown(outcome),
        description=f"Lineage of {outcome.model} v{outcome.version}",
    )

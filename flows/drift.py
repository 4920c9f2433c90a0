"""The drift flow: the champion's reference against recent data, Evidently, a decision, and
(within the cooldown rules) a retraining run."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.results import DriftRunResult, RetrainOutcome
from flows.training import training_flow
from mlsteward.monitoring.specs import DriftSpec
from tasks.alerts import raise_drift_alerts
from tasks.common import run_actor, run_logger
from tasks.lineage import lineage_hooks
from tasks.monitoring import (
    claim_retrain_slot,
    current_from_file,
    current_from_log,
    decide_on_drift,
    detect_drift,
    drift_reference,
    record_drift,
)
from tasks.reaper import reap_before_start
from tasks.retrain import emit_drift_event, running_training_runs, training_deployment_available
from tasks.scoring import load_champion


@flow(name="drift-model", log_prints=True, **lineage_hooks("drift"))
def drift_flow(
    model: str = "heart_disease",
    current: str | None = None,
    window_days: float | None = None,
    requested_by: str | None = None,
) -> DriftRunResult:
    """Compare recent data with the champion's reference; retrain when the policy says so.

    Args:
        model: name of a model config in config/models.
        current: a file in the model's source format (label optional) instead of the
            prediction log.
        window_days: prediction-log window (default: the model's drift.window_days).
        requested_by: the principal this run acts for (``user:alice``).
    """
    # 0. The run's settings (the window defaults to the model's drift.window_days)
    spec = DriftSpec.resolve(
        model, actor=run_actor(requested_by), current=current, window_days=window_days
    )
    cfg, actor = spec.cfg, spec.actor

    # 1. Reference (champion's holdout; its training window when that is small) and current
    #    window (a file, or the prediction log)
    champion = load_champion(cfg, actor)
    reference = drift_reference(cfg, champion)
    recent = (
        current_from_file(cfg, champion, spec.current)
        if spec.current
        else current_from_log(cfg, spec.window_days)
    )

    # 2. Evidently, then the policy's decision; both recorded
    result = detect_drift(cfg, champion, reference, recent)
    for note in result.notes:
        run_logger().warning("%s", note)
    decision = decide_on_drift(cfg, result)
    record_drift(cfg, result, decision, champion.info.version, actor)
    alerts = raise_drift_alerts(cfg, result, champion.info.version, actor)
    out = DriftRunResult.model_validate(
        {**result.to_dict(), "decision": decision.to_dict(), "retrain": None, "alerts": alerts}
    )
    if not decision.retrain:
        return out

    # 3. Retrain, at most once per cooldown window and never beside a running one
    reason = "drift: " + "; ".join(decision.reasons)
    reap_before_start(cfg.name)  # a dead training run would block the retrain for ever
    running = running_training_runs(cfg.name)
    verdict = claim_retrain_slot(
        cfg, decision.reasons, running, actor, {"report": result.report_path}
    )
    retrain = RetrainOutcome(triggered=verdict.allowed, reason=verdict.reason)
    out.retrain = retrain
    if not verdict.allowed:
        return out
    if training_deployment_available(cfg.name):
        event_id = emit_drift_event(cfg, reason, flow_run.get_id(), {"report": result.report_path})
        out.retrain = retrain.model_copy(update={"mode": "deployment", "event_id": event_id})
    else:
        run_logger().warning(
            "no Prefect server with a train-%s deployment: retraining as a subflow of this run",
            cfg.name,
        )
        trained = training_flow(model=cfg.name, reason=reason)
        out.retrain = retrain.model_copy(update={"mode": "subflow", "training": trained.governance})
    return out

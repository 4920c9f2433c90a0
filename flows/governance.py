"""Governance flows: validate a version, promote it per policy (auto, or approvals through
the pause form with approval tokens), and roll back. ``govern`` is shared by the training,
promotion and rollout flows so all decide the same way."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from prefect import flow, pause_flow_run
from prefect.exceptions import FlowPauseTimeout, Pause
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.governance.promotion import PromotionResult
from mlsteward.governance.specs import PromotionSpec, RollbackSpec
from tasks.approval import ApprovalInput, ApprovalRounds, approval_form, await_applied_pause
from tasks.common import artifact_key, run_actor, run_logger
from tasks.promotion import audit_event, promotion_candidate, promotion_policy, rollback_champion
from tasks.validation import (
    gate_champion,
    gate_fairness,
    gate_metric_thresholds,
    publish_validation,
    record_validation,
    score_on_holdout,
)

APPROVAL_POLL_SECONDS = 2


def validate(cfg: ModelConfig, version: str, actor: str) -> ValidationReport:
    """Every gate runs and reports; the version is then marked passed or failed once."""
    challenger, champion, _ = score_on_holdout(cfg, version, actor)
    # quote(): a score and the report carry the holdout evaluation (curves, a SHAP sample);
    # Prefect would walk every number of it looking for upstream tasks (~1.5 s a run)
    gates = [
        gate_metric_thresholds(cfg, quote(challenger)),
        gate_fairness(cfg, quote(challenger)),
        gate_champion(cfg, quote(challenger), quote(champion)),
    ]
    report = ValidationReport(
        model=cfg.name,
        version=str(version),
        gates=gates,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    record_validation(cfg, quote(report), champion.version if champion else None, actor)
    publish_validation(quote(report), quote(challenger))
    return report


def request_approval(
    cfg: ModelConfig,
    version: str,
    report: ValidationReport,
    actor: str,
    *,
    attempt: int = 1,
    timeout: float | None = None,
) -> ApprovalInput | None:
    """Pause this flow run until a person answers; None when ``timeout`` (default: the
    model's approval timeout) passed first.

    The pause is flow-level (Prefect does not pause tasks), and the form shows the validation
    summary. ``resume_flow_run`` with input, from the UI, ``mlsteward approve`` or the API,
    resumes it. Each ``attempt`` pauses with its own key: an answer that does not settle the
    request (refused, or one approval of several) leads to another pause.
    """
    timeout = cfg.promotion.approval_timeout_seconds if timeout is None else timeout
    if attempt == 1:
        audit_event(
            Action.APPROVAL_REQUESTED,
            cfg.name,
            version,
            actor,
            f"policy manual: waiting up to {timeout:.0f} s for {cfg.approvals.required} "
            f"approval(s) in flow run {flow_run.get_id()}",
            {
                "flow_run_id": flow_run.get_id(),
                "timeout_seconds": timeout,
                "requested_by": actor,
                "approvals_required": cfg.approvals.required,
            },
        )
    run_logger().warning(
        "waiting for approval of %s v%s: run `mlsteward approve %s %s --reason TEXT "
        "[--reject]` as an approver (MLSTEWARD_TOKEN), or answer the form in the Prefect UI "
        "with an approval token (`--print-token`)",
        cfg.name,
        version,
        cfg.name,
        version,
    )
    form = approval_form(report.to_markdown(), cfg.name, version)
    key = artifact_key("approve", cfg.name, f"v{version}", str(attempt))
    seconds = max(1, math.ceil(timeout))
    poll = min(APPROVAL_POLL_SECONDS, seconds)
    try:
        return pause_flow_run(wait_for_input=form, timeout=seconds, poll_interval=poll, key=key)
    except FlowPauseTimeout:
        return None
    except Pause as paused:
        return await_applied_pause(paused, flow_run.get_id(), form, key, seconds, poll)


def govern(
    cfg: ModelConfig,
    version: str,
    *,
    actor: str,
    reason: str | None = None,
    report: ValidationReport | None = None,
    promote: bool = True,
) -> GovernanceOutcome:
    """Gates, then the promotion policy (unless ``promote`` is False: a passing version then
    stays the challenger). Returns what was decided and why."""
    # 1. Validation gates (skipped only when the caller has a current report)
    report = report or validate(cfg, version, actor)

    # 2. Policy (mlsteward.governance.policy): auto promotes, gates again if the promotion went
    # stale; manual pauses for the form until approvals.required approvals with tokens are in
    rounds = ApprovalRounds(cfg.promotion.approval_timeout_seconds)

    def ask(current: ValidationReport) -> ApprovalInput | None:
        turn = rounds.next()
        if turn is None:
            return None
        attempt, remaining = turn
        return request_approval(cfg, version, current, actor, attempt=attempt, timeout=remaining)

    return promotion_policy(
        cfg,
        version,
        report,
        actor=actor,
        reason=reason,
        promote=promote,
        flow_run_id=flow_run.get_id(),
        validate=lambda: validate(cfg, version, actor),
        ask=ask,
    )


@flow(name="promote-model", log_prints=True)
def promotion_flow(
    model: str = "heart_disease",
    version: str = "",
    reason: str | None = None,
    revalidate: bool = False,
    requested_by: str | None = None,
) -> GovernanceOutcome:
    """Promote VERSION of MODEL to champion, following the model's promotion policy.

    Under the manual policy the run pauses for approvals: an answer counts only with an
    approval token (``mlsteward approve MODEL VERSION``, or the API's approve route).

    Args:
        model: name of a model config in config/models.
        version: registered version number.
        reason: why (recorded in the audit trail).
        revalidate: run the gates again even if the version's report is current.
        requested_by: the principal this run acts for (``user:alice``): its audit actor is
            ``flow-run:<id> for user:alice``. Who approves is never a parameter.
    """
    # 0. The run's settings: a request that cannot be right is refused before anything runs
    spec = PromotionSpec.resolve(
        model,
        version=version,
        reason=reason,
        revalidate=revalidate,
        actor=run_actor(requested_by),
    )

    # 1. The version and its report while current (None: the gates run again)
    info, report = promotion_candidate(spec)

    # 2. Gates if needed, then the promotion policy
    return govern(spec.cfg, info.version, actor=spec.actor, reason=spec.reason, report=report)


@flow(name="rollback-model", log_prints=True)
def rollback_flow(
    model: str = "heart_disease",
    reason: str = "",
    to_version: str | None = None,
    requested_by: str | None = None,
) -> PromotionResult:
    """Restore the previous (or a named earlier) champion of MODEL.

    Args:
        model: name of a model config in config/models.
        reason: why (required; recorded in the audit trail).
        to_version: a specific earlier champion; default: the one before the current.
        requested_by: the principal this run acts for (``user:alice``): its audit actor is
            ``flow-run:<id> for user:alice``.
    """
    # 0. The run's settings: no rollback without a reason
    spec = RollbackSpec.resolve(
        model, reason=reason, to_version=to_version, actor=run_actor(requested_by)
    )

    # 1. The earlier champion back, verified and audited
    return rollback_champion(spec)

"""Promotion-stage tasks: thin wrappers that log and audit around
``mlsteward.governance.promotion``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.governance import candidate, ledger, registry
from mlsteward.governance import promotion as governance
from mlsteward.governance.four_eyes import redeem_answer
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import (
    Answer,
    Approval,
    GovernanceOutcome,
    PolicyActions,
    apply_policy,
)
from mlsteward.governance.promotion import PromotionResult
from mlsteward.governance.registry import CHAMPION, VersionInfo
from mlsteward.governance.specs import PromotionSpec, RollbackSpec
from mlsteward.identity.tokens import APPROVAL_PREFIX, token_id_of
from tasks.common import artifact_key, run_logger

PROMOTED_EVENT = "mlsteward.model.promoted"
"""What the watch deployment's trigger waits for: a new champion to watch."""


@task(name="promote-version", cache_policy=NO_CACHE)
def promote_version(
    cfg: ModelConfig,
    version: str,
    actor: str,
    reason: str,
    approval: dict[str, Any] | None = None,
) -> PromotionResult:
    result = governance.promote(cfg, version, actor=actor, reason=reason, approval=approval)
    run_logger().info(
        "%s v%s is now champion (previous: %s; artifact sha256 %s…)",
        cfg.name,
        version,
        result.previous_champion or "none",
        result.artifact_sha256[:12],
    )
    _publish(cfg.name, "promotion", result, reason, actor)
    emit_event(
        event=PROMOTED_EVENT,
        resource={
            "prefect.resource.id": f"mlsteward.model.{cfg.name}",
            "prefect.resource.name": cfg.name,
        },
        payload={
            "version": str(version),
            "previous": result.previous_champion,
            "audit_seq": result.audit_seq,
        },
    )
    return result


@task(name="reject-version", cache_policy=NO_CACHE)
def reject_version(
    cfg: ModelConfig,
    version: str,
    actor: str,
    reason: str,
    action: Action = Action.APPROVAL_REJECTED,
    details: dict[str, Any] | None = None,
) -> None:
    governance.reject(cfg, version, actor=actor, reason=reason, action=action, details=details)
    run_logger().warning("%s v%s rejected by %s: %s", cfg.name, version, actor, reason)


def reject_timed_out(
    cfg: ModelConfig, version: str, timeout: float, flow_run_id: str | None
) -> None:
    """Nobody answered a manual promotion in time: counted as rejected.

    A plain function, not a task: after a pause timed out the flow run may not start task runs.
    """
    governance.reject(
        cfg,
        version,
        actor="system",
        reason=f"no approval within {timeout} s: counted as rejected",
        action=Action.APPROVAL_TIMED_OUT,
        details={"flow_run_id": flow_run_id, "timeout_seconds": timeout},
    )


def promotion_candidate(spec: PromotionSpec) -> tuple[VersionInfo, ValidationReport | None]:
    """The version a promote request names and its current report (None: run the gates).
    Registry reads that refuse a bad request before anything runs; no task run of its own."""
    return candidate.promotion_candidate(spec)


def promotion_policy(
    cfg: ModelConfig,
    version: str,
    report: ValidationReport,
    *,
    actor: str,
    reason: str | None,
    promote: bool,
    flow_run_id: str | None,
    validate: Callable[[], ValidationReport],
    ask: Callable[[ValidationReport], Answer | None],
) -> GovernanceOutcome:
    """The policy's decision, acting through these tasks; ``validate`` (the gates) and ``ask``
    (one pause for a person) are the calling flow's. A plain function: it calls tasks."""

    def standing() -> ledger.Standing:
        with governance.open_audit() as audit:
            return ledger.standing(cfg.name, version, audit)

    def promote_(by: str, why: str, approval: dict[str, Any] | None) -> PromotionResult:
        return promote_version(cfg, version, by, why, approval)

    def verify(answer: Answer) -> Approval:
        now = standing()
        return redeem_answer(
            cfg,
            version,
            answer,
            used_by=actor,
            submitted_by=now.submitter,
            approved=now.approvals,
            flow_run_id=flow_run_id,
        )

    def refuse(answer: Answer, why: str) -> None:
        details = {
            "typed_name": answer.approver,
            "decision": answer.decision,
            "token_given": bool((answer.approval_token or "").strip()),
            "token_id": token_id_of((answer.approval_token or "").strip(), APPROVAL_PREFIX),
            "flow_run_id": flow_run_id,
        }
        audit_event(Action.APPROVAL_REFUSED, cfg.name, version, actor, why, details)
        run_logger().warning("answer refused: %s", why)

    def reject(approval: Approval) -> None:
        details = {**approval.model_dump(), "identity": approval.approver}
        reject_version(
            cfg, version, approval.approver, approval.reason, Action.APPROVAL_REJECTED, details
        )

    def grant(approval: Approval) -> list[str]:
        details = {
            **approval.model_dump(),
            "identity": approval.approver,
            "approvals_required": cfg.approvals.required,
        }
        audit_event(
            Action.APPROVAL_GRANTED, cfg.name, version, approval.approver, approval.reason, details
        )
        approvals = standing().approvals
        run_logger().info(
            "%s approved %s v%s: %d of %d approval(s)",
            approval.approver,
            cfg.name,
            version,
            len(approvals),
            cfg.approvals.required,
        )
        return approvals

    actions = PolicyActions(
        validate=validate,
        promote=promote_,
        ask=ask,
        verify=verify,
        refuse=refuse,
        reject=reject,
        grant=grant,
        approvals=lambda: standing().approvals,
        is_champion=lambda: CHAMPION in registry.get_version(cfg.name, version).aliases,
        time_out=lambda: reject_timed_out(
            cfg, version, cfg.promotion.approval_timeout_seconds, flow_run_id
        ),
        warn=lambda message: run_logger().warning("%s", message),
    )
    return apply_policy(cfg, version, report, actions, actor=actor, reason=reason, promote=promote)


# No retries: an append that committed before a later failure would be written twice.
@task(name="audit-event", cache_policy=NO_CACHE)
def audit_event(
    action: Action,
    model: str,
    version: str | None,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> int:
    with governance.open_audit() as audit:
        return audit.append(
            action, model=model, version=version, actor=actor, reason=reason, details=details
        ).seq


@task(name="rollback-champion", cache_policy=NO_CACHE)
def rollback_champion(spec: RollbackSpec) -> PromotionResult:
    cfg, reason, actor = spec.cfg, spec.reason, spec.actor
    result = governance.rollback(cfg, reason=reason, actor=actor, to_version=spec.to_version)
    run_logger().warning(
        "%s rolled back: champion v%s -> v%s (%s)",
        cfg.name,
        result.previous_champion,
        result.version,
        reason,
    )
    _publish(cfg.name, "rollback", result, reason, actor)
    return result


def _publish(model: str, kind: str, result: PromotionResult, reason: str, actor: str) -> None:
    create_markdown_artifact(
        key=artifact_key(model, kind),
        markdown=(
            f"# {model}: {kind}\n\n| | |\n|---|---|\n"
            f"| champion | v{result.version} |\n"
            f"| previous champion | {('v' + result.previous_champion) if result.previous_champion else 'none'} |\n"  # noqa: E501
            f"| by | {actor} |\n| reason | {reason} |\n"
            f"| artifact SHA-256 (verified) | `{result.artifact_sha256}` |\n"
            f"| audit record | #{result.audit_seq} |\n"
        ),
        description=f"{model} champion is v{result.version}",
    )

"""What every governance decision returns: one ``Decision`` document (the CLI's ``--json``,
the API's body), with the reasons a person acts on; a pending one names who may approve."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.governance.four_eyes import SECOND_PRINCIPAL_HINT, eligible_approvers
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.governance.promotion import PromotionResult, open_audit

DecisionName = Literal["promoted", "rejected", "challenger", "pending", "rolled_back", "validated"]


class Decision(BaseModel):
    """What every decision returns (``model_dump()`` is the CLI's ``--json`` and the API's
    body)."""

    model: str
    version: str
    decision: DecisionName
    reasons: list[str] = []
    approvals: list[str] = []
    """Identities whose approval counts so far (manual policy)."""
    approvals_required: int = 1
    promotion: PromotionResult | None = None
    """Set when the champion changed."""
    audit_seq: int | None = None


def decided(
    cfg: ModelConfig,
    version: str,
    decision: DecisionName,
    reasons: list[str],
    *,
    approvals: list[str] | None = None,
    promotion: PromotionResult | None = None,
    audit_seq: int | None = None,
) -> Decision:
    return Decision(
        model=cfg.name,
        version=version,
        decision=decision,
        reasons=reasons,
        approvals=approvals or [],
        approvals_required=cfg.approvals.required,
        promotion=promotion,
        audit_seq=audit_seq,
    )


def pending(
    cfg: ModelConfig,
    version: str,
    approvals: list[str],
    submitted_by: str | None,
    reasons: list[str],
    *,
    audit_seq: int | None = None,
) -> Decision:
    """Pending, with whom it waits for: the approvers who may still approve."""
    required = cfg.approvals.required
    waiting = eligible_approvers(cfg, [*approvals, *([submitted_by] if submitted_by else [])])
    have = f"{len(approvals)} of {required} approval(s)" + (
        f" ({', '.join(approvals)})" if approvals else ""
    )
    if waiting:
        how = f"mlsteward approve {cfg.name} {version} --reason TEXT"
        who = f"may approve: {', '.join(waiting)} ({how})"
    else:
        who = f"nobody else may approve yet; {SECOND_PRINCIPAL_HINT}"
    return decided(
        cfg, version, "pending", [*reasons, have, who], approvals=approvals, audit_seq=audit_seq
    )


def judged(
    cfg: ModelConfig, version: str, report: ValidationReport, decision: DecisionName = "rejected"
) -> Decision:
    """A fresh report's verdict: failed gates reject the version, with every reason."""
    action = Action.VALIDATION_PASSED if report.passed else Action.VALIDATION_FAILED
    with open_audit() as audit:
        last = audit.query(model=cfg.name, version=version, action=action, limit=1)
    return decided(
        cfg,
        version,
        decision if report.passed else "rejected",
        report.reasons(),
        audit_seq=last[-1].seq if last else None,
    )


def from_outcome(cfg: ModelConfig, outcome: GovernanceOutcome, approvals: list[str]) -> Decision:
    if outcome.decision == "promoted" and outcome.promotion is not None:
        return decided(
            cfg,
            outcome.version,
            "promoted",
            [],
            approvals=approvals,
            promotion=outcome.promotion,
            audit_seq=outcome.promotion.audit_seq,
        )
    return decided(cfg, outcome.version, outcome.decision, outcome.reasons or [])

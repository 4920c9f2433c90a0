"""One approval under the manual policy, wherever it comes from: checked (four eyes, once per
approver), then sent to the promotion run paused for the version, as a form answer with an
approval token minted for the approver, or recorded here when no run waits; the version is
promoted once ``approvals.required`` distinct approvals exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlsteward.audit import Action, AuditRecord, AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.errors import PromotionError
from mlsteward.governance import approvals as paused_runs
from mlsteward.governance import ledger
from mlsteward.governance import promotion as governance
from mlsteward.governance.candidate import check_candidate
from mlsteward.governance.decision_result import Decision, decided, from_outcome, judged, pending
from mlsteward.governance.four_eyes import four_eyes_refusal
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import Approval, Subject, promote_while_current
from mlsteward.governance.promotion import PromotionResult, open_audit
from mlsteward.governance.registry import VersionInfo
from mlsteward.governance.run_gates import run_gates
from mlsteward.identity import Principal, identity_store
from mlsteward.identity.tokens import APPROVAL_PREFIX, token_id_of

log = logging.getLogger("mlsteward")

ANSWER_WAIT_SECONDS = 60.0
"""How long an approval sent to a paused run waits for the run to record it."""
PROMOTION_WAIT_SECONDS = 300.0
"""How long it then waits for the run's promotion (gates may run again first)."""
POLL_SECONDS = 0.2


def approve_now(
    principal: Principal,
    cfg: ModelConfig,
    version: str,
    reason: str,
    standing: ledger.Standing,
    stale: bool,
    overriding: dict[str, Any] | None,
) -> Decision:
    """One approval by ``principal``: to the paused run if one waits, else recorded here;
    the promotion once enough distinct approvals exist."""
    check_approver(principal, cfg, version, standing, duplicate_ok=True)
    required = cfg.approvals.required
    if principal.identity in standing.approvals and len(standing.approvals) < required:
        return pending(
            cfg,
            version,
            standing.approvals,
            standing.submitter,
            [f"{principal.identity} approved already; each approver counts once"],
        )
    run = paused_runs.first_paused(standing.flow_runs)
    if run is not None and overriding is None:
        return answer_run(principal, cfg, version, run, "approve", reason)
    if stale:
        report = run_gates(cfg, version, principal.actor)
        if not report.passed:
            return judged(cfg, version, report)
    approval = Approval(
        approver=principal.identity,
        reason=reason,
        decision="approve",
        channel="request",
        override=overriding is not None,
    )
    approvals = list(standing.approvals)
    if principal.identity not in approvals:
        with open_audit() as audit:
            granted = audit.append(
                Action.APPROVAL_GRANTED,
                model=cfg.name,
                version=version,
                actor=principal.actor,
                reason=reason,
                details={
                    **approval.model_dump(),
                    **(overriding or {}),
                    "identity": principal.identity,
                    "approvals_required": required,
                },
            )
            if standing.request is None and len(approvals) + 1 < required:
                request(audit, principal, cfg, version)
        approvals.append(principal.identity)
    else:
        granted = None
    if len(approvals) < required:
        return pending(
            cfg,
            version,
            approvals,
            standing.submitter,
            [],
            audit_seq=granted.seq if granted else None,
        )
    outcome = promote_while_current(
        Subject(cfg.name, version, True),
        PlainPromoter(cfg, version, principal.actor, None),
        principal.actor,
        reason,
        {**approval.model_dump(), "approvers": approvals},
    )
    return from_outcome(cfg, outcome, approvals)


def queue(
    principal: Principal,
    cfg: ModelConfig,
    version: str,
    standing: ledger.Standing,
    refusal: str,
    overriding: dict[str, Any] | None,
) -> Decision:
    """A promote request by someone whose approval cannot count: queued for approvers."""
    with open_audit() as audit:
        rec = None
        if standing.request is None or overriding is not None:
            rec = request(audit, principal, cfg, version, overriding)
    why = refusal or f"{principal.identity} may not approve {cfg.name} (permission 'approve')"
    return pending(
        cfg,
        version,
        standing.approvals,
        standing.submitter,
        [f"queued for approval: {why}"],
        audit_seq=rec.seq if rec else None,
    )


def request(
    audit: AuditStore,
    principal: Principal,
    cfg: ModelConfig,
    version: str,
    overriding: dict[str, Any] | None = None,
) -> AuditRecord:
    required = cfg.approvals.required
    return audit.append(
        Action.APPROVAL_REQUESTED,
        model=cfg.name,
        version=version,
        actor=principal.actor,
        reason=f"policy manual: {required} approval(s) needed",
        details={
            "requested_by": principal.identity,
            "approvals_required": required,
            "flow_run_id": None,
            "channel": "request",
            **({"override": True, **overriding} if overriding else {}),
        },
    )


def check_approver(
    principal: Principal,
    cfg: ModelConfig,
    version: str,
    standing: ledger.Standing,
    *,
    duplicate_ok: bool = False,
) -> None:
    """Four eyes (audited when broken) and, unless ``duplicate_ok``, one approval each.

    Raises:
        PromotionError: the principal submitted the version, or approved it already.
    """
    refusal = four_eyes_refusal(principal.identity, standing.submitter, cfg.name, version)
    if refusal:
        with open_audit() as audit:
            audit.append(
                Action.APPROVAL_REFUSED,
                model=cfg.name,
                version=version,
                actor=principal.actor,
                reason=refusal,
                details={"identity": principal.identity, "submitter": standing.submitter},
            )
        raise PromotionError(refusal)
    if not duplicate_ok and principal.identity in standing.approvals:
        raise PromotionError(
            f"{principal.identity} approved {cfg.name} v{version} already; each approver "
            "counts once"
        )


def answer_run(
    principal: Principal, cfg: ModelConfig, version: str, run: str, decision: str, reason: str
) -> Decision:
    """Resume the paused run with an approval token for ``principal``, then report what the
    run recorded (or ``pending`` when it has not yet)."""
    with identity_store() as store:
        token = store.issue_approval_token(
            principal, model=cfg.name, version=version, decision=decision, reason=reason
        )
    token_id = token_id_of(token, APPROVAL_PREFIX) or ""
    with open_audit() as audit:
        head = audit.last(model=cfg.name)
    after = head.seq if head else 0
    paused_runs.resume_with_answer(
        run, decision=decision, reason=reason, approval_token=token, approver=principal.identity
    )
    answer = _wait_for(
        lambda audit: ledger.answered(audit, cfg.name, version, token_id, after),
        ANSWER_WAIT_SECONDS,
    )
    if answer is None:
        with open_audit() as audit:
            standing = ledger.standing(cfg.name, version, audit)
        return pending(
            cfg,
            version,
            standing.approvals,
            standing.submitter,
            [f"answer sent to flow run {run}; the run has not recorded it yet"],
        )
    if answer.action == Action.APPROVAL_REFUSED:
        raise PromotionError(f"flow run {run} refused the answer: {answer.reason}")
    if answer.action == Action.APPROVAL_REJECTED:
        return decided(
            cfg,
            version,
            "rejected",
            [f"rejected by {principal.identity}: {reason} (flow run {run})"],
            audit_seq=answer.seq,
        )
    return _after_grant(cfg, version, run, answer)


def _after_grant(cfg: ModelConfig, version: str, run: str, granted: AuditRecord) -> Decision:
    """A run recorded our approval: promoted once it has enough, else still pending."""
    ends = {Action.PROMOTED.value, Action.PROMOTION_REFUSED.value, Action.VALIDATION_FAILED.value}

    def outcome(audit: Any) -> AuditRecord | None:
        return ledger.latest(audit, cfg.name, version, ends, granted.seq)

    with open_audit() as audit:
        done = outcome(audit)
        standing = ledger.standing(cfg.name, version, audit)
    counted = list(ledger.details(granted).get("approvers") or standing.approvals)
    if done is None and len(standing.approvals) < cfg.approvals.required:
        return pending(
            cfg,
            version,
            standing.approvals,
            standing.submitter,
            [f"approval recorded by flow run {run}"],
            audit_seq=granted.seq,
        )
    done = done or _wait_for(outcome, PROMOTION_WAIT_SECONDS)
    if done is None or done.action != Action.PROMOTED:
        why = done.reason if done is not None else f"flow run {run} has not promoted it yet"
        return pending(cfg, version, counted, standing.submitter, [why], audit_seq=granted.seq)
    info = ledger.details(done)
    approval = info.get("approval")
    approvers = (approval.get("approvers") if isinstance(approval, dict) else None) or counted
    result = PromotionResult(
        model=cfg.name,
        action="promoted",
        version=version,
        previous_champion=info.get("from"),
        artifact_sha256=str(info.get("artifact_sha256") or ""),
        audit_seq=done.seq,
    )
    return decided(
        cfg,
        version,
        "promoted",
        [],
        approvals=list(approvers),
        promotion=result,
        audit_seq=done.seq,
    )


def _wait_for(find: Callable[[Any], AuditRecord | None], timeout: float) -> AuditRecord | None:
    deadline = time.monotonic() + timeout
    while True:
        with open_audit() as audit:
            found = find(audit)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class PlainPromoter:
    """What ``promote_while_current`` needs, without Prefect: the plain promotion and gates."""

    cfg: ModelConfig
    version: str
    actor: str
    overriding: dict[str, Any] | None

    def promote(self, actor: str, reason: str, approval: dict[str, Any] | None) -> PromotionResult:
        return governance.promote(
            self.cfg,
            self.version,
            actor=actor,
            reason=reason,
            approval=approval,
            override=self.overriding,
        )

    def validate(self) -> ValidationReport:
        return run_gates(self.cfg, self.version, self.actor)

    def warn(self, message: str) -> None:
        log.warning("%s", message)


def checked_candidate(
    principal: Principal, cfg: ModelConfig, version: str, blocked: str | None
) -> tuple[VersionInfo, bool]:
    """The version and whether its gates must run again; a refusal is audited with the
    principal as actor."""
    try:
        return check_candidate(cfg, version, blocked=blocked)
    except PromotionError as exc:
        with open_audit() as audit:
            audit.append(
                Action.PROMOTION_REFUSED,
                model=cfg.name,
                version=version,
                actor=principal.actor,
                reason=str(exc),
                details={"blocked": blocked} if blocked else None,
            )
        raise

"""Governance decisions by a principal: validate, promote, approve, reject, roll back, and the
queue of versions waiting for approval.

Plain functions shared by the CLI and the REST API, so both decide the same way. Each takes
the acting :class:`~mlsteward.identity.Principal` first, authorizes it for the model, and
records its audit records with ``principal.actor`` (``user:alice``; never an environment
variable or a typed name). No Prefect flow run is started: a promotion whose report is current
is a few registry and audit round trips; a stale report is judged again here
(``run_gates``), as the promotion flow would.

Under ``promotion.policy: manual`` a version needs ``approvals.required`` distinct approvers,
none of them its submitter (four eyes). Approvals are audit records, so they count whichever
channel they came through; when a promotion flow run is paused for the version, an approval
goes to that run as a form answer with an approval token, and the run records and counts it.

Errors: ``PermissionDeniedError`` (HTTP 403), ``NotFoundError`` (404), ``PromotionError`` for a
state conflict (409: already champion, four eyes, override needed, gates failed),
``MlstewardError`` for bad input (422).
"""

from __future__ import annotations

from typing import Any

from mlsteward.config.models import ModelConfig, load_model_config, model_config_path
from mlsteward.config.names import check_model_name
from mlsteward.errors import ConfigError, MlstewardError, NotFoundError, PromotionError
from mlsteward.governance import approvals as paused_runs
from mlsteward.governance import ledger, registry
from mlsteward.governance import promotion as governance
from mlsteward.governance.approving import (
    PlainPromoter,
    answer_run,
    approve_now,
    check_approver,
    checked_candidate,
    queue,
)
from mlsteward.governance.decision_result import (
    Decision,
    DecisionName,
    decided,
    from_outcome,
    judged,
)
from mlsteward.governance.four_eyes import four_eyes_refusal
from mlsteward.governance.policy import AUTO_REASON, Approval, Subject, promote_while_current
from mlsteward.governance.promotion import PromotionResult, open_audit
from mlsteward.governance.registry import CHAMPION
from mlsteward.governance.run_gates import run_gates
from mlsteward.identity import Permission, Principal, authorize, identity_store

__all__ = [
    "Decision",
    "DecisionName",
    "answer_flow_run",
    "approval_token",
    "approve",
    "pending_approvals",
    "promote",
    "reject",
    "rollback",
    "submitter",
    "validate",
]


# -- the decisions -----------------------------------------------------------------------------


def validate(principal: Principal, model: str, version: str) -> Decision:
    """Run every gate on the version now and record the report (VALIDATE).

    Raises:
        NotFoundError: no such model or version.
        PromotionError: the version is the champion (it is not re-validated).
    """
    cfg, version = _model(model), _version(version)
    authorize(principal, Permission.VALIDATE, cfg)
    info = registry.get_version(cfg.name, version)
    if CHAMPION in info.aliases:
        raise PromotionError(f"{cfg.name} v{version} is the champion; it is not re-validated")
    report = run_gates(cfg, version, principal.actor)
    return judged(cfg, version, report, decision="validated")


def promote(
    principal: Principal,
    model: str,
    version: str,
    *,
    reason: str | None = None,
    override: bool = False,
) -> Decision:
    """Promote VERSION (PROMOTE), following the model's policy.

    ``auto``: the gates run again if the report is stale, then the version is promoted.
    ``manual``: a principal who may approve (and did not submit the version) counts as one
    approval, and the version is promoted once ``approvals.required`` distinct approvals
    exist; otherwise the request is queued and the decision is ``pending``. A version a
    person rejected or that was rolled back from needs ``override`` with a reason and the
    OVERRIDE permission; a version whose gates failed is never promotable.
    """
    cfg, version = _model(model), _version(version)
    authorize(principal, Permission.PROMOTE, cfg)
    why = _optional_reason(reason)
    overriding = _override(principal, cfg, why) if override else None
    with open_audit() as audit:
        standing = ledger.standing(cfg.name, version, audit)
    blocked = None if overriding else standing.blocked
    _, stale = checked_candidate(principal, cfg, version, blocked)
    if cfg.promotion.policy == "manual":
        refusal = four_eyes_refusal(principal.identity, standing.submitter, cfg.name, version)
        if principal.may(Permission.APPROVE, cfg) and not refusal:
            if why is None:
                raise MlstewardError(
                    "reason: under the manual policy a promote by an approver is an approval; "
                    "give a reason (--reason TEXT), it goes into the audit trail"
                )
            return approve_now(principal, cfg, version, why, standing, stale, overriding)
        return queue(principal, cfg, version, standing, refusal, overriding)
    if stale:
        report = run_gates(cfg, version, principal.actor)
        if not report.passed:
            return judged(cfg, version, report)
    outcome = promote_while_current(
        Subject(cfg.name, version, True),
        PlainPromoter(cfg, version, principal.actor, overriding),
        principal.actor,
        why or AUTO_REASON,
    )
    return from_outcome(cfg, outcome, [])


def approve(principal: Principal, model: str, version: str, *, reason: str) -> Decision:
    """Approve VERSION (APPROVE; four eyes: not its submitter).

    When a promotion flow run is paused waiting for this version, an approval token is minted
    for the principal and the run resumed with it (the run records and counts it); otherwise
    the approval is recorded here and the version promoted once enough distinct approvals
    exist.
    """
    cfg, version = _model(model), _version(version)
    authorize(principal, Permission.APPROVE, cfg)
    why = _required_reason(reason, "an approval")
    _manual_only(cfg)
    with open_audit() as audit:
        standing = ledger.standing(cfg.name, version, audit)
    _, stale = checked_candidate(principal, cfg, version, standing.blocked)
    return approve_now(principal, cfg, version, why, standing, stale, None)


def reject(principal: Principal, model: str, version: str, *, reason: str) -> Decision:
    """Reject VERSION (REJECT): it loses the challenger alias and becomes champion again only
    through an admin's override. A paused promotion run for it gets the rejection as its
    answer."""
    cfg, version = _model(model), _version(version)
    authorize(principal, Permission.REJECT, cfg)
    why = _required_reason(reason, "a rejection")
    info = registry.get_version(cfg.name, version)
    if CHAMPION in info.aliases:
        raise PromotionError(
            f"{cfg.name} v{version} is the champion; roll it back instead (mlsteward rollback "
            f"{cfg.name} --reason TEXT)"
        )
    with open_audit() as audit:
        standing = ledger.standing(cfg.name, version, audit)
    run = paused_runs.first_paused(standing.flow_runs)
    if run is not None:
        return answer_run(principal, cfg, version, run, "reject", why)
    approval = Approval(
        approver=principal.identity, reason=why, decision="reject", channel="request"
    )
    seq = governance.reject(
        cfg,
        version,
        actor=principal.actor,
        reason=why,
        details={**approval.model_dump(), "identity": principal.identity},
    )
    return decided(
        cfg, version, "rejected", [f"rejected by {principal.identity}: {why}"], audit_seq=seq
    )


def rollback(
    principal: Principal,
    model: str,
    *,
    reason: str,
    to: str | None = None,
    override: bool = False,
) -> PromotionResult:
    """Restore the previous (or a named earlier) champion (ROLLBACK). A target a person
    rejected or that was rolled back from needs ``override`` (OVERRIDE), as a promotion does.
    """
    cfg = _model(model)
    authorize(principal, Permission.ROLLBACK, cfg)
    why = _required_reason(reason, "a rollback")
    target = _version(to) if to else None
    overriding = _override(principal, cfg, why) if override else None
    return governance.rollback(
        cfg, reason=why, actor=principal.actor, to_version=target, override=overriding
    )


def approval_token(
    principal: Principal, model: str, version: str, *, decision: str, reason: str
) -> str:
    """A one-use approval token for the principal's decision on VERSION, to paste into a
    paused run's Prefect form (the form's answer counts only with one). Checked as the
    decision itself would be: permission, four eyes, an approval not given twice.
    """
    cfg, version = _model(model), _version(version)
    if decision not in ("approve", "reject"):
        raise MlstewardError(f"decision {decision!r} must be approve or reject")
    permission = Permission.APPROVE if decision == "approve" else Permission.REJECT
    authorize(principal, permission, cfg)
    why = _required_reason(reason, f"a {decision} token")
    _manual_only(cfg)
    if decision == "approve":
        with open_audit() as audit:
            standing = ledger.standing(cfg.name, version, audit)
        check_approver(principal, cfg, version, standing)
    registry.get_version(cfg.name, version)  # NotFoundError for a version that does not exist
    with identity_store() as store:
        return store.issue_approval_token(
            principal, model=cfg.name, version=version, decision=decision, reason=why
        )


def answer_flow_run(
    principal: Principal, flow_run_id: str, *, approve: bool, reason: str
) -> Decision:
    """Answer the promotion a paused flow run waits for (``mlsteward approve FLOW_RUN_ID``):
    an approval token for the principal, the run resumed with it.

    Raises:
        NotFoundError: the run asked for no approval in this audit trail, or is unknown.
        MlstewardError: the run is not paused waiting for an answer.
    """
    paused_runs.check_run_id(flow_run_id)
    with open_audit() as audit:
        found = ledger.run_request(audit, flow_run_id)
    if found is None:
        raise NotFoundError(f"flow run {flow_run_id} asked for no approval in this audit trail")
    model, version = found
    cfg = _model(model)
    decision = "approve" if approve else "reject"
    authorize(principal, Permission.APPROVE if approve else Permission.REJECT, cfg)
    why = _required_reason(reason, f"an answer to {decision}")
    paused_runs.paused_run(flow_run_id)  # "not paused waiting for approval" otherwise
    if approve:
        with open_audit() as audit:
            standing = ledger.standing(cfg.name, version, audit)
        check_approver(principal, cfg, version, standing)
    return answer_run(principal, cfg, version, flow_run_id, decision, why)


def pending_approvals(
    model: str | None = None, known: dict[registry.VersionKey, registry.VersionInfo] | None = None
) -> list[dict[str, Any]]:
    """The queue: every version waiting for approval (READ), oldest request first. ``known``:
    versions a page has read already (``registry.live_versions``), to spare a query each."""
    if model is not None:
        check_model_name(model)
    out = []
    with open_audit() as audit:
        for name, version in ledger.open_requests(audit, model):
            standing = ledger.standing(name, version, audit)
            if standing.request is None:
                continue
            try:
                info = registry.get_known_version(name, version, known)
            except NotFoundError:
                continue
            if CHAMPION in info.aliases:
                continue
            out.append(
                {
                    "model": name,
                    "version": version,
                    "requested_at": standing.request.requested_at,
                    "requested_by": standing.request.requested_by,
                    "flow_run_id": standing.flow_runs[0] if standing.flow_runs else None,
                    "submitter": standing.submitter,
                    "approvals": standing.approvals,
                    "approvals_required": _required_approvals(name),
                    "validation": {
                        "status": info.validation_status,
                        "reasons": info.tags.get("validation_reasons"),
                        "validated_at": info.tags.get("validated_at"),
                        "validated_against_champion": info.tags.get("validated_against_champion"),
                    },
                }
            )
    return out


def submitter(model: str, version: str) -> str | None:
    """The identity that trained or submitted VERSION (from its ``version_registered``
    record: ``flow-run:X for user:alice`` -> ``user:alice``); None when no principal did (a
    run on its own: any approver may approve)."""
    check_model_name(model)
    with open_audit() as audit:
        return ledger.submitter(audit.query(model=model, version=_version(version)))


# -- input --------------------------------------------------------------------------------------


def _override(principal: Principal, cfg: ModelConfig, reason: str | None) -> dict[str, Any]:
    """An admin's override, checked: the permission, then a reason to record."""
    authorize(principal, Permission.OVERRIDE, cfg)
    if not reason:
        raise MlstewardError(
            "reason: an override needs a reason (--reason TEXT); it goes into the audit trail"
        )
    return {"override_by": principal.identity, "override_reason": reason}


def _manual_only(cfg: ModelConfig) -> None:
    if cfg.promotion.policy != "manual":
        raise PromotionError(
            f"{cfg.name} has promotion.policy {cfg.promotion.policy}: its versions are promoted "
            "without approvals (promote it instead)"
        )


def _model(model: str) -> ModelConfig:
    """The model's config.

    Raises:
        ConfigError: not a model name, or its config does not load (422).
        NotFoundError: no config declares it (404).
    """
    check_model_name(model)
    try:
        path = model_config_path(model)
    except ConfigError as exc:
        raise NotFoundError(str(exc)) from None
    return load_model_config(path)


def _required_approvals(model: str) -> int:
    try:
        return _model(model).approvals.required
    except MlstewardError:
        return 1


def _version(version: str | int) -> str:
    text = str(version).strip()
    if not text.isdigit() or len(text) > 12:
        raise MlstewardError(f"version {str(version)[:40]!r} must be a registered version number")
    return str(int(text))


def _optional_reason(reason: str | None) -> str | None:
    text = (reason or "").strip()
    if len(text) > 2000:
        raise MlstewardError("reason: at most 2000 characters")
    return text or None


def _required_reason(reason: str | None, what: str) -> str:
    text = _optional_reason(reason)
    if text is None:
        raise MlstewardError(
            f"reason: {what} needs a reason (--reason TEXT); it goes into the audit trail"
        )
    return text

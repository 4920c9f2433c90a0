"""The decisions that change who serves: validate, promote, approve, reject, roll back, and
approval tokens for a paused run's Prefect form. Each calls ``governance.decisions`` with the
caller, which authorizes it on the model, keeps four eyes and records the audit trail with the
caller as actor: the command line and the API decide the same way."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mlsteward.api.auth import Caller, VersionNumber, check_version, path_model
from mlsteward.api.errors import responses
from mlsteward.api.schemas import (
    ApprovalTokenBody,
    ApprovalTokenOut,
    DecisionOut,
    PromoteBody,
    PromotionOut,
    ReasonBody,
    RollbackBody,
)
from mlsteward.config.models import ModelConfig
from mlsteward.governance import decisions
from mlsteward.identity.store import APPROVAL_TOKEN_MINUTES

router = APIRouter(tags=["decisions"])
Model = Annotated[ModelConfig, Depends(path_model)]
VERSION = "/models/{model}/versions/{version}"
REFUSALS = responses(401, 403, 404, 409, 422)


@router.post(f"{VERSION}/validate", response_model=DecisionOut, responses=REFUSALS)
def validate(who: Caller, cfg: Model, version: VersionNumber) -> dict[str, Any]:
    """Run every gate on the version now and record the report (``validate``)."""
    return decisions.validate(who, cfg.name, check_version(version)).model_dump(mode="json")


@router.post(f"{VERSION}/promote", response_model=DecisionOut, responses=REFUSALS)
def promote(who: Caller, cfg: Model, version: VersionNumber, body: PromoteBody) -> dict[str, Any]:
    """Promote the version by the model's policy (``promote``). ``auto``: gates again if the
    report is stale, then promoted. ``manual``: an approver's promote is one approval (never
    the submitter's), promoted once enough distinct approvers agree, else ``pending``. A
    version a person rejected or that was rolled back from needs ``override`` (admin)."""
    decided = decisions.promote(
        who, cfg.name, check_version(version), reason=body.reason, override=body.override
    )
    return decided.model_dump(mode="json")


@router.post(f"{VERSION}/approve", response_model=DecisionOut, responses=REFUSALS)
def approve(who: Caller, cfg: Model, version: VersionNumber, body: ReasonBody) -> dict[str, Any]:
    """Approve a version waiting under the manual policy (``approve``; four eyes)."""
    decided = decisions.approve(who, cfg.name, check_version(version), reason=body.reason)
    return decided.model_dump(mode="json")


@router.post(f"{VERSION}/reject", response_model=DecisionOut, responses=REFUSALS)
def reject(who: Caller, cfg: Model, version: VersionNumber, body: ReasonBody) -> dict[str, Any]:
    """Reject a version (``reject``): it loses the challenger alias; only an admin's override
    promotes it later."""
    decided = decisions.reject(who, cfg.name, check_version(version), reason=body.reason)
    return decided.model_dump(mode="json")


@router.post(
    f"{VERSION}/approval-token",
    response_model=ApprovalTokenOut,
    responses=REFUSALS,
)
def approval_token(
    who: Caller, cfg: Model, version: VersionNumber, body: ApprovalTokenBody
) -> dict[str, Any]:
    """A one-use token for the caller's answer in a paused run's Prefect form: the form's
    answer counts only with one (a typed name alone is refused and audited)."""
    number = check_version(version)
    token = decisions.approval_token(
        who, cfg.name, number, decision=body.decision, reason=body.reason
    )
    return {
        "model": cfg.name,
        "version": number,
        "decision": body.decision,
        "approval_token": token,
        "expires_in_minutes": APPROVAL_TOKEN_MINUTES,
    }


@router.post("/models/{model}/rollback", response_model=PromotionOut, responses=REFUSALS)
def rollback(who: Caller, cfg: Model, body: RollbackBody) -> dict[str, Any]:
    """Restore the previous (or the named earlier) champion (``rollback``)."""
    result = decisions.rollback(
        who, cfg.name, reason=body.reason, to=body.to, override=body.override
    )
    return result.model_dump(mode="json")

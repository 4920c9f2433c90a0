"""``GET /approvals``: the versions waiting for a person under the manual policy (``read``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from mlsteward.api.auth import allowed_anywhere, check_model_name
from mlsteward.api.errors import responses
from mlsteward.api.schemas import ApprovalList
from mlsteward.governance import decisions
from mlsteward.governance.registry import VersionInfo, VersionKey
from mlsteward.identity import Permission, Principal

router = APIRouter(tags=["decisions"])


def pending_approvals(
    model: str | None = None, known: dict[VersionKey, VersionInfo] | None = None
) -> list[dict[str, Any]]:
    """The queue, oldest request first: who asked, approvals so far and how many are needed,
    the validation summary and the paused run (if one waits). ``known``: versions the caller
    has read already (``registry.live_versions``)."""
    return decisions.pending_approvals(model, known)


@router.get("/approvals", response_model=ApprovalList, responses=responses(401, 403, 422))
def list_approvals(
    _: Annotated[Principal, Depends(allowed_anywhere(Permission.READ))],
    model: Annotated[str | None, Query(description="Only this model.", max_length=63)] = None,
) -> dict[str, Any]:
    """Versions waiting for approval."""
    if model is not None:
        check_model_name(model)
    return {"approvals": pending_approvals(model)}

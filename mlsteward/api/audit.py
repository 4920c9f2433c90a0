"""``/audit``: the hash-chained audit trail, filtered as ``mlsteward audit log`` filters it,
and its chain check against the newest signed checkpoint (``read`` permission)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from mlsteward.api.auth import allowed_anywhere, check_model_name
from mlsteward.api.errors import BadInput, responses
from mlsteward.api.schemas import AuditList, AuditVerified
from mlsteward.audit import Action, AuditError, audit_store
from mlsteward.audit.checkpoints import verify_with_checkpoint
from mlsteward.audit.records import parse_since
from mlsteward.identity import Permission, Principal

router = APIRouter(tags=["audit"])
Reader = Annotated[Principal, Depends(allowed_anywhere(Permission.READ))]
MAX_LIMIT = 10_000


@router.get("/audit", response_model=AuditList, responses=responses(401, 403, 422))
def audit_log(
    _: Reader,
    model: Annotated[str | None, Query(description="Only this model.", max_length=63)] = None,
    action: Annotated[
        str | None, Query(description="Only this action, e.g. promoted.", max_length=64)
    ] = None,
    since: Annotated[
        str | None, Query(description="ISO-8601 time or date, e.g. 2026-11-01.", max_length=64)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="The latest N records.")] = 200,
) -> dict[str, Any]:
    """Audit records, oldest first: the latest ``limit`` that match."""
    if model is not None:
        check_model_name(model)
    if action is not None and action not in {a.value for a in Action}:
        known = ", ".join(a.value for a in Action)
        raise BadInput("action", f"unknown action {action[:64]!r} (known: {known})")
    if since is not None:
        try:
            parse_since(since)
        except AuditError as exc:
            raise BadInput("since", str(exc)) from exc
    with audit_store() as store:
        records = store.query(model=model, action=action, since=since, limit=limit)
    return {"records": [r.to_dict() for r in records]}


class CheckpointSummary(BaseModel):
    seq: int
    ts: str
    key_id: str
    head_hash: str


class AuditVerifiedAnchored(AuditVerified):
    """The chain check, and which signed checkpoint it was checked against."""

    checkpoint: CheckpointSummary | None = None
    anchor: str | None = None
    warning: str | None = None


@router.get(
    "/audit/verify", response_model=AuditVerifiedAnchored, responses=responses(401, 403, 422)
)
def audit_verify(
    _: Reader,
    expect_head: Annotated[
        str | None,
        Query(
            description="A head hash stored elsewhere earlier: catches a rewritten chain.",
            pattern=r"^[0-9a-f]{64}$",
        ),
    ] = None,
    checkpoint: Annotated[
        bool, Query(description="Check against the newest signed checkpoint (default).")
    ] = True,
) -> dict[str, Any]:
    """Check the hash chain from the first record against the newest signed checkpoint;
    ``ok`` false names the first broken link, ``warning`` a missing or stale checkpoint."""
    with audit_store() as store:
        if not checkpoint:
            return store.verify(expect_head=expect_head).to_dict()
        return verify_with_checkpoint(store, expect_head=expect_head).to_dict()

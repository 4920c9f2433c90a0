"""The Audit page: the trail filtered by model, action, actor and date, and the chain's check
against the newest signed checkpoint (loaded on its own request: it reads the whole chain)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from mlsteward.api.approvals import pending_approvals
from mlsteward.api.auth import check_model_name
from mlsteward.api.console.render import page
from mlsteward.api.console.session import Viewer
from mlsteward.api.errors import BadInput
from mlsteward.api.views import configured_models
from mlsteward.audit import Action, AuditError, audit_store
from mlsteward.audit.checkpoints import verify_with_checkpoint
from mlsteward.audit.records import parse_since
from mlsteward.identity import Permission, authorize

router = APIRouter()
LIMITS = (50, 200, 1000)
ACTOR_SCAN = 10_000
"""With an actor filter, the newest this many records that match the rest are searched."""


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    model = (q.get("model") or "").strip() or None
    action = (q.get("action") or "").strip() or None
    actor = (q.get("actor") or "").strip()[:200] or None
    since = (q.get("since") or "").strip() or None
    limit_text = q.get("limit") or "200"
    if model is not None:
        check_model_name(model)
    if action is not None and action not in {a.value for a in Action}:
        raise BadInput("action", f"unknown action {action[:64]!r}")
    if since is not None:
        try:
            parse_since(since)
        except AuditError as exc:
            raise BadInput("since", str(exc)) from exc
    if not limit_text.isdigit() or int(limit_text) not in LIMITS:
        raise BadInput("limit", f"one of {', '.join(map(str, LIMITS))}")
    return {"model": model, "action": action, "actor": actor, "since": since,
            "limit": int(limit_text)}  # fmt: skip


def _records(f: dict[str, Any]) -> list[dict[str, Any]]:
    with audit_store() as store:
        if f["actor"]:
            found = store.query(model=f["model"], action=f["action"], since=f["since"],
                                limit=ACTOR_SCAN)  # fmt: skip
            found = [r for r in found if f["actor"] in r.actor][-f["limit"] :]
        else:
            found = store.query(
                model=f["model"], action=f["action"], since=f["since"], limit=f["limit"]
            )
    return [r.to_dict() for r in reversed(found)]


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, who: Viewer) -> HTMLResponse:
    """Newest first; the filters are a plain GET form, so a filtered view is a link."""
    authorize(who, Permission.READ)
    f = _filters(request)
    records = await run_in_threadpool(_records, f)
    pending = await run_in_threadpool(pending_approvals)
    return page(
        request,
        "audit.html.j2",
        section="Audit",
        f=f,
        records=records,
        actions=sorted(a.value for a in Action),
        models=configured_models(),
        limits=LIMITS,
        pending_count=len(pending),
    )


def _verify() -> dict[str, Any]:
    with audit_store() as store:
        return verify_with_checkpoint(store).to_dict()


@router.get("/audit/verify", response_class=HTMLResponse)
async def verify_fragment(request: Request, who: Viewer) -> HTMLResponse:
    """The chain check as a fragment (htmx) or a page of its own (no JavaScript)."""
    authorize(who, Permission.READ)
    result = await run_in_threadpool(_verify)
    return page(request, "verify.html.j2", section="Audit", result=result, pending_count=0)

"""The Approvals page and the decisions taken from it.

An approver sees the evidence and two forms; anyone else sees the same evidence without them.
The forms post to the console, which decides through ``governance.decisions`` exactly as
``POST /api/v1/.../approve`` does: the same permission check, four eyes and audit record, so a
forged form from a principal who may not decide gets the API's 403.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from mlsteward.api import views
from mlsteward.api.approvals import pending_approvals
from mlsteward.api.auth import check_version, known_model
from mlsteward.api.console.evidence import version_evidence
from mlsteward.api.console.pictures import picture_links
from mlsteward.api.console.render import done_flash, page
from mlsteward.api.console.session import CSRF_FIELD, Viewer, check_form
from mlsteward.api.errors import BadInput
from mlsteward.audit import audit_store
from mlsteward.governance import decisions
from mlsteward.identity import Permission, Principal, authorize

router = APIRouter()
REASON_MAX = 2000


def _queue(who: Principal) -> dict[str, Any]:
    items = []
    pending = pending_approvals()
    with audit_store() as store:
        for item in pending:
            cfg = known_model(item["model"])
            detail = views.version_detail(cfg.name, item["version"], store)
            items.append(
                {
                    **item,
                    "cfg": cfg,
                    "v": detail,
                    "evidence": version_evidence(cfg, detail),
                    "pictures": picture_links(cfg.name, item["version"], detail),
                    "may_approve": who.may(Permission.APPROVE, cfg),
                    "may_reject": who.may(Permission.REJECT, cfg),
                    "own": item.get("submitter") == who.identity,
                    "approved_already": who.identity in (item.get("approvals") or []),
                }
            )
    return {"items": items, "pending_count": len(pending)}


@router.get("/approvals", response_class=HTMLResponse)
async def approvals_page(request: Request, who: Viewer) -> HTMLResponse:
    """Versions waiting for a person, each with its evidence."""
    authorize(who, Permission.READ)
    data = await run_in_threadpool(_queue, who)
    return page(request, "approvals.html.j2", section="Approvals", **done_flash(request), **data)


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise BadInput("reason", "a decision needs a reason; it goes into the audit trail")
    if len(text) > REASON_MAX:
        raise BadInput("reason", f"at most {REASON_MAX} characters (got {len(text)})")
    return text


@router.post("/approvals/{model}/{version}/{verb}")
async def decide(
    request: Request,
    who: Viewer,
    model: str,
    version: str,
    verb: str,
    reason: Annotated[str | None, Form(max_length=REASON_MAX + 100)] = None,
    csrf: Annotated[str | None, Form(alias=CSRF_FIELD)] = None,
) -> RedirectResponse:
    """Approve or reject from the queue, then back to it (303) with what was decided."""
    check_form(request, csrf)
    if verb not in ("approve", "reject"):
        raise BadInput("decision", f"{verb[:20]!r} is not a decision here (approve or reject)")
    cfg = await run_in_threadpool(known_model, model)
    number = check_version(version)
    why = _reason(reason)
    act = decisions.approve if verb == "approve" else decisions.reject
    decided = await run_in_threadpool(act, who, cfg.name, number, reason=why)
    outcome = decided.decision
    note = f"{cfg.name} v{number}: {verb} recorded ({outcome})"
    return RedirectResponse(f"/ui/approvals?done={quote(note)}", status_code=303)

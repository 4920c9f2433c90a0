"""The Rollouts page: each canary's traffic share, its guardrails per step, and a stop button
for those who may stop it (the API's ``rollout`` permission, checked again on the POST)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from mlsteward.api import launch
from mlsteward.api.approvals import pending_approvals
from mlsteward.api.console.render import done_flash, page
from mlsteward.api.console.session import CSRF_FIELD, Viewer, check_form
from mlsteward.api.errors import BadInput
from mlsteward.api.rollouts import ROLLOUT_ID_PATTERN, _stop, rollouts
from mlsteward.audit import Action, audit_store
from mlsteward.identity import Permission, Principal, authorize

router = APIRouter()
SHOWN = 50


def _last_step(store: Any, model: str, rollout_id: str) -> dict[str, Any] | None:
    """The newest step result of a rollout: its guardrail checks, challenger rows, share."""
    for action in (Action.ROLLOUT_STEP_PASSED, Action.ROLLOUT_ROLLED_BACK):
        for record in reversed(store.query(model=model, action=action, limit=200)):
            if record.details.get("rollout_id") == rollout_id:
                details = dict(record.details)
                return details.get("step_result") or details
    return None


def _rollouts(who: Principal) -> dict[str, Any]:
    with audit_store() as store:
        found = rollouts(store, None, SHOWN)
        for row in found:
            row["last_step"] = _last_step(store, row["model"], row["rollout_id"])
            row["may_stop"] = row["decision"] == "running" and who.may(
                Permission.ROLLOUT, row["model"]
            )
    return {"rollouts": found, "pending_count": len(pending_approvals())}


@router.get("/rollouts", response_class=HTMLResponse)
async def rollouts_page(request: Request, who: Viewer) -> HTMLResponse:
    authorize(who, Permission.READ)
    data = await run_in_threadpool(_rollouts, who)
    return page(request, "rollouts.html.j2", section="Rollouts", **done_flash(request), **data)


@router.post("/rollouts/{rollout_id}/stop")
async def stop(
    request: Request,
    who: Viewer,
    rollout_id: str,
    reason: Annotated[str | None, Form(max_length=2100)] = None,
    csrf: Annotated[str | None, Form(alias=CSRF_FIELD)] = None,
) -> RedirectResponse:
    """Stop a canary now: all traffic back to the champion, audited, the run cancelled."""
    import re

    check_form(request, csrf)
    if not re.fullmatch(ROLLOUT_ID_PATTERN, rollout_id):
        raise BadInput("rollout_id", f"{rollout_id[:80]!r} is not a rollout id")
    why = (reason or "").strip()
    if not why:
        raise BadInput("reason", "stopping a rollout needs a reason; it goes into the audit trail")
    stopped = await run_in_threadpool(_stop, who, rollout_id, why[:2000])
    if stopped["flow_run_id"]:
        await launch.cancel_run(stopped["flow_run_id"])
    note = f"rollout {rollout_id} stopped: traffic is back on the champion"
    return RedirectResponse(f"/ui/rollouts?done={quote(note)}", status_code=303)

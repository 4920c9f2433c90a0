"""``/rollouts``: canary rollouts as the audit trail records them; start one (the model's
``rollout-model`` deployment run), or stop one (``rollout`` permission).

Stopping closes the canary at once (all traffic back to the champion: the registry's canary
tags are what every serving replica follows), records who stopped it and why, and asks Prefect
to cancel the run that steers it; a run that keeps going finds no canary to step and ends.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool

from mlsteward.api import launch, views
from mlsteward.api.auth import Caller, allowed_anywhere, check_model_name, known_model
from mlsteward.api.errors import BadInput, responses
from mlsteward.api.schemas import (
    RolloutList,
    RolloutStartBody,
    RolloutStopBody,
    RolloutStopped,
    StartedRunOut,
)
from mlsteward.audit import Action, AuditStore, audit_store
from mlsteward.errors import NotFoundError
from mlsteward.gateway.payloads import Refusal
from mlsteward.governance import registry
from mlsteward.governance.canary import read_target
from mlsteward.identity import Permission, Principal, authorize
from mlsteward.report import AuditEvent, rollout_history
from mlsteward.report.actions import ROLLOUT_ACTIONS, ROLLOUT_ENDS
from mlsteward.rollout.machine import close_if_ours

router = APIRouter(tags=["rollouts"])

ROLLOUT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$"
RolloutId = Annotated[
    str,
    Path(
        description="A rollout's id, as listed.", json_schema_extra={"pattern": ROLLOUT_ID_PATTERN}
    ),
]


def rollouts(store: AuditStore, model: str | None, limit: int) -> list[dict[str, Any]]:
    """Rollouts newest first, each with the run that steered it and, while open, its canary."""
    records = sorted(
        (r for a in ROLLOUT_ACTIONS for r in store.query(model=model, action=a)),
        key=lambda r: r.seq,
    )
    by_model: dict[str, list[AuditEvent]] = {}
    starts: dict[str, str] = {}
    for record in records:
        if record.model is None:
            continue
        by_model.setdefault(record.model, []).append(AuditEvent.from_record(record))
        if record.action == Action.ROLLOUT_STARTED:
            starts[str(record.details.get("rollout_id"))] = record.actor
    out = []
    for name, events in by_model.items():
        canary = read_target(name).canary
        for run in rollout_history(events):
            row = {"model": name, **run.to_dict()}
            row["flow_run_id"] = views.flow_run_of(starts.get(run.rollout_id, run.actor))
            open_now = canary is not None and canary.rollout_id == run.rollout_id
            row["canary"] = canary.to_dict() if open_now and canary else None
            out.append(row)
    out.sort(key=lambda r: r.get("started_at") or r.get("ended_at") or "", reverse=True)
    return out[:limit]


@router.get("/rollouts", response_model=RolloutList, responses=responses(401, 403, 422))
def list_rollouts(
    _: Annotated[Principal, Depends(allowed_anywhere(Permission.READ))],
    model: Annotated[str | None, Query(description="Only this model.", max_length=63)] = None,
    running: Annotated[bool, Query(description="Only rollouts without an end.")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Canary rollouts, newest first: steps passed, decision, breaches, the steering run."""
    if model is not None:
        check_model_name(model)
    with audit_store() as store:
        found = rollouts(store, model, 1000 if running else limit)
    if running:
        found = [r for r in found if r["decision"] == "running"][:limit]
    return {"rollouts": found}


@router.post(
    "/rollouts",
    status_code=202,
    response_model=StartedRunOut,
    responses=responses(401, 403, 404, 422, 503),
)
async def start_rollout(who: Caller, body: RolloutStartBody) -> dict[str, Any]:
    """Canary-release a validated version (default: the challenger) through the prediction
    service: starts the model's rollout deployment run, acting for the caller."""
    cfg = await run_in_threadpool(known_model, body.model)
    authorize(who, Permission.ROLLOUT, cfg)
    if body.version is not None:
        await run_in_threadpool(registry.get_version, cfg.name, body.version)  # 404 if none
    return await launch.start_run("rollout", cfg.name, {"version": body.version}, who)


def _stop(who: Principal, rollout_id: str, reason: str) -> dict[str, Any]:
    with audit_store() as store:
        started = views.rollout_start(store, rollout_id)
        if started is None or started.model is None:
            raise NotFoundError(f"rollout_id: no rollout {rollout_id!r} in the audit trail")
        model = started.model
        authorize(who, Permission.ROLLOUT, model)
        ended = [
            r
            for a in ROLLOUT_ENDS
            for r in store.query(model=model, action=a)
            if r.details.get("rollout_id") == rollout_id
        ]
        if ended:
            last = max(ended, key=lambda r: r.seq)
            raise Refusal(
                409, f"rollout {rollout_id} has ended already ({last.action}: {last.reason[:200]})"
            )
        closed = close_if_ours(model, rollout_id)
        flow_run_id = views.flow_run_of(started.actor)
        store.append(
            Action.ROLLOUT_ABORTED,
            model=model,
            version=started.version,
            actor=who.actor,
            reason=f"stopped: {reason}",
            details={
                "rollout_id": rollout_id,
                "reason": "stopped",
                "canary_closed": closed,
                "flow_run_id": flow_run_id,
                "channel": "api",
            },
        )
    return {
        "model": model,
        "rollout_id": rollout_id,
        "version": started.version,
        "canary_closed": closed,
        "flow_run_id": flow_run_id,
    }


@router.post(
    "/rollouts/{rollout_id}/stop",
    response_model=RolloutStopped,
    responses=responses(401, 403, 404, 409, 422),
)
async def stop_rollout(who: Caller, rollout_id: RolloutId, body: RolloutStopBody) -> dict[str, Any]:
    """Stop a rollout in progress: all traffic back to the champion now, the stop audited with
    the caller and reason, and the steering run cancelled."""
    if not re.fullmatch(ROLLOUT_ID_PATTERN, rollout_id):
        raise BadInput("rollout_id", f"{rollout_id[:80]!r} is not a rollout id (see GET /rollouts)")
    stopped = await run_in_threadpool(_stop, who, rollout_id, body.reason)
    cancelled = await launch.cancel_run(stopped["flow_run_id"]) if stopped["flow_run_id"] else False
    note = (
        "traffic is back on the champion"
        if stopped["canary_closed"]
        else ("the canary was not open any more")
    )
    return {**stopped, "flow_run_cancelled": cancelled, "note": note}

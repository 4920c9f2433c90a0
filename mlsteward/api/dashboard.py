"""``GET /dashboard``: one summary of every model for a start page (``read`` permission):
what serves, what waits for a person, the last drift verdict, the rollout in progress, open
alerts. One audit store and one registry read per model, so it stays cheap with many models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mlsteward.alerts.engine import rule_config
from mlsteward.alerts.state import AlertState
from mlsteward.api import views
from mlsteward.api.approvals import pending_approvals
from mlsteward.api.auth import allowed_anywhere
from mlsteward.api.errors import responses
from mlsteward.api.schemas import Dashboard
from mlsteward.audit import AuditStore, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.governance import champion as champion_record
from mlsteward.governance import registry
from mlsteward.governance.canary import ServingTarget, read_target, read_targets
from mlsteward.governance.registry import VersionInfo, VersionKey
from mlsteward.identity import Permission, Principal

router = APIRouter(tags=["dashboard"])
NO_TARGET = ServingTarget(None, None, None)
"""A configured model with nothing registered yet."""


def version_brief(
    model: str, version: str | None, known: dict[VersionKey, VersionInfo] | None = None
) -> dict[str, Any] | None:
    if version is None:
        return None
    try:
        info = registry.get_known_version(model, version, known)
    except NotFoundError:
        return {"version": version}
    item = views.version_item(info)
    keep = ("version", "lifecycle", "validation_status", "metrics", "created_at")
    return {**{k: item[k] for k in keep}, "promoted_at": info.tags.get("promoted_at")}


def model_summary(
    name: str,
    store: AuditStore,
    pending: list[dict[str, Any]],
    targets: dict[str, ServingTarget] | None = None,
    known: dict[VersionKey, VersionInfo] | None = None,
    firing: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One model's line; a config that does not load is named instead of failing the page.
    ``targets`` (from ``read_targets``) and ``known`` (from ``registry.live_versions``) save
    registry reads per model; ``firing`` is the open incidents (``AlertState.firing``)."""
    empty: dict[str, Any] = {
        "model": name,
        "owner": None,
        "policy": None,
        "champion": None,
        "challenger": None,
        "pending_approvals": [p for p in pending if p.get("model") == name],
        "last_drift": None,
        "active_rollout": None,
        "open_alerts": [],
    }
    try:
        cfg = get_model_config(name)
    except MlstewardError as exc:
        return {**empty, "config_error": str(exc)}
    target = read_target(name) if targets is None else targets.get(name, NO_TARGET)
    check = champion_record.compare(name, store, target.champion)
    alerts = []
    if not check.consistent:
        alerts.append(
            {"rule": "alias_mismatch", "severity": "critical", "message": check.problem()}
        )
    for incident in firing or []:
        if incident["model"] != name:
            continue
        try:
            severity = rule_config(cfg, incident["rule"]).severity
        except ValueError:  # a rule this version no longer knows
            severity = "warning"
        alerts.append(
            {
                "rule": incident["rule"],
                "subject": incident["subject"],
                "severity": severity,
                "since": incident["fired_at"],
                "breaches": incident["breaches"],
                "message": f"{incident['rule']} {incident['subject']}".strip()
                + f": breached {incident['breaches']} time(s) since {incident['fired_at']}",
            }
        )
    return {
        **empty,
        "owner": cfg.owner,
        "policy": cfg.promotion.policy,
        "champion": version_brief(name, check.recorded, known),
        "champion_check": check.to_dict(),
        "open_alerts": alerts,
        "challenger": version_brief(name, target.challenger, known),
        "last_drift": views.last_drift(name, store),
        "active_rollout": views.active_rollout(name, target.canary, store),
    }


@router.get("/dashboard", response_model=Dashboard, responses=responses(401, 403))
def dashboard(
    _: Annotated[Principal, Depends(allowed_anywhere(Permission.READ))],
) -> dict[str, Any]:
    """Every model: champion, challenger, pending approvals, last drift, active rollout and
    open alerts (the incidents of the standing rules, and a champion alias that disagrees with
    the governance record)."""
    models = summaries()[0]
    return {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "models": models}


def summaries() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every configured model's line, and the approval queue they were made with: one
    registry search for the aliases, one for the versions they name, one audit store."""
    known = registry.live_versions()
    pending = pending_approvals(known=known)
    targets = read_targets()
    with AlertState() as state:
        firing = state.firing()
    with audit_store() as store:
        models = [
            model_summary(name, store, pending, targets, known, firing)
            for name in views.configured_models()
        ]
    return models, pending

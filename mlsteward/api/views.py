"""What the read routes answer, put together from the registry and the audit trail.

Plain functions over one audit store each, so a route opens the store once and the dashboard
reads every model on the same one. The shapes are the CLI's: ``status`` for a model, the model
card's sections for a version (``mlsteward.report``).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlsteward.audit import Action, AuditRecord, AuditStore, audit_store
from mlsteward.config.models import ModelConfig, get_model_config, model_names
from mlsteward.errors import MlstewardError
from mlsteward.governance import champion as champion_record
from mlsteward.governance import promotion, registry
from mlsteward.governance.canary import Canary, read_target
from mlsteward.governance.gates import FAIRNESS
from mlsteward.governance.registry import VersionInfo
from mlsteward.report import AuditEvent, DriftCheck, lineage_from_tags, metrics_from_tags

APPROVAL_ACTIONS = (
    Action.APPROVAL_REQUESTED,
    Action.APPROVAL_GRANTED,
    Action.APPROVAL_REJECTED,
    Action.APPROVAL_TIMED_OUT,
    Action.APPROVAL_REFUSED,
)
DRIFT_ACTIONS = (Action.DRIFT_CHECKED, Action.DRIFT_DETECTED)
FLOW_RUN = re.compile(r"^flow-run:([0-9a-fA-F-]{36})\b")
_RUNS_URI = re.compile(r"^runs:/([^/]+)/(.+)$")


def iso_ms(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def flow_run_of(actor: str) -> str | None:
    """The flow run an audit actor names (``flow-run:<id> for user:alice``), if any."""
    match = FLOW_RUN.match(actor or "")
    return match.group(1) if match else None


# -- models -----------------------------------------------------------------------------------


def configured_models() -> list[str]:
    """Model names from the config directory (a file whose name is not a model name is
    never a model)."""
    return model_names()


def model_item(name: str) -> dict[str, Any]:
    """One line of ``GET /models``: what serves, from one registry read; a config that does
    not load is named, not fatal to the list."""
    item: dict[str, Any] = {"name": name}
    try:
        cfg = get_model_config(name)
    except MlstewardError as exc:
        return {**item, "config_error": str(exc)}
    target = read_target(name)
    with audit_store() as store:
        check = champion_record.compare(name, store, target.champion)
    return {
        **item,
        "description": cfg.description,
        "owner": cfg.owner,
        "policy": cfg.promotion.policy,
        "champion": check.recorded,
        "champion_check": check.to_dict(),
        "challenger": target.challenger,
        "canary": target.canary.to_dict() if target.canary else None,
    }


def model_detail(
    cfg: ModelConfig,
    store: AuditStore,
    pending: list[dict[str, Any]],
    versions: list[VersionInfo] | None = None,
) -> dict[str, Any]:
    """``GET /models/{model}``: ``mlsteward status`` with the policy, the owner, the last drift
    verdict, the rollout in progress and the versions waiting for approval (``versions``: the
    model's versions, when the caller read them already)."""
    status = promotion.status(cfg.name, store=store, versions=versions)
    canary = read_target(cfg.name).canary
    return {
        "model": cfg.name,
        "description": cfg.description,
        "owner": cfg.owner,
        "policy": cfg.promotion.policy,
        "approvals_required": cfg.approvals.required,
        "champion": status["champion"],
        "champion_check": status["champion_check"],
        "challenger": status["challenger"],
        "previous_champion": status["previous_champion"],
        "canary": status["canary"],
        "versions": status["versions"],
        "last_drift": last_drift(cfg.name, store),
        "active_rollout": active_rollout(cfg.name, canary, store),
        "pending_approvals": pending,
        "recent_decisions": status["recent_decisions"],
    }


def last_drift(model: str, store: AuditStore) -> dict[str, Any] | None:
    """The newest drift check's verdict (``drifted``: any column drifted)."""
    found = [r for a in DRIFT_ACTIONS if (r := store.last(model=model, action=a)) is not None]
    if not found:
        return None
    record = max(found, key=lambda r: r.seq)
    check = DriftCheck.from_event(AuditEvent.from_record(record))
    return {
        **check.to_dict(),
        "drifted": record.action == Action.DRIFT_DETECTED,
        "verdict": "drift" if record.action == Action.DRIFT_DETECTED else "no drift",
    }


def active_rollout(model: str, canary: Canary | None, store: AuditStore) -> dict[str, Any] | None:
    """The open canary, with the run that steers it (from its start record)."""
    if canary is None:
        return None
    started = rollout_start(store, canary.rollout_id, model)
    return {
        **canary.to_dict(),
        "model": model,
        "flow_run_id": flow_run_of(started.actor) if started else None,
        "started_by": started.actor if started else None,
    }


def rollout_start(
    store: AuditStore, rollout_id: str, model: str | None = None
) -> AuditRecord | None:
    for record in reversed(store.query(model=model, action=Action.ROLLOUT_STARTED)):
        if record.details.get("rollout_id") == rollout_id:
            return record
    return None


# -- versions ---------------------------------------------------------------------------------


def version_item(info: VersionInfo) -> dict[str, Any]:
    return {
        **info.to_dict(),
        "created_at": iso_ms(info.created_at_ms),
        "metrics": metrics_from_tags(info.tags),
    }


def version_detail(model: str, version: str, store: AuditStore) -> dict[str, Any]:
    """``GET /models/{model}/versions/{v}``: the version as the model card shows it, with its
    validation report (gates and fairness), approvals and history.

    Raises:
        NotFoundError: no such registered version.
    """
    info = registry.get_version(model, version)
    validation, error = read_validation(info)
    events = [asdict(AuditEvent.from_record(r)) for r in store.query(model=model, version=version)]
    gates = list(validation.get("gates", [])) if validation else []
    return {
        **version_item(info),
        "model": model,
        "promoted_at": info.tags.get("promoted_at"),
        "promoted_by": info.tags.get("promoted_by"),
        "retired_at": info.tags.get("retired_at"),
        "lineage": lineage_from_tags(info.tags),
        "validation": validation,
        "validation_error": error,
        "gates": gates,
        "fairness": next((g for g in gates if g.get("name") == FAIRNESS), None),
        "approvals": [e for e in events if e["action"] in APPROVAL_ACTIONS],
        "history": events,
    }


def read_validation(info: VersionInfo) -> tuple[dict[str, Any] | None, str | None]:
    """The stored validation report, or why it could not be read (never raises: a lost
    artifact leaves the rest of the answer intact)."""
    uri = info.tags.get("validation_report")
    if not uri:
        return None, None
    match = _RUNS_URI.match(uri)
    if not match:
        return None, f"not a runs:/ URI: {uri}"
    try:
        with tempfile.TemporaryDirectory(prefix="mlsteward-api-") as d:
            local = registry.download_run_file(match.group(1), match.group(2), Path(d))
            return json.loads(local.read_text()), None
    except Exception as exc:  # a missing or unreadable artifact is reported, not raised
        return None, f"{type(exc).__name__}: {exc}"

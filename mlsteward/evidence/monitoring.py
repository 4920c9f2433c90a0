"""The model in production since the version's registration: drift checks with their verdicts
(``monitoring/drift.json``), alerts with the incidents open now (``monitoring/alerts.json``),
and the canary rollouts and rollbacks that touched the version (``monitoring/rollouts.json``).

All of it is read from the audit trail with the model card's own assembly (``report.history``),
so the pack and the card tell the same story; the open incidents come from the alert state
beside the identity store. Evidently's HTML reports, which the drift records name, are not
copied: they are large, and the records hold the numbers each verdict was made from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlsteward.alerts.state import AlertState
from mlsteward.audit import Action
from mlsteward.config.settings import alerts_url
from mlsteward.evidence.manifest import write_json
from mlsteward.evidence.subject import Pieces, Subject
from mlsteward.report import AuditEvent, drift_history, rollout_history

ALERT_ACTIONS = frozenset(
    a.value for a in (Action.ALERT_FIRED, Action.ALERT_REMINDED, Action.ALERT_RESOLVED)
)


def collect_monitoring(root: Path, s: Subject) -> Pieces:
    out = Pieces()
    since = s.since_registration
    events = [AuditEvent.from_record(r) for r in since]
    window = {"from_seq": s.registered.seq, "from_ts": s.registered.ts}

    checks = drift_history(events)
    if checks:
        write_json(
            root,
            "monitoring/drift.json",
            {
                "model": s.model,
                "since_registration": window,
                "checks": [c.to_dict() for c in checks],
                "of_this_version": sum(1 for c in checks if c.version == s.version),
                "order": "newest first",
            },
        )
        out.add("drift_history", "monitoring/drift.json")
    else:
        out.none("drift_history", "no drift check of the model since the version's registration")

    files = []
    alerts = [r.to_dict() for r in since if r.action in ALERT_ACTIONS]
    incidents = _open_incidents(s.model)
    if alerts or incidents:
        files.append(
            write_json(
                root,
                "monitoring/alerts.json",
                {
                    "model": s.model,
                    "since_registration": window,
                    "records": alerts,
                    "open_incidents": incidents,
                },
            )
        )
    rollouts = [
        r.to_dict() for r in rollout_history(events) if s.version in (r.version, r.champion)
    ]
    rollbacks = [
        r.to_dict()
        for r in since
        if r.action == Action.ROLLBACK and s.version in (r.version, str(r.details.get("from")))
    ]
    if rollouts or rollbacks:
        files.append(
            write_json(
                root,
                "monitoring/rollouts.json",
                {
                    "model": s.model,
                    "version": s.version,
                    "rollouts": rollouts,
                    "rollbacks": rollbacks,
                },
            )
        )
    if files:
        out.add("monitoring_history", *files)
    else:
        out.none(
            "monitoring_history",
            "no alert, open incident, rollout or rollback since the version's registration",
        )
    return out


def _open_incidents(model: str) -> list[dict[str, Any]]:
    """The model's incidents open now; none when the alert state was never created (it is
    not created here: a pack only reads)."""
    url = alerts_url()
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
        if not path.is_file():
            return []
    with AlertState(url) as state:
        return state.firing(model)

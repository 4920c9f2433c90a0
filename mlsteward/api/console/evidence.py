"""What a person judges a version by, laid out the way the model card lays it out.

The tables come from the card's own view layer (``mlsteward.report``), so the console, the card
and the API show the same numbers with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlsteward.audit import Action, AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.report import AuditEvent, DriftCheck
from mlsteward.report.actions import DRIFT_ACTIONS
from mlsteward.report.collect import measured_only
from mlsteward.report.model import VersionSection
from mlsteward.report.table import Table
from mlsteward.report.view import lineage_table
from mlsteward.report.view_validation import ReportView, report_view

DECISIONS = (
    Action.PROMOTED,
    Action.PROMOTION_REFUSED,
    Action.PROMOTION_RECOVERED,
    Action.PROMOTION_ABANDONED,
    Action.ROLLBACK,
    Action.APPROVAL_REQUESTED,
    Action.APPROVAL_GRANTED,
    Action.APPROVAL_REJECTED,
    Action.APPROVAL_TIMED_OUT,
    Action.APPROVAL_REFUSED,
    Action.VALIDATION_PASSED,
    Action.VALIDATION_FAILED,
    Action.ROLLOUT_STARTED,
    Action.ROLLOUT_COMPLETED,
    Action.ROLLOUT_ROLLED_BACK,
    Action.ROLLOUT_ABORTED,
    Action.ALIAS_REPAIRED,
)
"""The records a model's decision history shows: who changed (or tried to change) who serves."""
HISTORY_ROWS = 50
DRIFT_ROWS = 60


@dataclass
class Evidence:
    """A version's evidence: lineage, the validation report's tables and what is missing."""

    lineage: Table
    report: ReportView | None
    validation_error: str | None
    measured_only: list[str]


def version_evidence(cfg: ModelConfig, detail: dict[str, Any]) -> Evidence:
    """The version page's tables from ``views.version_detail``'s answer."""
    configured = tuple(
        a.column for a in cfg.sensitive_attributes if a.column not in cfg.feature_names
    )
    validation = detail.get("validation")
    measured = measured_only(dict(detail.get("lineage") or {}), validation, configured)
    section = VersionSection(
        version=str(detail["version"]),
        roles=[],
        lifecycle=str(detail.get("lifecycle") or ""),
        validation_status=detail.get("validation_status"),
        run_id=str(detail.get("run_id") or ""),
        lineage=dict(detail.get("lineage") or {}),
    )
    return Evidence(
        lineage=lineage_table(section),
        report=report_view(validation, measured) if validation else None,
        validation_error=detail.get("validation_error"),
        measured_only=measured,
    )


def decision_history(store: AuditStore, model: str) -> list[AuditEvent]:
    """The newest decisions about the model, newest first."""
    records = [r for a in DECISIONS for r in store.query(model=model, action=a, limit=HISTORY_ROWS)]
    records.sort(key=lambda r: r.seq, reverse=True)
    return [AuditEvent.from_record(r) for r in records[:HISTORY_ROWS]]


def drift_history(store: AuditStore, model: str) -> list[DriftCheck]:
    """The newest drift checks, oldest first (the order a chart reads them)."""
    records = [
        r for a in DRIFT_ACTIONS for r in store.query(model=model, action=a, limit=DRIFT_ROWS)
    ]
    records.sort(key=lambda r: r.seq)
    return [DriftCheck.from_event(AuditEvent.from_record(r)) for r in records[-DRIFT_ROWS:]]

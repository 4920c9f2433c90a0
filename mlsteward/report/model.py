"""The model card as plain data: what the report says about a model, before any formatting.

:mod:`mlsteward.report.collect` fills a :class:`ModelCard` from the registry and the audit
trail; the view and the renderers only read it, so they can be tested on a hand-built card
without MLflow or a database. Audit details are read leniently: a record written before a key
existed still shows, with that fact as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.report.actions import DRIFT_CHECKED, RETRAIN_TRIGGERED

CLASSIFICATION = "binary_classification"
REGRESSION = "regression"

MAX_TIMELINE = 200
"""Timeline events kept (the latest); a longer timeline is shortened, with a warning."""
MAX_DRIFT_ROWS = 50
"""Drift checks shown (newest first): a model checked hourly would otherwise bury the card."""
MAX_ROLLOUT_ROWS = 50
"""Rollouts shown (newest first)."""


@dataclass
class AuditEvent:
    """One audit record, as the card shows it."""

    seq: int
    ts: str
    action: str
    version: str | None
    actor: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: Any) -> AuditEvent:
        d = rec if isinstance(rec, dict) else rec.to_dict()
        return cls(
            seq=int(d["seq"]),
            ts=str(d["ts"]),
            action=str(getattr(d["action"], "value", d["action"])),
            version=None if d.get("version") is None else str(d["version"]),
            actor=str(d.get("actor") or ""),
            reason=str(d.get("reason") or ""),
            details=dict(d.get("details") or {}),
        )


@dataclass
class DriftCheck:
    """One drift check of the audit trail and the retrain claim that answered it.

    Read leniently from the record's ``details`` (see ``tasks.monitoring.record_drift``): a
    record written before a key existed still shows, with that fact as unknown.

    Attributes:
        version: The champion version the current window was compared with.
        drifted_columns: Empty when nothing drifted; None when the record does not say.
        retrain: The drift policy's decision; None when the record carries none.
        reasons: One per policy rule that fired.
        report: Path of the Evidently HTML report written by the drift run.
        sampling: ``DriftResult.sampling`` as recorded: which sides were compared on a sample
            of how many rows (empty when every row was compared, or not recorded).
        outcome: The ``retrain_triggered`` or ``retrain_suppressed`` record of this check, or
            None (no retrain was asked for, or no claim was recorded).
        scores: Every feature's drift score at this check (empty when not recorded).
        thresholds: Every feature's threshold at this check (empty for a record written
            before thresholds were recorded).
    """

    seq: int
    ts: str
    version: str | None
    actor: str
    reason: str
    drifted_columns: list[str] | None
    drift_share: float | None
    prediction_drift: bool | None
    retrain: bool | None
    reasons: list[str] = field(default_factory=list)
    report: str | None = None
    rows: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    outcome: AuditEvent | None = None
    scores: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_event(cls, e: AuditEvent) -> DriftCheck:
        d = e.details
        raw = d.get("decision")
        decision: dict[str, Any] = raw if isinstance(raw, dict) else {}
        columns = d.get("drifted_columns")
        if isinstance(columns, list):
            drifted: list[str] | None = [str(c) for c in columns]
        else:  # "drift_checked" means no column drifted, whatever the details say
            drifted = [] if e.action == DRIFT_CHECKED else None
        reasons = decision.get("reasons")
        retrain = decision.get("retrain")
        prediction = d.get("prediction_drift")
        report = d.get("report")
        return cls(
            seq=e.seq,
            ts=e.ts,
            version=e.version,
            actor=e.actor,
            reason=e.reason,
            drifted_columns=drifted,
            drift_share=to_float(d.get("dataset_drift_share")),
            prediction_drift=prediction if isinstance(prediction, bool) else None,
            retrain=retrain if isinstance(retrain, bool) else None,
            reasons=[str(r) for r in reasons] if isinstance(reasons, list) else [],
            report=None if report in (None, "") else str(report),
            rows=dict(d["rows"]) if isinstance(d.get("rows"), dict) else {},
            sampling=dict(d["sampling"]) if isinstance(d.get("sampling"), dict) else {},
            scores=_numbers(d.get("columns")),
            thresholds=_numbers(d.get("thresholds")),
        )

    @property
    def outcome_label(self) -> str | None:
        """``triggered`` or ``suppressed``, or None without a retrain claim."""
        if self.outcome is None:
            return None
        return "triggered" if self.outcome.action == RETRAIN_TRIGGERED else "suppressed"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``mlsteward report --json``."""
        o = self.outcome
        return {
            "seq": self.seq,
            "ts": self.ts,
            "version": self.version,
            "actor": self.actor,
            "reason": self.reason,
            "drifted_columns": self.drifted_columns,
            "dataset_drift_share": self.drift_share,
            "prediction_drift": self.prediction_drift,
            "retrain": self.retrain,
            "reasons": list(self.reasons),
            "report": self.report,
            "rows": dict(self.rows),
            "sampling": dict(self.sampling),
            "column_scores": dict(self.scores),
            "column_thresholds": dict(self.thresholds),
            "retrain_outcome": None
            if o is None
            else {
                "outcome": self.outcome_label,
                "seq": o.seq,
                "ts": o.ts,
                "actor": o.actor,
                "reason": o.reason,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftCheck:
        """Back from :meth:`to_dict` (the retrain outcome, a summary there, is not restored)."""
        columns = d.get("drifted_columns")
        reasons = d.get("reasons")
        return cls(
            seq=to_int(d.get("seq")) or 0,
            ts=str(d.get("ts") or ""),
            version=None if d.get("version") is None else str(d["version"]),
            actor=str(d.get("actor") or ""),
            reason=str(d.get("reason") or ""),
            drifted_columns=[str(c) for c in columns] if isinstance(columns, list) else None,
            drift_share=to_float(d.get("dataset_drift_share")),
            prediction_drift=d.get("prediction_drift")
            if isinstance(d.get("prediction_drift"), bool)
            else None,
            retrain=d.get("retrain") if isinstance(d.get("retrain"), bool) else None,
            reasons=[str(r) for r in reasons] if isinstance(reasons, list) else [],
            report=d.get("report"),
            rows=dict(d.get("rows") or {}),
            sampling=dict(d.get("sampling") or {}),
            scores=_numbers(d.get("column_scores")),
            thresholds=_numbers(d.get("column_thresholds")),
        )


def _numbers(value: Any) -> dict[str, float]:
    """A ``{column: number}`` mapping from audit details; entries that are no number are
    left out, and anything but a mapping is empty."""
    if not isinstance(value, dict):
        return {}
    return {str(k): x for k, v in value.items() if (x := to_float(v)) is not None}


def to_float(value: Any) -> float | None:
    """A number from audit details, or None (booleans and text are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def to_int(value: Any) -> int | None:
    """A whole number from audit details, or None."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class AuditStatus:
    """The hash-chain check (``AuditStore.verify()``); ``ok`` is None when it could not run."""

    ok: bool | None
    records: int = 0
    head_hash: str | None = None
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass
class VersionSection:
    """Everything the card says about one version.

    Attributes:
        roles: ``champion``, ``challenger``, ``latest`` and/or ``former champion``.
        lineage: From :func:`~mlsteward.report.collect.lineage_from_tags` (``None`` where a
            fact was not recorded).
        metrics: Holdout metrics from the ``test_*`` tags.
        validation: The stored ``ValidationReport.to_dict()``, or None.
        validation_error: Why a recorded report could not be read.
        history: The version's audit events, oldest first.
        task / objective: The ``task`` and ``objective`` tags (None on versions registered
            before they existed, all of them classifiers).
        measured_only: Sensitive columns the fairness gate grouped by that are not among the
            version's recorded features: measured for fairness, never given to the model.
    """

    version: str
    roles: list[str]
    lifecycle: str
    validation_status: str | None
    run_id: str = ""
    created_at: str | None = None
    promoted_at: str | None = None
    promoted_by: str | None = None
    retired_at: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    validation_uri: str | None = None
    validation_error: str | None = None
    history: list[AuditEvent] = field(default_factory=list)
    task: str | None = None
    objective: str | None = None
    measured_only: list[str] = field(default_factory=list)

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION


@dataclass
class RolloutRun:
    """One canary rollout, put together from its audit records (``details.rollout_id``).

    Read leniently: a rollout whose start record is missing still shows from its other
    records, and one without an end record is shown as ``running`` (in progress, or its run
    died without cleaning up).

    Attributes:
        decision: ``promoted`` or ``rejected`` (all steps passed, then the promotion policy
            decided), ``rolled_back`` (a guardrail breached, or the service did not load the
            challenger), ``aborted`` (too little traffic, an error or a cancellation) or
            ``running``.
        steps_reached: The step the rollout was at when it ended (all of them if completed).
        breaches: The breached checks: ``{"check", "message", "observed", "limit"}``.
    """

    rollout_id: str
    version: str | None
    champion: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    actor: str = ""
    planned_steps: list[float] = field(default_factory=list)
    steps_passed: list[int] = field(default_factory=list)
    steps_reached: int = 0
    decision: str = "running"
    reason: str = ""
    breaches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def breach(self) -> str | None:
        """The breached guardrails' names, comma-separated; None without a breach."""
        return ", ".join(str(b.get("check", "?")) for b in self.breaches) or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "version": self.version,
            "champion": self.champion,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "actor": self.actor,
            "planned_steps": list(self.planned_steps),
            "steps_passed": list(self.steps_passed),
            "steps_reached": self.steps_reached,
            "decision": self.decision,
            "reason": self.reason,
            "breaches": [dict(b) for b in self.breaches],
        }


@dataclass
class ModelCard:
    """The governance report of one model, as plain data.

    Attributes:
        champion / challenger: Version dicts (``governance.status`` shape: version, lifecycle,
            validation_status, run_id, artifact_sha256, created_at_ms, metrics, promoted_at).
        versions: One summary dict per registered version (version, lifecycle,
            validation_status, created_at, metrics, artifact_sha256), oldest first.
        sections: Champion, challenger, the newest version and every former champion, in
            that order.
        champion_history: Every change of the champion alias (``governance.champion_history``).
        timeline: Promotions, rollbacks, approvals, refusals and integrity failures.
        drift: Every drift check, newest first, each with the retrain claim that answered it
            (:func:`~mlsteward.report.history.drift_history`); the renderers show the newest
            :data:`MAX_DRIFT_ROWS`.
        rollouts: Every canary rollout, newest first
            (:func:`~mlsteward.report.history.rollout_history`); the renderers show the newest
            :data:`MAX_ROLLOUT_ROWS`.
        task / objective: The model's task and XGBoost objective, from its configuration
            (or, without one, the newest version's tags); a regression card shows regression
            metrics and errors per group, and never a decision threshold.
        warnings: What could not be collected (the card is still written).
        config: The model's configuration when it could be read: the pictures name the
            outcome on regression axes and fall back to its drift thresholds for drift records
            that carry none.
    """

    model: str
    description: str
    owner: str
    generated_at: str
    champion: dict[str, Any] | None
    challenger: dict[str, Any] | None
    primary_metric: str = "roc_auc"
    task: str = CLASSIFICATION
    objective: str | None = None
    previous_champion: str | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)
    sections: list[VersionSection] = field(default_factory=list)
    champion_history: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[AuditEvent] = field(default_factory=list)
    drift: list[DriftCheck] = field(default_factory=list)
    rollouts: list[RolloutRun] = field(default_factory=list)
    audit: AuditStatus = field(default_factory=lambda: AuditStatus(ok=None))
    warnings: list[str] = field(default_factory=list)
    config: ModelConfig | None = None

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def champion_version(self) -> str | None:
        return None if self.champion is None else str(self.champion["version"])

    @property
    def challenger_version(self) -> str | None:
        return None if self.challenger is None else str(self.challenger["version"])


def version_key(v: str) -> tuple[int, str]:
    """Sort key for version numbers: numerically, anything else before them."""
    return (int(v), v) if str(v).isdigit() else (-1, str(v))

"""The process as plain data: what the metrics read off the audit trail and Prefect's run
history, before any chart or verdict.

Kept apart from the maths (``spc``) and the reading (``history``, ``metrics``) so the report,
the API, the console and the evidence all share one shape, and tests can build it by hand.
Times are hours: lead and cycle times of model delivery are read in hours by the people who
own them, and a target like "lead time at most 24 h" is written in them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

ALL = "all"
"""The scope of every model together."""

STAGES = ("ingest", "retrieval", "tuning", "gates", "approval_wait", "promotion")
"""The stages a version passes, in order; each has a cycle time."""

CAUSES = ("drift", "schedule", "ci", "api", "manual")
"""Why a training run started: a drift trigger's automation, a deployment schedule, the signed
CI webhook, the governance API or console, or a person (the command line or the Prefect UI)."""


@dataclass(frozen=True)
class Point:
    """One observation of a time metric: ``value`` hours, observed when ``at`` happened (the
    end event), about ``label`` (``heart_disease v3``)."""

    at: datetime
    value: float
    label: str
    model: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass(frozen=True)
class Subgroup:
    """One period's count for a p-chart: ``defects`` of ``size`` (failed gates of versions
    validated that week, failed runs of runs finished that week)."""

    start: datetime
    end: datetime
    defects: int
    size: int

    @property
    def proportion(self) -> float | None:
        return self.defects / self.size if self.size else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "defects": self.defects,
            "size": self.size,
            "proportion": self.proportion,
        }


@dataclass(frozen=True)
class ParetoItem:
    """One rejection reason (a gate and, where the gate names one, its metric) and how often
    it rejected a version, with its share and the running share of the sorted list."""

    gate: str
    metric: str | None
    count: int
    share: float
    cumulative: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunCounts:
    """Finished runs of one flow in the period, by final state."""

    flow: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    crashed: int = 0
    cancelled: int = 0

    @property
    def failure_rate(self) -> float | None:
        finished = self.completed + self.failed + self.crashed
        return (self.failed + self.crashed) / finished if finished else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failure_rate": self.failure_rate}


@dataclass(frozen=True)
class ScopeMetrics:
    """Every process metric of one scope (a model, or ``ALL``) over one period.

    Rates are None when there is nothing to divide by (no promotion: no rollback rate).
    """

    scope: str
    since: datetime
    until: datetime
    lead_time_to_decision: list[Point] = field(default_factory=list)
    """Hours from a data version's ingestion to the first decision on a version trained on it
    (rejected by a gate or a person, timed out, or promoted)."""
    lead_time_to_champion: list[Point] = field(default_factory=list)
    """Hours from a data version's ingestion to a version trained on it becoming champion."""
    cycle_times: dict[str, list[Point]] = field(default_factory=dict)
    """Hours per stage (``STAGES``); ``approval_wait`` is the approval wait time."""
    versions_validated: int = 0
    first_pass: int = 0
    """Versions whose first validation passed every gate."""
    gate_failures: list[Subgroup] = field(default_factory=list)
    """Per period: versions whose first validation failed, of versions validated."""
    rejections: list[ParetoItem] = field(default_factory=list)
    retrains: dict[str, int] = field(default_factory=dict)
    """Training runs started in the period, by cause (``CAUSES``)."""
    drift_to_recovery: list[Point] = field(default_factory=list)
    """Hours from drift detected to the next decision on a version trained after it."""
    unrecovered_drift: int = 0
    """Drift detections with no decision yet."""
    promotions: int = 0
    rollbacks: int = 0
    promotions_rolled_back: int = 0
    runs: list[RunCounts] = field(default_factory=list)
    run_failures: list[Subgroup] = field(default_factory=list)
    """Per period: failed and crashed runs, of finished runs (every flow)."""

    @property
    def first_pass_yield(self) -> float | None:
        return self.first_pass / self.versions_validated if self.versions_validated else None

    @property
    def rollback_rate(self) -> float | None:
        return self.rollbacks / self.promotions if self.promotions else None

    @property
    def change_failure_rate(self) -> float | None:
        return self.promotions_rolled_back / self.promotions if self.promotions else None

    @property
    def retrain_count(self) -> int:
        return sum(self.retrains.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "lead_time_to_decision": [p.to_dict() for p in self.lead_time_to_decision],
            "lead_time_to_champion": [p.to_dict() for p in self.lead_time_to_champion],
            "cycle_times": {
                stage: [p.to_dict() for p in points] for stage, points in self.cycle_times.items()
            },
            "versions_validated": self.versions_validated,
            "first_pass": self.first_pass,
            "first_pass_yield": self.first_pass_yield,
            "gate_failures": [g.to_dict() for g in self.gate_failures],
            "rejections": [r.to_dict() for r in self.rejections],
            "retrains": dict(self.retrains),
            "retrain_count": self.retrain_count,
            "drift_to_recovery": [p.to_dict() for p in self.drift_to_recovery],
            "unrecovered_drift": self.unrecovered_drift,
            "promotions": self.promotions,
            "rollbacks": self.rollbacks,
            "promotions_rolled_back": self.promotions_rolled_back,
            "rollback_rate": self.rollback_rate,
            "change_failure_rate": self.change_failure_rate,
            "runs": [r.to_dict() for r in self.runs],
            "run_failures": [g.to_dict() for g in self.run_failures],
        }

"""Acting on a review (DMAIC's Control): a current special cause becomes an alert, and the
review itself becomes an audit record.

One incident per model and chart (rule ``process_special_cause``, subject the chart's key): a
chart that shows a current special cause fires or keeps its incident; the same chart quiet at a
later review resolves it. The ``all`` scope has no model, hence no owner to notify: its special
causes are in the review's audit record and the report, and each model's own charts alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlsteward.alerts.engine import AlertOutcome, observe
from mlsteward.alerts.observation import Observation
from mlsteward.audit import Action, AuditRecord, AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.process.model import ALL
from mlsteward.process.review import Chart, ProcessReport, ScopeReview

RULE = "process_special_cause"


def _observation(chart: Chart) -> Observation:
    current = [c for c in chart.special_causes if c.current]
    if current:
        newest = max(current, key=lambda c: c.at)
        summary = f"{chart.title}: {newest.description}"
        if len(current) > 1:
            summary += f" (and {len(current) - 1} more signal(s))"
    else:
        summary = f"{chart.title}: no current special cause"
    return Observation(
        rule=RULE,
        subject=chart.key,
        breached=bool(current),
        summary=summary,
        value=float(len(current)),
        limit=0.0,
        details={"signals": [c.to_dict() for c in current]},
    )


def observations(review: ScopeReview) -> list[Observation]:
    """One verdict per chart with control limits (a chart too short to judge says nothing)."""
    return [_observation(c) for c in review.charts if c.chart.reason is None]


def alert_special_causes(
    report: ProcessReport,
    configs: Mapping[str, ModelConfig],
    *,
    actor: str,
    audit: AuditStore | None = None,
) -> list[AlertOutcome]:
    """Move each model's process incidents through its alerting."""
    out: list[AlertOutcome] = []
    for scope, review in report.scopes.items():
        if scope == ALL or scope not in configs:
            continue
        out += observe(configs[scope], observations(review), actor=actor, audit=audit)
    return out


def summary(report: ProcessReport) -> dict[str, Any]:
    """What the audit record keeps of a review: each scope's headline figures and its
    current special causes (the full report is the artifact and the files)."""
    scopes = {}
    for name, review in report.scopes.items():
        m = review.metrics
        scopes[name] = {
            "versions_validated": m.versions_validated,
            "first_pass_yield": m.first_pass_yield,
            "promotions": m.promotions,
            "change_failure_rate": m.change_failure_rate,
            "retrains": dict(m.retrains),
            "special_causes": len(review.special_causes),
            "current": [
                {"chart": c.chart, "rule": c.rule, "at": c.at.isoformat()}
                for c in review.current_causes
            ],
        }
    return {
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "scopes": scopes,
    }


def record_review(
    report: ProcessReport, audit: AuditStore, *, actor: str, files: Mapping[str, str] | None = None
) -> AuditRecord:
    current = report.current_causes
    reason = (
        f"{len(current)} current special cause(s): "
        + ", ".join(sorted({f"{s} {c.chart}" for s, c in current}))
        if current
        else "no current special cause"
    )
    return audit.append(
        Action.PROCESS_REVIEWED,
        actor=actor,
        reason=reason,
        details={**summary(report), "files": dict(files or {})},
    )

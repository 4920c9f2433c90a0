"""The process review: each metric charted, judged by the run rules and against its target.

DMAIC's Measure and Control in one pass: the metrics (``metrics``) become XmR charts (lead and
cycle times, drift to recovery) and p-charts (gate and run failure rates) whose limits come
from a baseline (``process.baseline_points`` / ``baseline_until``), the run rules
(``process.rules``) flag special causes, and Cpk measures each time against its target. A
special cause with a point in the last ``alert_window_days`` is current: the review tells it
as an alert through the model's alerting (one incident per chart, resolved when the chart is
quiet again) and records the review in the audit trail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.process import ProcessConfig
from mlsteward.process.model import ALL, STAGES, Point, ScopeMetrics, Subgroup
from mlsteward.process.spc import Capability, PChart, Signal, XmRChart, capability, p_chart, xmr

TIME_CHARTS: tuple[tuple[str, str, str | None], ...] = (
    ("lead_time_to_decision", "Lead time: data version to decision", "lead_time_to_decision_hours"),
    ("lead_time_to_champion", "Lead time: data version to champion", "lead_time_to_champion_hours"),
    *((f"cycle_{s}", f"Cycle time: {s.replace('_', ' ')}", None) for s in STAGES),
    ("drift_to_recovery", "Drift detected to recovery", "drift_to_recovery_hours"),
)
"""Every XmR chart: its key, title and the target (``process.targets``) its Cpk is against."""
_TARGET_OF_STAGE = {"approval_wait": "approval_wait_hours"}

RATE_CHARTS: tuple[tuple[str, str], ...] = (
    ("gate_failures", "Gate failure rate (first validation)"),
    ("run_failures", "Run failure rate (failed and crashed flow runs)"),
)


@dataclass(frozen=True)
class SpecialCause:
    """One departure from the process's usual behaviour on one chart: the signals whose points
    overlap, merged (a shift of three sigma breaks rules 1, 2, 5 and 6 on the same points; a
    person reads that as one cause, named by the strongest rule)."""

    chart: str
    title: str
    rules: tuple[str, ...]
    description: str
    points: tuple[int, ...]
    at: datetime
    labels: tuple[str, ...]
    current: bool

    @property
    def rule(self) -> str:
        return self.rules[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chart": self.chart,
            "title": self.title,
            "rule": self.rule,
            "rules": list(self.rules),
            "description": self.description,
            "points": list(self.points),
            "at": self.at.isoformat(),
            "labels": list(self.labels),
            "current": self.current,
        }


@dataclass(frozen=True)
class Chart:
    """One metric as a control chart: its points' times and labels, the chart, and its
    capability against a target when one is configured."""

    key: str
    title: str
    kind: str  # "xmr" or "p"
    unit: str
    times: tuple[datetime, ...]
    labels: tuple[str, ...]
    chart: XmRChart | PChart
    target: float | None = None
    capability: Capability | None = None
    special_causes: tuple[SpecialCause, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "kind": self.kind,
            "unit": self.unit,
            "times": [t.isoformat() for t in self.times],
            "labels": list(self.labels),
            "chart": self.chart.to_dict(),
            "target": self.target,
            "capability": self.capability.to_dict() if self.capability else None,
            "special_causes": [c.to_dict() for c in self.special_causes],
        }


@dataclass(frozen=True)
class ScopeReview:
    """One scope's metrics and charts."""

    metrics: ScopeMetrics
    charts: tuple[Chart, ...]
    config: ProcessConfig

    @property
    def special_causes(self) -> list[SpecialCause]:
        return [c for chart in self.charts for c in chart.special_causes]

    @property
    def current_causes(self) -> list[SpecialCause]:
        return [c for c in self.special_causes if c.current]

    def chart(self, key: str) -> Chart | None:
        return next((c for c in self.charts if c.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics.to_dict(),
            "charts": [c.to_dict() for c in self.charts],
            "special_causes": [c.to_dict() for c in self.special_causes],
            "rules": self.config.rules,
        }


@dataclass(frozen=True)
class ProcessReport:
    """Every scope reviewed over one period: the models asked for, and ``all`` of them."""

    generated_at: datetime
    since: datetime
    until: datetime
    scopes: dict[str, ScopeReview]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def current_causes(self) -> list[tuple[str, SpecialCause]]:
        return [(s, c) for s, r in self.scopes.items() for c in r.current_causes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "mlsteward-process/1",
            "generated_at": self.generated_at.isoformat(),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "notes": list(self.notes),
            "scopes": {name: r.to_dict() for name, r in self.scopes.items()},
        }


def _baseline(times: Sequence[datetime], cfg: ProcessConfig) -> int:
    """How many leading points the limits come from: ``baseline_points``, or fewer when
    ``baseline_until`` falls earlier."""
    n = min(len(times), cfg.baseline_points)
    if cfg.baseline_until is not None:
        cut = datetime.combine(cfg.baseline_until, datetime.min.time(), UTC)
        n = min(n, sum(1 for t in times if t < cut))
    return n


def _strength(signal: Signal) -> tuple[int, int]:
    """Rule 1 (a point beyond the limits) first, then by rule number; the individuals before
    the moving ranges."""
    number = int(signal.rule.rsplit("_", 1)[-1]) if signal.rule[-1].isdigit() else 9
    return (signal.chart != "x", number)


def _causes(
    key: str,
    title: str,
    signals: Sequence[Signal],
    times: Sequence[datetime],
    labels: Sequence[str],
    recent: datetime,
) -> tuple[SpecialCause, ...]:
    groups: list[list[Signal]] = []
    # The moving-range chart's own signal stays on the chart (its skewed distribution breaks
    # the 3-sigma line about once in 110 points of a stable process): a special cause is a
    # pattern in the values themselves.
    values = [s for s in signals if s.chart == "x"]
    for s in sorted(values, key=lambda s: (min(s.points), s.last)):
        if groups and min(s.points) <= max(p for g in groups[-1] for p in g.points):
            groups[-1].append(s)
        else:
            groups.append([s])
    out = []
    for group in groups:
        ranked = sorted(group, key=_strength)
        points = tuple(sorted({p for g in group for p in g.points}))
        at = times[points[-1]]
        out.append(
            SpecialCause(
                key,
                title,
                tuple(dict.fromkeys(g.rule for g in ranked)),
                ranked[0].description,
                points,
                at,
                tuple(labels[i] for i in points if i < len(labels)),
                current=at >= recent,
            )
        )
    return tuple(out)


def time_chart(
    key: str,
    title: str,
    points: Sequence[Point],
    cfg: ProcessConfig,
    *,
    target: float | None,
    recent: datetime,
) -> Chart:
    """An XmR chart of hours in time order, with Cpk against ``target`` (an upper limit)."""
    ordered = sorted(points, key=lambda p: p.at)
    times = tuple(p.at for p in ordered)
    labels = tuple(p.label for p in ordered)
    values = [p.value for p in ordered]
    chart = xmr(
        values,
        baseline=_baseline(times, cfg),
        rules=cfg.rules,
        min_points=cfg.min_points,
        lower_bound=0.0,
    )
    cap = capability(values, usl=target) if target is not None and values else None
    if cap is not None and cap.n < cfg.min_points:
        # Cpk from four points is a number, not an estimate: 3,000 on a quick demo
        why = f"{cap.n} value(s); capability needs at least {cfg.min_points}"
        cap = replace(cap, cpk=None, ppk=None, reason=why)
    causes = _causes(key, title, chart.signals, times, labels, recent)
    return Chart(key, title, "xmr", "hours", times, labels, chart, target, cap, causes)


def rate_chart(
    key: str, title: str, groups: Sequence[Subgroup], cfg: ProcessConfig, *, recent: datetime
) -> Chart:
    """A p-chart of one rate per period; empty periods stay on the axis, unjudged."""
    times = tuple(g.start for g in groups)
    labels = tuple(f"{g.start:%Y-%m-%d}" for g in groups)
    chart = p_chart(
        [g.defects for g in groups],
        [g.size for g in groups],
        baseline=_baseline(times, cfg),
        rules=cfg.rules,
        min_points=cfg.min_points,
    )
    causes = _causes(key, title, chart.signals, times, labels, recent)
    return Chart(key, title, "p", "share", times, labels, chart, None, None, causes)


def review_scope(metrics: ScopeMetrics, cfg: ProcessConfig, *, now: datetime) -> ScopeReview:
    """Every chart of one scope."""
    recent = now - timedelta(days=cfg.alert_window_days)
    targets = cfg.targets
    series: dict[str, Sequence[Point]] = {
        "lead_time_to_decision": metrics.lead_time_to_decision,
        "lead_time_to_champion": metrics.lead_time_to_champion,
        "drift_to_recovery": metrics.drift_to_recovery,
        **{f"cycle_{s}": metrics.cycle_times.get(s, []) for s in STAGES},
    }
    charts: list[Chart] = []
    for key, title, target_name in TIME_CHARTS:
        points = series[key]
        if not points:
            continue
        name = target_name or _TARGET_OF_STAGE.get(key.removeprefix("cycle_"))
        target = getattr(targets, name) if name else None
        charts.append(time_chart(key, title, points, cfg, target=target, recent=recent))
    groups = {"gate_failures": metrics.gate_failures, "run_failures": metrics.run_failures}
    for key, title in RATE_CHARTS:
        if any(g.size for g in groups[key]):
            charts.append(rate_chart(key, title, groups[key], cfg, recent=recent))
    return ScopeReview(metrics, tuple(charts), cfg)


def review(
    metrics: Mapping[str, ScopeMetrics],
    configs: Mapping[str, ModelConfig],
    *,
    since: datetime,
    until: datetime,
    now: datetime | None = None,
    notes: Sequence[str] = (),
) -> ProcessReport:
    """Each scope reviewed with its model's process config; ``all`` with the defaults (its
    targets are those every model would have without a config of its own)."""
    now = now or datetime.now(UTC)
    scopes = {}
    for scope, m in metrics.items():
        cfg = configs[scope].process if scope in configs else ProcessConfig()
        scopes[scope] = review_scope(m, cfg, now=now)
    ordered = dict(sorted(scopes.items(), key=lambda kv: (kv[0] != ALL, kv[0])))
    return ProcessReport(now, since, until, ordered, tuple(notes))

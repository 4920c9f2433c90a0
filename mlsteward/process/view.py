"""The process report as what a person reads: headline figures, the special causes, the charts
with their capability, the rejection Pareto and the runs, per scope.

Plain data shared by the HTML page, the markdown of the Prefect artifact and the console, so
the three never disagree about a number.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from mlsteward.process.model import ALL, CAUSES, ScopeMetrics
from mlsteward.process.review import Chart, ProcessReport, ScopeReview
from mlsteward.process.spc import PChart
from mlsteward.report.charts.control import (
    ControlSeries,
    ParetoBar,
    control_chart_picture,
    pareto_picture,
)
from mlsteward.report.charts.svg import Picture

DASH = "\u2013"
"""What a figure with nothing to measure shows."""


@dataclass(frozen=True)
class Stat:
    label: str
    value: str
    sub: str = ""
    tone: str = "info"  # ok, warn, bad, info


@dataclass(frozen=True)
class ChartView:
    chart: Chart
    picture: Picture | None
    limits: str
    capability: str
    tone: str


@dataclass(frozen=True)
class ScopeView:
    name: str
    title: str
    stats: list[Stat]
    causes: list[dict[str, Any]]
    charts: list[ChartView]
    pareto: Picture | None
    rejections: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    retrains: dict[str, int] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """Whether any chart had control limits to judge by."""
        return any(cv.tone != "none" for cv in self.charts)


def hours_text(h: float | None) -> str:
    if h is None:
        return DASH
    if h >= 48:
        return f"{h / 24:.1f} d"
    if h >= 1:
        return f"{h:.1f} h"
    if h >= 1 / 60:
        return f"{h * 60:.0f} min"
    return f"{h * 3600:.0f} s"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


def _median(points: list[Any]) -> float | None:
    return statistics.median(p.value for p in points) if points else None


def _stats(m: ScopeMetrics, review: ScopeReview) -> list[Stat]:
    lead = review.chart("lead_time_to_decision")
    cpk = lead.capability.cpk if lead and lead.capability else None
    target = review.config.targets.lead_time_to_decision_hours
    fpy = m.first_pass_yield
    cfr = m.change_failure_rate
    finished = sum(r.completed + r.failed + r.crashed for r in m.runs)
    failed = sum(r.failed + r.crashed for r in m.runs)
    causes = ", ".join(f"{k} {v}" for k in CAUSES if (v := m.retrains.get(k)))
    return [
        Stat(
            "Lead time to decision",
            hours_text(_median(m.lead_time_to_decision)),
            f"median of {len(m.lead_time_to_decision)}"
            + (f"; Cpk {cpk:.2f} against {hours_text(target)}" if cpk is not None else ""),
            "info" if cpk is None else ("ok" if cpk >= 1.33 else "warn" if cpk >= 1 else "bad"),
        ),
        Stat(
            "Lead time to champion",
            hours_text(_median(m.lead_time_to_champion)),
            f"median of {len(m.lead_time_to_champion)}",
        ),
        Stat(
            "First-pass yield",
            _pct(fpy),
            f"{m.first_pass} of {m.versions_validated} versions passed every gate first time",
            "info" if fpy is None else ("ok" if fpy >= 0.8 else "warn"),
        ),
        Stat(
            "Change failure rate",
            _pct(cfr),
            f"{m.promotions_rolled_back} of {m.promotions} promotions rolled back",
            "info" if cfr is None else ("ok" if cfr <= 0.15 else "bad"),
        ),
        Stat(
            "Approval wait",
            hours_text(_median(m.cycle_times.get("approval_wait", []))),
            f"median of {len(m.cycle_times.get('approval_wait', []))}",
        ),
        Stat("Retrains", str(m.retrain_count), causes or "none in the period"),
        Stat(
            "Drift to recovery",
            hours_text(_median(m.drift_to_recovery)),
            f"median of {len(m.drift_to_recovery)}; {m.unrecovered_drift} not recovered yet",
            "warn" if m.unrecovered_drift else "info",
        ),
        Stat(
            "Run failures",
            _pct(failed / finished if finished else None),
            f"{failed} of {finished} finished flow runs failed or crashed",
            "info" if not finished else ("ok" if failed / finished <= 0.05 else "bad"),
        ),
    ]


TIME_UNITS = (("days", 1 / 24, 48.0), ("hours", 1.0, 1.0), ("minutes", 60.0, 1 / 60))


def time_unit(values: list[float]) -> tuple[str, float]:
    """The unit a person reads these hours in (by their median) and the factor to it."""
    typical = statistics.median(values) if values else 1.0
    for name, factor, floor in TIME_UNITS:
        if typical >= floor:
            return name, factor
    return "seconds", 3600.0


def _limits(chart: Chart) -> str:
    c = chart.chart
    if c.reason:
        return c.reason
    if isinstance(c, PChart):
        return f"centre {_pct(c.center)}, limits per subgroup (3 sigma), baseline {c.baseline}"
    unit, k = time_unit(list(c.values))
    low = 0.0 if c.lcl is None else c.lcl
    high = 0.0 if c.ucl is None else c.ucl
    centre = 0.0 if c.center is None else c.center
    return (
        f"centre {centre * k:.3g} {unit}, limits {low * k:.3g} to {high * k:.3g} {unit}, "
        f"baseline {c.baseline} points"
    )


def _capability(chart: Chart) -> str:
    cap = chart.capability
    if cap is None:
        return "no target"
    if cap.reason:
        return cap.reason
    return (
        f"Cpk {cap.cpk:.2f}, Ppk {cap.ppk:.2f} against {hours_text(chart.target)}; "
        f"{_pct(cap.within_spec)} within target"
    )


def _series(chart: Chart) -> ControlSeries:
    c = chart.chart
    flagged = sorted({i for s in chart.special_causes for i in s.points})
    if isinstance(c, PChart):
        return ControlSeries(
            chart.key,
            chart.title,
            "share",
            chart.times,
            list(c.proportions),
            center=c.center,
            ucl=list(c.ucl),
            lcl=list(c.lcl),
            baseline=c.baseline,
            flagged=flagged,
            percent=True,
        )
    unit, factor = time_unit(list(c.values))
    return ControlSeries(
        chart.key,
        chart.title,
        unit,
        chart.times,
        list(c.values),
        center=c.center,
        ucl=c.ucl,
        lcl=c.lcl,
        baseline=c.baseline,
        flagged=flagged,
        moving_ranges=list(c.moving_ranges),
        mr_center=c.mr_bar,
        mr_ucl=c.mr_ucl,
        target=chart.target,
        target_text=None if chart.target is None else hours_text(chart.target),
        scale=factor,
    )


def scope_view(name: str, review: ScopeReview, *, pictures: bool = True) -> ScopeView:
    m = review.metrics
    charts = []
    for chart in review.charts:
        tone = (
            "none"
            if chart.chart.reason and not chart.special_causes
            else (
                "bad"
                if any(c.current for c in chart.special_causes)
                else ("warn" if chart.special_causes else "ok")
            )
        )
        picture = control_chart_picture(_series(chart), salt=name) if pictures else None
        charts.append(ChartView(chart, picture, _limits(chart), _capability(chart), tone))
    bars = [
        ParetoBar(f"{r.gate}: {r.metric}" if r.metric else r.gate, r.count) for r in m.rejections
    ]
    pareto = (
        pareto_picture("rejections", "Rejections by gate and metric", bars, salt=name)
        if pictures
        else None
    )
    return ScopeView(
        name=name,
        title="All models" if name == ALL else name,
        stats=_stats(m, review),
        causes=[c.to_dict() for c in review.special_causes],
        charts=charts,
        pareto=pareto,
        rejections=[r.to_dict() for r in m.rejections],
        runs=[r.to_dict() for r in m.runs],
        retrains=dict(m.retrains),
    )


def report_view(report: ProcessReport, *, pictures: bool = True) -> list[ScopeView]:
    return [scope_view(name, r, pictures=pictures) for name, r in report.scopes.items()]

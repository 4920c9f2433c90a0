"""The process review on hand-built metrics: charts and their limits, a planted shift flagged
and told once as an alert, a quiet process resolving it, the review's audit record, and the
report as a person reads it (HTML, markdown, JSON)."""

from __future__ import annotations

import itertools
import json
import random
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from mlsteward.alerts.state import AlertState
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.config.sections.process import ProcessConfig
from mlsteward.process.control import alert_special_causes, observations, record_review
from mlsteward.process.model import ALL, ParetoItem, Point, ScopeMetrics, Subgroup
from mlsteward.process.render import render_html, render_json, render_markdown
from mlsteward.process.review import review, review_scope

MODEL = "heart_disease"
START = datetime(2026, 1, 5, tzinfo=UTC)


def _points(values: list[float], every: timedelta = timedelta(days=2)) -> list[Point]:
    return [
        Point(START + i * every, v, f"{MODEL} v{i + 1}", MODEL, str(i + 1))
        for i, v in enumerate(values)
    ]


def _metrics(lead: list[float], failures: list[tuple[int, int]] | None = None) -> ScopeMetrics:
    points = _points(lead)
    groups = [
        Subgroup(START + timedelta(weeks=w), START + timedelta(weeks=w + 1), d, n)
        for w, (d, n) in enumerate(failures or [])
    ]
    return ScopeMetrics(
        scope=MODEL,
        since=START,
        until=points[-1].at + timedelta(days=1),
        lead_time_to_decision=points,
        versions_validated=len(points),
        first_pass=len(points) - 3,
        gate_failures=groups,
        rejections=[
            ParetoItem("metric_thresholds", "roc_auc", 2, 2 / 3, 2 / 3),
            ParetoItem("fairness", "tpr_difference", 1, 1 / 3, 1.0),
        ],
        promotions=10,
        promotions_rolled_back=1,
        rollbacks=1,
    )


def _stable(n: int, seed: int = 1) -> list[float]:
    """Noise around 20 h. Seed 1's 30 points break none of Nelson's rules (a stable process
    still shows a false alarm now and then: Nelson's eight together on ~5% of 30-point runs)."""
    rng = random.Random(seed)
    return [round(rng.gauss(20.0, 2.0), 3) for _ in range(n)]


def test_limits_come_from_the_baseline_and_a_later_shift_is_a_current_special_cause() -> None:
    lead = _stable(20) + [v + 14.0 for v in _stable(10, seed=8)]
    m = _metrics(lead)
    now = m.lead_time_to_decision[-1].at + timedelta(hours=1)
    r = review_scope(m, ProcessConfig(), now=now)
    chart = r.chart("lead_time_to_decision")
    assert chart is not None and chart.kind == "xmr"

    # limits by hand from the first 20 points only (the shift does not widen them)
    base = lead[:20]
    centre = sum(base) / 20
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(base)) / 19
    assert abs(chart.chart.center - centre) < 1e-9
    assert abs(chart.chart.ucl - (centre + 2.66 * mr_bar)) < 1e-9
    assert chart.chart.baseline == 20

    flagged = {i for c in chart.special_causes for i in c.points}
    assert flagged and min(flagged) >= 20, "only the shifted points are special causes"
    assert any(c.current for c in chart.special_causes)
    # capability against the 24 h target: the shifted process misses it
    assert chart.target == 24.0 and chart.capability is not None
    assert chart.capability.cpk is not None and chart.capability.cpk < 1.0


def test_a_stable_process_is_in_control_and_baseline_until_moves_the_limits() -> None:
    m = _metrics(_stable(30))
    r = review_scope(m, ProcessConfig(), now=m.until)
    assert r.special_causes == []
    early = ProcessConfig(baseline_until=(START + timedelta(days=20)).date())
    chart = review_scope(m, early, now=m.until).chart("lead_time_to_decision")
    assert chart is not None and chart.chart.baseline == 10  # points before day 20: every 2 days


def test_too_few_points_draw_no_limits_and_judge_nothing() -> None:
    m = _metrics(_stable(5))
    chart = review_scope(m, ProcessConfig(), now=m.until).chart("lead_time_to_decision")
    assert chart is not None and chart.chart.reason and "8" in chart.chart.reason
    assert observations(review_scope(m, ProcessConfig(), now=m.until)) == []


def test_a_rising_gate_failure_rate_is_flagged_on_the_p_chart() -> None:
    failures = [(1, 20)] * 12 + [(7, 20)] * 4
    m = _metrics(_stable(12), failures)
    r = review_scope(m, ProcessConfig(baseline_points=12), now=m.until)
    chart = r.chart("gate_failures")
    assert chart is not None and chart.kind == "p"
    assert abs(chart.chart.center - 12 / 240) < 1e-12
    assert {i for c in chart.special_causes for i in c.points} >= {12, 13, 14, 15}


def test_a_current_special_cause_alerts_once_and_a_quiet_review_resolves_it() -> None:
    cfg = get_model_config(MODEL)
    shifted = _metrics(_stable(20) + [v + 14.0 for v in _stable(10, seed=8)])
    now = shifted.until
    report = review({MODEL: shifted}, {MODEL: cfg}, since=START, until=now, now=now)
    first = alert_special_causes(report, {MODEL: cfg}, actor="test")
    again = alert_special_causes(report, {MODEL: cfg}, actor="test")
    fired = [o for o in first if o.transition is not None and o.transition.value == "fired"]
    assert [o.observation.subject for o in fired] == ["lead_time_to_decision"]
    assert all(o.transition is None or o.transition.value == "suppressed" for o in again[:1])
    with AlertState() as state:
        [incident] = state.firing(MODEL)
        assert incident["rule"] == "process_special_cause"

    quiet = _metrics(_stable(30))
    later = review({MODEL: quiet}, {MODEL: cfg}, since=START, until=quiet.until, now=quiet.until)
    resolved = alert_special_causes(later, {MODEL: cfg}, actor="test")
    assert next(o.transition.value for o in resolved if o.transition is not None) == "resolved"
    with audit_store() as audit:
        kinds = [r.action for r in audit.query(model=MODEL)]
        assert kinds.count(Action.ALERT_FIRED) == 1 and kinds.count(Action.ALERT_RESOLVED) == 1

        record = record_review(report, audit, actor="test", files={"html": "/x.html"})
        assert record.action == Action.PROCESS_REVIEWED and record.model is None
        assert record.details["scopes"][MODEL]["current"][0]["chart"] == "lead_time_to_decision"
        assert "1 current special cause" in record.reason


def test_the_report_reads_as_html_markdown_and_json() -> None:
    shifted = _metrics(_stable(20) + [v + 14.0 for v in _stable(10, seed=8)])
    everything = ScopeMetrics(scope=ALL, since=START, until=shifted.until)
    report = review(
        {ALL: everything, MODEL: shifted},
        {MODEL: get_model_config(MODEL)},
        since=START,
        until=shifted.until,
        now=shifted.until,
        notes=("no Prefect API reachable: run metrics are empty",),
    )
    assert list(report.scopes) == [ALL, MODEL]
    page = render_html(report)
    assert "<script" not in page and "http://" not in page.split("<svg", 1)[0]
    assert "Lead time: data version to decision" in page and "current special cause" in page
    assert "no Prefect API reachable" in page
    figures = re.findall(r"<figure[^>]*>(.*?)<figcaption>", page, flags=re.S)
    assert len(figures) >= 2  # the lead-time chart and the Pareto
    for figure in figures:  # every inline chart is one well-formed SVG element
        assert ET.fromstring(figure.strip()).tag.endswith("svg")
    md = render_markdown(report)
    assert "## heart_disease" in md and "| First-pass yield | 90.0% |" in md
    assert "data:image/svg+xml;base64," in md  # the chart with a special cause
    doc = json.loads(render_json(report))
    assert doc["format"] == "mlsteward-process/1"
    assert doc["scopes"][MODEL]["special_causes"][0]["current"] is True
    assert doc["scopes"][MODEL]["metrics"]["change_failure_rate"] == 0.1

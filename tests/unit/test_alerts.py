"""Incidents: one notification per incident, reminders after the quiet period, one resolve;
the audit records an alert leaves; the alert config."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from mlsteward.alerts.engine import console_link, observe
from mlsteward.alerts.observation import Observation
from mlsteward.alerts.state import AlertState, Transition
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.config.sections.alerts import RULES, AlertsConfig

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUIET = timedelta(minutes=60)


def test_hundred_breaches_are_one_incident_one_reminder_and_one_resolve() -> None:
    with AlertState() as state:
        seen = [
            state.check(
                "m", "skew", "bmi", breached=True, quiet_period=QUIET, now=T0 + timedelta(seconds=n)
            ).transition
            for n in range(100)
        ]
        assert seen.count(Transition.FIRED) == 1 and seen[0] is Transition.FIRED
        assert seen.count(Transition.SUPPRESSED) == 99
        [open_now] = state.firing("m")
        assert (open_now["breaches"], open_now["suppressed"]) == (100, 99)

        late = state.check("m", "skew", "bmi", breached=True, quiet_period=QUIET, now=T0 + QUIET)
        assert late.transition is Transition.REMINDED
        again = state.check(
            "m", "skew", "bmi", breached=True, quiet_period=QUIET, now=T0 + QUIET * 1.5
        )
        assert again.transition is Transition.SUPPRESSED  # the quiet period restarts

        clear = state.check(
            "m", "skew", "bmi", breached=False, quiet_period=QUIET, now=T0 + QUIET * 2
        )
        assert clear.transition is Transition.RESOLVED
        assert state.firing("m") == []
        still = state.check("m", "skew", "bmi", breached=False, quiet_period=QUIET)
        assert still.transition is Transition.OK

        # a new breach is a new incident
        new = state.check("m", "skew", "bmi", breached=True, quiet_period=QUIET)
        assert new.transition is Transition.FIRED and new.incident != late.incident


def test_subjects_are_separate_incidents_and_resolve_after_waits() -> None:
    with AlertState() as state:
        a = state.check("m", "skew", "bmi", breached=True, quiet_period=QUIET)
        b = state.check("m", "skew", "age", breached=True, quiet_period=QUIET)
        assert a.transition is b.transition is Transition.FIRED and a.incident != b.incident
        first = state.check("m", "skew", "bmi", breached=False, quiet_period=QUIET, resolve_after=2)
        assert first.transition is Transition.CLEARING
        back = state.check("m", "skew", "bmi", breached=True, quiet_period=QUIET, resolve_after=2)
        assert back.transition is Transition.SUPPRESSED  # a flap is the same incident
        for expected in (Transition.CLEARING, Transition.RESOLVED):
            step = state.check(
                "m", "skew", "bmi", breached=False, quiet_period=QUIET, resolve_after=2
            )
            assert step.transition is expected
        assert [i["subject"] for i in state.firing("m")] == ["age"]


def test_two_checkers_at_once_fire_once() -> None:
    AlertState().close()  # the schema, before the race
    barrier = threading.Barrier(4)
    seen: list[Transition] = []

    def check() -> None:
        with AlertState() as mine:
            barrier.wait()
            seen.append(
                mine.check("m", "error_rate", "", breached=True, quiet_period=QUIET).transition
            )

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted([Transition.FIRED] + [Transition.SUPPRESSED] * 3)


def test_observe_records_fired_and_resolved_only() -> None:
    cfg = get_model_config("heart_disease")
    breach = Observation(
        rule="skew",
        breached=True,
        subject="bmi",
        summary="bmi differs from the offline store on 40% of rows (limit 1%)",
        value=0.4,
        limit=0.01,
        version="3",
        details={"worst": [{"patient_id": 7, "served": 99.0, "offline": 27.0}]},
    )
    outcomes = [observe(cfg, [breach], actor="service:monitor", now=T0)[0] for _ in range(5)]
    assert [o.transition for o in outcomes] == [Transition.FIRED] + [Transition.SUPPRESSED] * 4
    clear = Observation(rule="skew", breached=False, subject="bmi", summary="bmi matches")
    unknown = Observation(rule="skew", breached=None, subject="age", summary="too few rows")
    done = observe(cfg, [clear, unknown], actor="service:monitor")
    assert [o.transition for o in done] == [Transition.RESOLVED, None]

    store = audit_store()
    fired = store.query(model="heart_disease", action=Action.ALERT_FIRED)
    resolved = store.query(model="heart_disease", action=Action.ALERT_RESOLVED)
    assert len(fired) == 1 and len(resolved) == 1
    assert fired[0].actor == "service:monitor" and fired[0].version == "3"
    details = fired[0].details
    assert (details["rule"], details["subject"], details["severity"]) == ("skew", "bmi", "warning")
    assert details["value"] == 0.4 and details["limit"] == 0.01
    assert details["link"] == console_link("heart_disease")
    assert details["details"]["worst"][0]["offline"] == 27.0
    assert resolved[0].details["breaches"] == 5 and resolved[0].details["suppressed"] == 4
    assert store.verify().ok


def test_disabled_rule_and_severity_floor() -> None:
    base = get_model_config("heart_disease")
    alerts = base.alerts.model_copy(
        update={
            "rules": base.alerts.rules.model_copy(
                update={"skew": base.alerts.rules.skew.model_copy(update={"enabled": False})}
            ),
            "min_severity": "critical",
        }
    )
    cfg = base.model_copy(update={"alerts": alerts})
    off = observe(cfg, [Observation(rule="skew", breached=True, summary="x")], actor="a")
    assert off[0].transition is None
    low = observe(cfg, [Observation(rule="feature_psi", breached=True, summary="psi")], actor="a")
    assert low[0].transition is Transition.FIRED
    [record] = audit_store().query(action=Action.ALERT_FIRED)
    assert record.details["notify"] is False  # warning < critical: recorded, not sent
    loud = observe(cfg, [Observation(rule="error_rate", breached=True, summary="5xx")], actor="a")
    assert audit_store().last(action=Action.ALERT_FIRED).details["notify"] is True
    assert loud[0].severity == "critical"


def test_config_defaults_are_the_seeds_and_bad_channels_are_refused() -> None:
    rules = AlertsConfig().rules
    assert rules.quality_drop.max_drop == 0.05 and rules.quality_drop.rollback
    assert rules.latency_p99.max_ratio == 2.0
    assert (rules.error_rate.max, rules.error_rate.rollback_above) == (0.10, 0.05)
    assert rules.feature_psi.max == 0.2 and rules.success_rate.min == 0.95
    ok = AlertsConfig.model_validate(
        {
            "channels": [
                {"type": "slack", "url_env": "SLACK_URL"},
                {"type": "email", "to": ["oncall@example.org"], "smtp_server": "smtp.example.org"},
            ]
        }
    )
    assert [c.type for c in ok.channels] == ["slack", "email"]
    with pytest.raises(ValidationError, match="listed twice"):
        AlertsConfig.model_validate(
            {"channels": [{"type": "slack", "url_env": "A"}, {"type": "slack", "url_env": "A"}]}
        )
    with pytest.raises(ValidationError, match="pagerduty"):
        AlertsConfig.model_validate({"channels": [{"type": "pagerduty", "url_env": "A"}]})
    with pytest.raises(ValidationError, match="max_drop"):
        AlertsConfig.model_validate({"rules": {"quality_drop": {"max_drop": -1}}})


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_fires_once_for_a_breach_and_resolves_once(rule: str) -> None:
    cfg = get_model_config("heart_disease")
    breach = Observation(rule=rule, breached=True, subject="s", summary=f"{rule} breached")
    clear = Observation(rule=rule, breached=False, subject="s", summary=f"{rule} clear")
    seen = [
        observe(cfg, [obs], actor="service:monitor")[0].transition
        for obs in (breach, breach, breach, clear, clear)
    ]
    assert seen == [
        Transition.FIRED,
        Transition.SUPPRESSED,
        Transition.SUPPRESSED,
        Transition.RESOLVED,
        Transition.OK,
    ]
    store = audit_store()
    assert [r.details["rule"] for r in store.query(action=Action.ALERT_FIRED)] == [rule]
    assert [r.details["rule"] for r in store.query(action=Action.ALERT_RESOLVED)] == [rule]


def test_a_rule_may_have_its_own_quiet_period() -> None:
    base = get_model_config("heart_disease")
    rules = base.alerts.rules.model_copy(
        update={"skew": base.alerts.rules.skew.model_copy(update={"quiet_period_minutes": 0})}
    )
    cfg = base.model_copy(update={"alerts": base.alerts.model_copy(update={"rules": rules})})
    breach = Observation(rule="skew", breached=True, summary="skew")
    other = Observation(rule="feature_psi", breached=True, summary="psi")
    seen = [
        [
            o.transition
            for o in observe(cfg, [breach, other], actor="a", now=T0 + timedelta(minutes=n))
        ]
        for n in range(3)
    ]
    assert [s[0] for s in seen] == [Transition.FIRED, Transition.REMINDED, Transition.REMINDED]
    assert [s[1] for s in seen] == [Transition.FIRED, Transition.SUPPRESSED, Transition.SUPPRESSED]

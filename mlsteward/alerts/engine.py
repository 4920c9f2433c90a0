"""From a rule's verdict to what people hear: incidents, audit records and Prefect events.

Every monitor (drift, skew, attribution, bias, serving SLOs, run success, the watch after a
promotion) hands its verdicts here as :class:`Observation`. Each verdict moves its incident in
the alert state (``state``): the first breach *fires* (an audit record ``alert_fired`` and the
event ``mlsteward.alert.fired``, which the model's automations turn into notifications),
breaches within the quiet period are only counted, a breach still there after the quiet period
sends one *reminder*, and the first clear check (or ``resolve_after`` of them) *resolves* it.
So a rule breached on every one of 100 checks is one notification, and a person hears when it
is over.

The event is best effort (no Prefect API reachable: the audit record still says it); the audit
record and the state change are not.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mlsteward.alerts.events import emit_alert
from mlsteward.alerts.observation import SEVERITY_ORDER, Observation
from mlsteward.alerts.state import AlertState, Transition
from mlsteward.audit import Action, AuditStore, audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.alerts import Rule

log = logging.getLogger("mlsteward.alerts")
CONSOLE_URL_VARIABLE = "MLSTEWARD_CONSOLE_URL"
_DEFAULT_CONSOLE = "http://127.0.0.1:8788"  # the local platform's API, which serves /ui
_ACTIONS = {
    Transition.FIRED: Action.ALERT_FIRED,
    Transition.REMINDED: Action.ALERT_REMINDED,
    Transition.RESOLVED: Action.ALERT_RESOLVED,
}


@dataclass(frozen=True)
class AlertOutcome:
    """What one observation did: the transition, and the event and record it produced."""

    observation: Observation
    transition: Transition | None
    severity: str
    incident: str | None = None
    event_id: str | None = None
    audit_seq: int | None = None

    @property
    def breached(self) -> bool:
        return bool(self.observation.breached)

    def to_dict(self) -> dict[str, Any]:
        obs = self.observation
        return {
            "rule": obs.rule,
            "subject": obs.subject,
            "breached": obs.breached,
            "summary": obs.summary,
            "value": obs.value,
            "limit": obs.limit,
            "severity": self.severity,
            "transition": self.transition.value if self.transition else None,
            "incident": self.incident,
            "event_id": self.event_id,
        }


def console_link(model: str) -> str:
    """Where a person sees the model: ``MLSTEWARD_CONSOLE_URL`` (the API's public address,
    behind a proxy), else ``MLSTEWARD_API_URL``, else the local platform's API."""
    base = (
        os.environ.get(CONSOLE_URL_VARIABLE)
        or os.environ.get("MLSTEWARD_API_URL")
        or _DEFAULT_CONSOLE
    )
    return f"{base.rstrip('/')}/ui/models/{model}"


def rule_config(cfg: ModelConfig, rule: str) -> Rule:
    """The model's configured rule by name (every observation's rule is one of them)."""
    found = getattr(cfg.alerts.rules, rule, None)
    if not isinstance(found, Rule):
        raise ValueError(f"unknown alert rule {rule!r}")
    return found


def observe(
    cfg: ModelConfig,
    observations: list[Observation],
    *,
    actor: str,
    audit: AuditStore | None = None,
    state: AlertState | None = None,
    now: datetime | None = None,
) -> list[AlertOutcome]:
    """Move each observation's incident; record and emit what a person must hear.

    Observations of a disabled rule and those that could not judge (``breached`` None) change
    nothing and are returned with no transition.
    """
    now = now or datetime.now(UTC)
    alerts = cfg.alerts
    own_state = state is None
    state = state or AlertState()
    audit = audit or audit_store()
    out: list[AlertOutcome] = []
    try:
        for obs in observations:
            rule = rule_config(cfg, obs.rule)
            severity = obs.severity or rule.severity
            if not rule.enabled or obs.breached is None:
                out.append(AlertOutcome(obs, None, severity))
                continue
            minutes = rule.quiet_period_minutes
            quiet = alerts.quiet_period_minutes if minutes is None else minutes
            incident = state.check(
                cfg.name,
                obs.rule,
                obs.subject,
                breached=obs.breached,
                quiet_period=timedelta(minutes=quiet),
                resolve_after=alerts.resolve_after,
                now=now,
            )
            outcome = AlertOutcome(obs, incident.transition, severity, incident.incident)
            action = _ACTIONS.get(incident.transition)
            if action is not None:
                extra = {
                    "breaches": incident.breaches,
                    "suppressed": incident.suppressed,
                    "fired_at": incident.fired_at,
                }
                outcome = _announce(cfg, obs, outcome, action, actor, audit, extra)
            out.append(outcome)
    finally:
        if own_state:
            state.close()
    return out


def _announce(
    cfg: ModelConfig,
    obs: Observation,
    outcome: AlertOutcome,
    action: Action,
    actor: str,
    audit: AuditStore,
    extra: dict[str, Any],
) -> AlertOutcome:
    """The audit record (always) and the Prefect event (when an API is reachable); ``notify``
    says whether the model's automation sends it (its severity against ``min_severity``)."""
    link = console_link(cfg.name)
    floor = SEVERITY_ORDER[cfg.alerts.min_severity]
    extra = {**extra, "notify": SEVERITY_ORDER[outcome.severity] >= floor}
    record = audit.append(
        action,
        model=cfg.name,
        version=obs.version,
        actor=actor,
        reason=obs.summary,
        details={
            "rule": obs.rule,
            "subject": obs.subject,
            "severity": outcome.severity,
            "incident": outcome.incident,
            **obs.numbers(),
            **extra,
            "link": link,
            "details": obs.details,
        },
    )
    kind = outcome.transition.value if outcome.transition else "fired"
    try:
        event_id = emit_alert(
            cfg.name,
            kind,
            obs,
            severity=outcome.severity,
            incident=outcome.incident,
            link=link,
            extra={**extra, "audit_seq": record.seq, "details": obs.details},
        )
    except Exception as exc:  # the audit record already holds the alert
        log.warning("could not emit the %s event for %s: %s", kind, cfg.name, exc)
        event_id = None
    log.debug("alert %s: %s %s: %s", kind, cfg.name, obs.rule, obs.summary)  # tasks log it
    return AlertOutcome(
        obs, outcome.transition, outcome.severity, outcome.incident, event_id, record.seq
    )


def announce_once(cfg: ModelConfig, obs: Observation, *, actor: str) -> AlertOutcome:
    """An alert that is an event, not a state: an automatic rollback happens once, so it is
    told once (fired, audited, notified) and opens no incident to resolve."""
    rule = rule_config(cfg, obs.rule)
    severity = obs.severity or rule.severity
    outcome = AlertOutcome(obs, Transition.FIRED, severity)
    extra = {
        "breaches": 1,
        "suppressed": 0,
        "fired_at": datetime.now(UTC).isoformat(),
    }
    return _announce(cfg, obs, outcome, Action.ALERT_FIRED, actor, audit_store(), extra)

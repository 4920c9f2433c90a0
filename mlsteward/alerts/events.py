"""Alerts as Prefect events: the one place that calls ``prefect.events``.

Event names: ``mlsteward.alert.fired``, ``mlsteward.alert.reminded`` and
``mlsteward.alert.resolved``. The resource is the model (``mlsteward.model.<name>``, as the drift
event's) with the rule, subject, severity and version as resource labels, so an automation can
match on any of them; the payload carries the numbers, the summary and a link to the console.
"""

from __future__ import annotations

from typing import Any

from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL

from mlsteward.alerts.observation import Observation

PREFIX = "mlsteward.alert"
EVENTS = tuple(f"{PREFIX}.{kind}" for kind in ("fired", "reminded", "resolved"))


def model_resource(model: str) -> str:
    return f"mlsteward.model.{model}"


def emit_alert(
    model: str,
    kind: str,
    obs: Observation,
    *,
    severity: str,
    incident: str | None,
    link: str,
    extra: dict[str, Any],
) -> str | None:
    """Emit ``mlsteward.alert.<kind>``; the event id, or None outside Prefect (the audit record
    still holds the alert).

    Outside a flow run and without ``PREFECT_API_URL`` there is no server whose automations
    could act on it, and emitting would start a temporary one (10-15 s) to receive it.
    """
    if (
        not PREFECT_API_URL.value()
        and FlowRunContext.get() is None
        and TaskRunContext.get() is None
    ):
        return None
    event = emit_event(
        event=f"{PREFIX}.{kind}",
        resource={
            "prefect.resource.id": model_resource(model),
            "prefect.resource.name": model,
            "mlsteward.rule": obs.rule,
            "mlsteward.subject": obs.subject,
            "mlsteward.severity": severity,
            "mlsteward.version": obs.version or "",
        },
        payload={
            "model": model,
            "version": obs.version,
            "rule": obs.rule,
            "subject": obs.subject,
            "severity": severity,
            "summary": obs.summary,
            "value": obs.value,
            "limit": obs.limit,
            "incident": incident,
            "link": link,
            **extra,
        },
    )
    return str(event.id) if event else None

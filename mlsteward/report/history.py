"""Drift checks and canary rollouts, put together from a model's audit events.

Both read the events of several records that belong together (a drift check and the retrain
claim that answered it; the start, steps and end of one rollout), so they are assembled here
rather than record by record.
"""

from __future__ import annotations

from mlsteward.report.actions import (
    DRIFT_ACTIONS,
    RETRAIN_ACTIONS,
    ROLLOUT_ABORTED,
    ROLLOUT_ACTIONS,
    ROLLOUT_ROLLED_BACK,
    ROLLOUT_STARTED,
    ROLLOUT_STEP_PASSED,
)
from mlsteward.report.model import AuditEvent, DriftCheck, RolloutRun, to_float, to_int


def drift_history(events: list[AuditEvent]) -> list[DriftCheck]:
    """The drift checks among ``events``, newest first, each paired with its retrain claim.

    The claim is recorded right after its check by the same drift run, but two runs of one
    model can interleave (check A, check B, claim A, claim B). So a claim goes to the check
    whose Evidently report it names, and only failing that to the latest earlier check that
    asked for a retrain and is still unanswered. A claim with no such check is left out.
    """
    checks: list[DriftCheck] = []
    by_report: dict[str, DriftCheck] = {}
    waiting: list[DriftCheck] = []  # checks that may still get a claim, oldest first
    for e in sorted(events, key=lambda e: e.seq):
        if e.action in DRIFT_ACTIONS:
            check = DriftCheck.from_event(e)
            checks.append(check)
            if check.report:
                by_report[check.report] = check
            if check.retrain is not False:
                waiting.append(check)
        elif e.action in RETRAIN_ACTIONS:
            named = e.details.get("report")
            match = by_report.pop(str(named), None) if named else None
            while match is None and waiting:
                candidate = waiting.pop()
                if candidate.outcome is None:
                    match = candidate
            if match is not None:
                match.outcome = e
                if match.report:
                    by_report.pop(match.report, None)
    checks.reverse()
    return checks


def rollout_history(events: list[AuditEvent]) -> list[RolloutRun]:
    """The canary rollouts among ``events``, newest first."""
    runs: dict[str, RolloutRun] = {}
    for e in sorted(events, key=lambda e: e.seq):
        if e.action not in ROLLOUT_ACTIONS:
            continue
        d = e.details
        rid = d.get("rollout_id")
        if not rid:
            continue
        run = runs.setdefault(str(rid), RolloutRun(rollout_id=str(rid), version=e.version))
        run.version = run.version or e.version
        if d.get("champion") is not None:
            run.champion = str(d["champion"])
        step = to_int(d.get("step"))
        if e.action == ROLLOUT_STARTED:
            run.started_at, run.actor = e.ts, e.actor
            steps = (d.get("config") or {}).get("rollout", {}).get("steps")
            if isinstance(steps, list):
                run.planned_steps = [float(x) for x in steps if to_float(x) is not None]
            continue
        if e.action == ROLLOUT_STEP_PASSED:
            if step is not None:
                run.steps_passed.append(step)
                run.steps_reached = max(run.steps_reached, step)
            continue
        # an end record
        run.ended_at, run.reason = e.ts, e.reason
        run.actor = run.actor or e.actor
        if e.action == ROLLOUT_ROLLED_BACK:
            run.decision = "rolled_back"
            breaches = d.get("breaches")
            run.breaches = [b for b in breaches if isinstance(b, dict)] if breaches else []
        elif e.action == ROLLOUT_ABORTED:
            run.decision = "aborted"
        else:
            run.decision = str(d.get("decision") or "completed")
            if run.planned_steps:
                step = len(run.planned_steps)
        run.steps_reached = max(run.steps_reached, step or 0)
    return list(runs.values())[::-1]  # first records in seq order, so newest first

"""The card's rollouts table: every canary rollout (newest first), how far it got, how it
ended and which guardrail a rolled-back one breached."""

from __future__ import annotations

from typing import Any

from mlsteward.report.format import MISSING, fmt_num, fmt_ts
from mlsteward.report.model import MAX_ROLLOUT_ROWS, ModelCard, RolloutRun
from mlsteward.report.table import Cell, Table

ROLLOUT_DECISIONS = {
    "promoted": ("promoted", "ok"),
    "rejected": ("all steps passed; promotion rejected", "warn"),
    "rolled_back": ("rolled back", "bad"),
    "aborted": ("aborted", "warn"),
    "running": ("running / unfinished", "info"),
}


def _breach_text(r: RolloutRun) -> str:
    if not r.breaches:
        return "—" if r.decision != "rolled_back" else r.reason or MISSING
    return "; ".join(
        f"{b.get('check', '?')}: {b.get('message') or _numbers(b.get('observed'))}"
        for b in r.breaches
    )


def _numbers(observed: Any) -> str:
    if not isinstance(observed, dict):
        return MISSING
    return ", ".join(f"{k} {fmt_num(v)}" for k, v in observed.items() if v is not None)


def _steps_text(r: RolloutRun) -> str:
    planned = len(r.planned_steps)
    if not planned:
        return str(r.steps_reached) if r.steps_reached else MISSING
    at = r.planned_steps[r.steps_reached - 1] if 0 < r.steps_reached <= planned else None
    share = f" ({at:.0%})" if at is not None else ""
    return f"{r.steps_reached} of {planned}{share}"


def rollouts_table(card: ModelCard) -> Table | None:
    """The newest :data:`MAX_ROLLOUT_ROWS` canary rollouts, or None when none has run."""
    if not card.rollouts:
        return None
    shown = card.rollouts[:MAX_ROLLOUT_ROWS]
    rows = []
    for r in shown:
        label, tone = ROLLOUT_DECISIONS.get(r.decision, (r.decision, ""))
        rows.append(
            [
                Cell(fmt_ts(r.started_at or r.ended_at)),
                Cell(f"v{r.version}" if r.version else MISSING, "key"),
                Cell(f"v{r.champion}" if r.champion else MISSING),
                Cell(_steps_text(r), "num"),
                Cell(label, tone),
                Cell(_breach_text(r), "bad" if r.breaches else "muted"),
                Cell(r.actor or MISSING, "muted"),
                Cell(r.rollout_id, "code"),
            ]
        )
    note = (
        "Newest first. Steps reached is the step a rollout was at when it ended; a breach "
        "rolls back at once (all traffic to the champion, the version rejected). Every step's "
        "numbers are in the audit trail (mlsteward audit log)."
    )
    omitted = len(card.rollouts) - len(shown)
    if omitted:
        note += f" Showing the latest {len(shown)} of {len(card.rollouts)} rollouts."
    return Table(
        ["when", "version", "against", "steps reached", "decision", "breached guardrail",
         "by", "rollout id"],
        rows,
        note=note,
    )  # fmt: skip

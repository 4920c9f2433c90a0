"""The view layer both renderers use: the card's tables, timeline and version sections.

Each function turns part of a :class:`~mlsteward.report.model.ModelCard` into
:class:`~mlsteward.report.table.Table` objects (or timeline items) whose text is final: the
HTML template and the markdown renderer only lay them out, so the two outputs show the same
numbers, formatted the same way. The validation report's tables live in
:mod:`~mlsteward.report.view_validation`, the drift and rollout tables in
:mod:`~mlsteward.report.view_drift` and :mod:`~mlsteward.report.view_rollouts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlsteward.config.sections.training import LOG_LINK_OBJECTIVES
from mlsteward.report.actions import DRIFT_ACTIONS, EVENT_LABELS, EVENT_TONE, PROMOTED, ROLLBACK
from mlsteward.report.format import MISSING, fmt_num, fmt_ts, fmt_value, short
from mlsteward.report.model import (
    AuditEvent,
    AuditStatus,
    DriftCheck,
    ModelCard,
    VersionSection,
    version_key,
)
from mlsteward.report.table import Cell, Table
from mlsteward.report.view_drift import columns_text
from mlsteward.report.view_metrics import direction, section_metrics_table
from mlsteward.report.view_validation import ReportView, report_view


@dataclass
class TimelineItem:
    """One line of the model's timeline, its text final (the renderers only lay it out)."""

    ts: str
    title: str
    tone: str
    actor: str
    reason: str
    extra: str = ""


@dataclass
class SectionView:
    """Everything one version's section shows, as tables."""

    section: VersionSection
    anchor: str
    title: str
    facts: Table
    metrics: Table | None
    report: ReportView | None
    lineage: Table
    history: Table


def summary_table(card: ModelCard) -> Table:
    """Who owns the model, who serves, what changed and whether the audit chain holds."""
    champ, chall = card.champion, card.challenger
    rows: list[list[Cell]] = [
        [Cell("Model", "key"), Cell(card.model, "code")],
        [Cell("Owner", "key"), Cell(card.owner or MISSING)],
        [Cell("Description", "key"), Cell(card.description or MISSING)],
    ]
    if champ:
        when = fmt_ts(champ.get("promoted_at"))
        rows.append([Cell("Champion", "key"), Cell(f"v{champ['version']} (promoted {when})")])
    else:
        rows.append([Cell("Champion", "key"), Cell("none: no version serves yet", "warn")])
    if chall:
        state = chall.get("validation_status") or "not validated"
        rows.append([Cell("Challenger", "key"), Cell(f"v{chall['version']} (validation {state})")])
    else:
        rows.append([Cell("Challenger", "key"), Cell("none", "muted")])
    rows.append(
        [
            Cell("Previous champion", "key"),
            Cell(f"v{card.previous_champion}" if card.previous_champion else "none", ""),
        ]
    )
    rows.append([Cell("Registered versions", "key"), Cell(fmt_num(len(card.versions)), "")])
    if card.is_regression:  # a classification card has always implied its task
        rows.append([Cell("Task", "key"), Cell(task_text(card.task, card.objective))])
        p = card.primary_metric
        rows.append([Cell("Primary metric", "key"), Cell(f"{p} ({direction(p)} is better)")])
    else:
        rows.append([Cell("Primary metric", "key"), Cell(card.primary_metric, "code")])
    rows.append(
        [
            Cell("Champion changes", "key"),
            Cell(
                f"{sum(h['action'] == PROMOTED for h in card.champion_history)} promotion(s), "
                f"{sum(h['action'] == ROLLBACK for h in card.champion_history)} rollback(s)"
            ),
        ]
    )
    rows.append([Cell("Audit chain", "key"), audit_cell(card.audit)])
    rows.append([Cell("Generated", "key"), Cell(fmt_ts(card.generated_at))])
    return Table(["", ""], rows, kind="kv")


def task_text(task: str | None, objective: str | None) -> str:
    """``regression, objective count:poisson``; a log-link objective says its predictions are
    counts or amounts above 0, so nobody reads a deviance as a squared error."""
    text = (task or "binary_classification").replace("_", " ")
    if objective:
        text += f", objective {objective}"
        if objective in LOG_LINK_OBJECTIVES:
            text += " (log link: predictions above 0)"
    return text


def audit_cell(a: AuditStatus) -> Cell:
    """The chain check in a few words: intact, BROKEN (and why) or not verified (and why)."""
    if a.ok is None:
        return Cell(f"not verified: {a.problem or 'unknown reason'}", "warn")
    if a.ok:
        return Cell(f"intact ({fmt_num(a.records)} records)", "ok")
    return Cell(f"BROKEN: {a.problem or 'unknown problem'}", "bad")


def versions_table(card: ModelCard) -> Table:
    """Every registered version, newest first, the champion's row highlighted."""
    p = card.primary_metric
    rows, styles = [], []
    for v in sorted(card.versions, key=lambda d: version_key(str(d["version"])), reverse=True):
        ver = str(v["version"])
        role = (
            "champion"
            if ver == card.champion_version
            else "challenger"
            if ver == card.challenger_version
            else ""
        )
        status = v.get("validation_status")
        rows.append(
            [
                Cell(f"v{ver}", "key"),
                Cell(role or "—", "" if role else "muted"),
                Cell(v.get("lifecycle") or "candidate"),
                Cell(status or "not validated", _tone(status)),
                Cell(fmt_num((v.get("metrics") or {}).get(p)), "num"),
                Cell(fmt_ts(v.get("created_at"))),
                Cell(short(v.get("artifact_sha256")), "code"),
            ]
        )
        styles.append("hl" if role == "champion" else "")
    return Table(
        ["version", "alias", "lifecycle", "validation", p, "registered", "artifact SHA-256"],
        rows,
        styles,
    )


def _tone(status: str | None) -> str:
    return {"passed": "ok", "failed": "bad"}.get(status or "", "muted")


def lineage_table(section: VersionSection) -> Table:
    """What the version was built from, enough to rebuild and compare it."""
    lin = section.lineage
    start, end = lin.get("time_range") or (None, None)
    dirty = lin.get("git_dirty")
    commit = lin.get("git_commit") or MISSING
    commit_text = commit + (" (uncommitted changes)" if dirty == "true" else "")
    repro = lin.get("reproduction")
    repro_tone = "" if not repro else ("ok" if repro.startswith("identical") else "bad")
    rows = [
        ("Data digest", Cell(lin.get("data_digest") or MISSING, "code")),
        ("Snapshot", Cell(fmt_value(lin.get("snapshot")), "code")),
        ("Data source", Cell(fmt_value(lin.get("data_source")), "code")),
        ("Feature service", Cell(fmt_value(lin.get("feature_service")), "code")),
        ("Features", Cell(fmt_value(lin.get("features")))),
        ("Training rows", Cell(fmt_num(lin.get("training_rows")))),
        ("Split sizes", Cell(fmt_value(lin.get("split_sizes")))),
        ("Time range", Cell(f"{fmt_ts(start)} → {fmt_ts(end)}" if start or end else MISSING)),
        ("Hyperparameters", Cell(fmt_value(lin.get("params")), "code")),
        (
            "Seed / max evals",
            Cell(f"{fmt_value(lin.get('seed'))} / {fmt_value(lin.get('max_evals'))}"),
        ),
        ("Training execution", Cell(execution_text(lin.get("execution")))),
        ("Git commit", Cell(commit_text, "code" + (" warn" if dirty == "true" else ""))),
        ("uv.lock SHA-256", Cell(lin.get("lock_sha256") or MISSING, "code")),
        ("Config SHA-256", Cell(lin.get("config_sha256") or MISSING, "code")),
        ("Libraries", Cell(fmt_value(lin.get("libraries")), "code")),
        ("Artifact SHA-256", Cell(lin.get("artifact_sha256") or MISSING, "code")),
        ("Training-set digest", Cell(lin.get("training_set_digest") or MISSING, "code")),
        ("Recipe SHA-256", Cell(lin.get("recipe_sha256") or MISSING, "code")),
        ("Last reproduction", Cell(repro or "never", repro_tone)),
        ("MLflow run", Cell(section.run_id or MISSING, "code")),
    ]
    return Table(["", ""], [[Cell(k, "key"), c] for k, c in rows], kind="kv")


def execution_text(execution: Any) -> str:
    """Where the search and the refit ran, in words; the parts that change the result (batch
    size, and for xgboost.dask the worker count and chunking) are the ones named."""
    if not isinstance(execution, dict):
        return MISSING
    runner = execution.get("runner", "?")
    text = f"{runner}, TPE batches of {execution.get('batch_size', 1)}"
    dist = execution.get("distributed")
    if isinstance(dist, dict):
        text += (
            f"; {dist.get('engine')} on {dist.get('workers')} worker slots, "
            f"{dist.get('partitions')} partitions from chunks of {fmt_num(dist.get('chunk_rows'))} "
            "rows"
        )
    return text


def history_table(events: list[AuditEvent]) -> Table:
    """A version's audit events, oldest first, each with its audit sequence number."""
    rows, styles = [], []
    for e in events:
        rows.append(
            [
                Cell(fmt_ts(e.ts)),
                Cell(EVENT_LABELS.get(e.action, e.action), EVENT_TONE.get(e.action, "")),
                Cell(e.actor or MISSING),
                Cell(e.reason or MISSING),
                Cell(f"#{e.seq}", "num muted"),
            ]
        )
        styles.append("")
    return Table(["when", "event", "who", "why", "audit"], rows, styles)


def _timeline_title(e: AuditEvent) -> str:
    label = EVENT_LABELS.get(e.action, e.action)
    if e.action in (PROMOTED, ROLLBACK):
        before = e.details.get("from")
        after = e.details.get("to") or e.version
        return f"{label}: v{before} → v{after}" if before else f"{label}: v{after}"
    if e.action in DRIFT_ACTIONS:  # the version is the champion measured, not a new one
        return f"{label} (champion v{e.version})" if e.version else label
    return f"{label}: v{e.version}" if e.version else label


def _timeline_extra(e: AuditEvent) -> str:
    d = e.details
    if e.action == PROMOTED and isinstance(d.get("approval"), dict):
        a = d["approval"]
        return f"approved by {a.get('approver', MISSING)} ({a.get('channel', 'unknown channel')})"
    if e.action == "approval_requested" and d.get("timeout_seconds"):
        return f"timeout {fmt_num(d['timeout_seconds'])} s"
    if e.action == "integrity_failed" and d.get("expected_sha256"):
        return f"expected SHA-256 {short(d['expected_sha256'], 16)}"
    if e.action in DRIFT_ACTIONS:
        check = DriftCheck.from_event(e)
        return f"drifted: {columns_text(check)}, share {fmt_num(check.drift_share)}"
    return ""


def timeline_items(card: ModelCard) -> list[TimelineItem]:
    """The card's timeline: every change of who serves, and why."""
    return [
        TimelineItem(
            ts=fmt_ts(e.ts),
            title=_timeline_title(e),
            tone=EVENT_TONE.get(e.action, "info"),
            actor=e.actor or MISSING,
            reason=e.reason,
            extra=_timeline_extra(e),
        )
        for e in card.timeline
    ]


def audit_table(a: AuditStatus) -> Table:
    """The chain check's result, and where the chain breaks when it does."""
    rows = [
        [Cell("Status", "key"), audit_cell(a)],
        [Cell("Records checked", "key"), Cell(fmt_num(a.records))],
        [Cell("Head hash", "key"), Cell(a.head_hash or MISSING, "code")],
    ]
    if a.first_bad_seq is not None:
        rows.append([Cell("First bad record", "key"), Cell(f"#{a.first_bad_seq}", "bad")])
    if a.problem and a.ok is not None:
        rows.append([Cell("Problem", "key"), Cell(a.problem, "bad")])
    return Table(["", ""], rows, kind="kv")


def section_view(s: VersionSection) -> SectionView:
    """One version's section: facts, metrics, validation report, lineage and history."""
    facts = [
        ("Lifecycle", Cell(s.lifecycle)),
        ("Validation", Cell(s.validation_status or "not validated", _tone(s.validation_status))),
        ("Registered", Cell(fmt_ts(s.created_at))),
    ]
    if s.promoted_at:
        by = f" by {s.promoted_by}" if s.promoted_by else ""
        facts.append(("Promoted", Cell(fmt_ts(s.promoted_at) + by)))
    if s.retired_at:
        facts.append(("Retired", Cell(fmt_ts(s.retired_at))))
    if s.is_regression:
        facts.append(("Task", Cell(task_text(s.task, s.objective))))
    return SectionView(
        section=s,
        anchor=f"v{re.sub(r'[^A-Za-z0-9_-]', '-', s.version)}",
        title=f"Version {s.version}",
        facts=Table(["", ""], [[Cell(k, "key"), c] for k, c in facts], kind="kv"),
        metrics=section_metrics_table(s),
        report=report_view(s.validation, s.measured_only) if s.validation else None,
        lineage=lineage_table(s),
        history=history_table(s.history),
    )

"""The card's drift table: every drift check (newest first), what drifted, what the drift
policy decided and whether the retrain it asked for was triggered or suppressed."""

from __future__ import annotations

from mlsteward.monitoring.drift_sampling import sampling_lines
from mlsteward.report.format import MISSING, fmt_num, fmt_ts
from mlsteward.report.model import MAX_DRIFT_ROWS, DriftCheck, ModelCard
from mlsteward.report.table import Cell, Table


def columns_text(c: DriftCheck) -> str:
    """The drifted columns, ``none``, or n/a when the record does not say."""
    if c.drifted_columns is None:
        return MISSING
    return ", ".join(c.drifted_columns) or "none"


def _prediction_cell(drifted: bool | None) -> Cell:
    if drifted is None:
        return Cell(MISSING, "muted")
    return Cell("drifted", "warn") if drifted else Cell("no", "muted")


def _decision_cell(c: DriftCheck) -> Cell:
    if c.retrain is None:  # a record without the decision: its reason is all there is
        return Cell(c.reason or MISSING, "muted")
    if not c.retrain:
        return Cell("no retrain", "muted")
    return Cell(("retrain: " + "; ".join(c.reasons)) if c.reasons else "retrain", "warn")


def _outcome_cell(c: DriftCheck) -> Cell:
    if c.outcome is None:
        return Cell("—", "muted")
    if c.outcome_label == "triggered":
        return Cell("triggered", "info")
    return Cell(f"suppressed: {c.outcome.reason or 'no reason recorded'}", "warn")


def _report_cell(c: DriftCheck) -> Cell:
    """The report's path, and when the check compared samples, how many rows of how many (so
    the card never passes a sample's statistics off as the whole window's)."""
    text = c.report or MISSING
    lines = sampling_lines(c.sampling) if c.sampling else []
    return Cell(" · ".join([text, *(f"sampled {line}" for line in lines)]), "code")


def drift_table(card: ModelCard) -> Table | None:
    """The newest :data:`MAX_DRIFT_ROWS` drift checks, or None when none has run."""
    if not card.drift:
        return None
    shown = card.drift[:MAX_DRIFT_ROWS]
    rows = [
        [
            Cell(fmt_ts(c.ts)),
            Cell(f"v{c.version}" if c.version else MISSING, "key"),
            Cell(columns_text(c), "muted" if not c.drifted_columns else ""),
            Cell(fmt_num(c.drift_share), "num"),
            _prediction_cell(c.prediction_drift),
            _decision_cell(c),
            _outcome_cell(c),
            _report_cell(c),
        ]
        for c in shown
    ]
    note = (
        "Newest first. Each Evidently report is an HTML file written where the drift run ran "
        "and logged to the champion's MLflow run under drift/v<version>."
    )
    omitted = len(card.drift) - len(shown)
    if omitted:
        note += (
            f" Showing the latest {len(shown)} of {len(card.drift)} checks; "
            f"{omitted} older check(s) not shown (mlsteward audit log lists them)."
        )
    return Table(
        [
            "when",
            "champion",
            "drifted columns",
            "drift share",
            "prediction drift",
            "decision",
            "retrain",
            "Evidently report",
        ],
        rows,
        note=note,
    )

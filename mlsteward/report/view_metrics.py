"""The card's metric tables: champion vs challenger, and one version's holdout metrics.

Which way a metric is better depends on the metric, and a regression model reports metrics of
three kinds: errors (lower is better), R² (higher is better) and the calibration ratio (mean
prediction over mean outcome, best at 1 from either side). Descriptive numbers (rows, the
means, a classifier's cut-off) have no better side. Every colour and note here follows that,
so a challenger that over-predicts by 20% is never shown as an improvement on calibration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlsteward.config.sections.governance import (
    EVALUATION_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    UNRANKED_METRICS,
)
from mlsteward.report.format import MINUS, MISSING, fmt_delta, fmt_num
from mlsteward.report.model import ModelCard, VersionSection
from mlsteward.report.table import Cell, Table

LOWER, HIGHER, CLOSER_TO_1, NOT_RANKED = "lower", "higher", "closer to 1", "not ranked"

# The calibration ratio's two means follow it, so the ratio can be read off them.
_ORDER = (*REGRESSION_METRICS, "mean_prediction", "mean_outcome")
_KNOWN = (*(m for m in EVALUATION_METRICS if m not in _ORDER), *_ORDER)


def direction(metric: str) -> str:
    """Which side of a metric is better: ``lower``, ``higher``, ``closer to 1`` (the
    calibration ratio) or ``not ranked`` (descriptive numbers such as rows or a mean)."""
    if metric in LOWER_IS_BETTER:
        return LOWER
    if metric in UNRANKED_METRICS:
        return CLOSER_TO_1
    if metric in EVALUATION_METRICS:
        return HIGHER
    return NOT_RANKED


def ordered_metrics(names: Iterable[str]) -> list[str]:
    """Known metrics in their fixed order (classification, then regression with the two means
    after the calibration ratio), then anything else alphabetically."""
    present = set(names)
    known = [m for m in _KNOWN if m in present]
    return known + sorted(present - set(known))


def _improved(metric: str, challenger: float, champion: float) -> bool | None:
    """Whether the challenger's value is better; None when neither side is (equal, or not
    ranked)."""
    way = direction(metric)
    if way == NOT_RANKED or challenger == champion:
        return None
    if way == CLOSER_TO_1:
        a, b = abs(challenger - 1), abs(champion - 1)
        return None if a == b else a < b
    return (challenger < champion) if way == LOWER else (challenger > champion)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def direction_note(names: Iterable[str]) -> str:
    """The note under a metrics table: which way each metric shown is better, and which
    numbers are only descriptive. Every claim in it holds for the metrics it names."""
    shown = ordered_metrics(names)
    by_way: dict[str, list[str]] = {LOWER: [], HIGHER: [], CLOSER_TO_1: [], NOT_RANKED: []}
    for m in shown:
        by_way[direction(m)].append(m)
    parts, last = [], ""
    if by_way[LOWER]:
        parts.append(f"{_and(by_way[LOWER])}: lower is better")
    higher = by_way[HIGHER]
    if len(higher) > 2:
        last = "every other metric: higher is better"
    elif higher:
        parts.append(f"{_and(higher)}: higher is better")
    if by_way[CLOSER_TO_1]:
        parts += [
            f"{m} (mean prediction / mean outcome): closer to 1 is better"
            if m == "calibration_ratio"
            else f"{m}: closer to 1 is better"
            for m in by_way[CLOSER_TO_1]
        ]
    if by_way[NOT_RANKED]:
        parts.append(f"{_and(by_way[NOT_RANKED])}: descriptive, not ranked")
    if last and not parts:
        last = "every metric: higher is better"
    return "; ".join([*parts, *([last] if last else [])]) + "." if parts or last else ""


def fmt_metric(metric: str, value: Any) -> str:
    """A metric's value; the row count, stored as a float tag, as the whole number it is."""
    if metric == "rows" and isinstance(value, float) and value.is_integer():
        return fmt_num(int(value))
    return fmt_num(value)


def _delta_cell(metric: str, challenger: Any, champion: Any) -> Cell:
    if challenger is None or champion is None:
        return Cell(MISSING, "num muted")
    improved = _improved(metric, challenger, champion)
    tone = "muted" if improved is None else ("ok" if improved else "bad")
    return Cell(fmt_delta(challenger - champion), f"num {tone}")


def metrics_table(card: ModelCard) -> Table | None:
    """Champion vs challenger on every holdout metric either reports.

    A regression card adds a ``better`` column (lower, higher, closer to 1 or not ranked),
    because its metrics point three ways; a classification card keeps its note alone."""
    sides = [
        (f"{role} v{d['version']}", d.get("metrics") or {})
        for role, d in (("champion", card.champion), ("challenger", card.challenger))
        if d is not None
    ]
    if not sides:
        return None
    both = len(sides) == 2
    names = ordered_metrics(k for _, m in sides for k in m)
    rows, styles = [], []
    for m in names:
        row = [Cell(m + (" (primary)" if m == card.primary_metric else ""), "key")]
        if card.is_regression:
            row.append(Cell(direction(m), "muted"))
        values = [m_.get(m) for _, m_ in sides]
        row += [Cell(fmt_metric(m, v), "num") for v in values]
        if both:
            row.append(_delta_cell(m, values[1], values[0]))
        rows.append(row)
        styles.append("hl" if m == card.primary_metric else "")
    header = [
        "metric",
        *(["better"] if card.is_regression else []),
        *[name for name, _ in sides],
        *([f"Δ challenger {MINUS} champion"] if both else []),
    ]
    return Table(header, rows, styles, note=direction_note(names))


def section_metrics_table(section: VersionSection) -> Table | None:
    """A version's holdout metrics in one row, or None when it has none."""
    if not section.metrics:
        return None
    names = ordered_metrics(section.metrics)
    return Table(
        names,
        [[Cell(fmt_metric(m, section.metrics[m]), "num") for m in names]],
        note=direction_note(names) if section.is_regression else "",
    )

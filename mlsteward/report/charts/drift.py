"""Drift history: each column's drift score at every check, against its threshold.

Drawn from the audit trail's drift records (``drift_checked`` / ``drift_detected``; see
``tasks.monitoring.record_drift``), which carry every feature's score and, since they were
recorded, its threshold. For an older record without thresholds the configured ones stand in
(``cfg.drift``), or the line is left out and the picture says so.

Evidently's scores run both ways: a distance drifts at or above its threshold, a p-value below
it. Which way a column runs is read from the records themselves (a drifted check on the far
side of the line tells), and the side that means drift is shaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlsteward.config.models import ModelConfig
from mlsteward.report.charts.cache import memoised
from mlsteward.report.charts.svg import BLUE, LIMIT, Picture, draw, heading, number, short
from mlsteward.report.model import AuditEvent, DriftCheck

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PANELS = 6
"""Columns drawn (those that drifted, then those closest to their threshold)."""
MAX_CHECKS = 60
"""Newest checks drawn."""
COLUMNS_PER_ROW = 3


@dataclass
class _Series:
    """One column across the checks."""

    column: str
    times: list[datetime] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    drifted: list[bool] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)

    @property
    def threshold(self) -> float | None:
        """The newest threshold (a config change may move it; the line shows today's)."""
        known = [t for t in self.thresholds if t is not None]
        return known[-1] if known else None

    @property
    def pvalue(self) -> bool:
        """Whether drift means a score *below* the threshold (a p-value test)."""
        votes = 0
        for s, t, d in zip(self.scores, self.thresholds, self.drifted, strict=True):
            if t is None or s == t:
                continue
            votes += 1 if (s < t) == d else -1
        return votes > 0

    def closeness(self) -> float:
        """How near the column came to drifting: score over threshold (or the inverse for a
        p-value), the raw score without a threshold."""
        best = 0.0
        for s, t in zip(self.scores, self.thresholds, strict=True):
            if t is None or t <= 0:
                best = max(best, s)
            elif self.pvalue:
                best = max(best, t / s if s > 0 else math.inf)
            else:
                best = max(best, s / t)
        return best


def as_check(record: Any) -> DriftCheck | None:
    """A drift check from what a caller holds: a :class:`DriftCheck`, an audit record or
    event, or a dict of either shape; None for anything else."""
    if isinstance(record, DriftCheck):
        return record
    if isinstance(record, AuditEvent):
        return DriftCheck.from_event(record)
    if isinstance(record, dict) and "column_scores" in record:
        return DriftCheck.from_dict(record)
    try:
        return DriftCheck.from_event(AuditEvent.from_record(record))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _when(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return None


def _configured(cfg: ModelConfig | None, column: str) -> float | None:
    if cfg is None:
        return None
    override = cfg.drift.columns.get(column)
    if override is not None and override.threshold is not None:
        return float(override.threshold)
    return None if cfg.drift.threshold is None else float(cfg.drift.threshold)


def _series(checks: list[DriftCheck], cfg: ModelConfig | None) -> dict[str, _Series]:
    out: dict[str, _Series] = {}
    for c in checks:
        when = _when(c.ts)
        if when is None:
            continue
        drifted = set(c.drifted_columns or [])
        for column, raw in c.scores.items():
            score = number(raw)
            if score is None:
                continue
            s = out.setdefault(column, _Series(column))
            s.times.append(when)
            s.scores.append(score)
            s.drifted.append(column in drifted)
            recorded = number(c.thresholds.get(column))
            s.thresholds.append(recorded if recorded is not None else _configured(cfg, column))
    return out


@memoised
def drift_history_picture(
    records: Iterable[Any], cfg: ModelConfig | None = None, subject: str = "", salt: str = ""
) -> Picture | None:
    """Small multiples of each column's drift score over the checks, with its threshold.

    Args:
        records: Drift checks in any order: :class:`DriftCheck`, audit records or events of
            ``drift_checked`` / ``drift_detected``, or their dicts; others are skipped.
        cfg: The model's config, whose thresholds stand in for records that carry none.
        subject: Named in the title, e.g. the model.
        salt: Makes the SVG's ids unique on a page with other drift pictures.

    Returns:
        The picture, or None when no record carries per-column scores.
    """
    checks = [c for r in records if (c := as_check(r)) is not None and c.scores]
    checks.sort(key=lambda c: (c.ts, c.seq))
    checks = checks[-MAX_CHECKS:]
    series = _series(checks, cfg)
    if not series:
        return None
    ranked = sorted(series.values(), key=lambda s: (-sum(s.drifted), -s.closeness(), s.column))
    shown, hidden = ranked[:MAX_PANELS], ranked[MAX_PANELS:]
    rows = math.ceil(len(shown) / COLUMNS_PER_ROW)
    cols = min(COLUMNS_PER_ROW, len(shown))
    title = "Drift by column" + (f": {subject}" if subject else "")
    first, last = checks[0].ts[:10], checks[-1].ts[:10]
    span = first if first == last else f"{first} to {last}"
    no_line = [s.column for s in shown if s.threshold is None]

    def paint(fig: Figure) -> None:
        # start-up time: matplotlib is imported only while drawing (see svg.draw)
        import matplotlib.dates as mdates
        from matplotlib.lines import Line2D

        axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
        for i, ax in enumerate(axes.flat):
            if i >= len(shown):
                ax.set_visible(False)
                continue
            _panel(ax, shown[i])
            if i % cols == 0:
                ax.set_ylabel("Drift score")
            if i // cols == rows - 1 and i % cols == (cols - 1) // 2:
                ax.set_xlabel(f"Check time (UTC), {span}")
            locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
            formatter = mdates.ConciseDateFormatter(locator, show_offset=False)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(formatter)
        heading(fig, title)
        handles = [
            Line2D([], [], color=BLUE, marker="o", ms=3, lw=1.2, label="score at each check"),
            Line2D([], [], color=LIMIT, marker="X", ls="", ms=7, label="drifted"),
            Line2D([], [], color=LIMIT, ls="--", lw=1.4, label="threshold (shaded side: drift)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)

    alt = (
        f"Drift scores of {len(shown)} columns at {len(checks)} drift checks, each in its own "
        "panel with its threshold as a dashed line: " + "; ".join(_describe(s) for s in shown) + "."
    )
    if hidden:
        alt += f" Not drawn (further from drifting): {', '.join(s.column for s in hidden)}."
    if no_line:
        alt += f" No threshold recorded for {', '.join(no_line)}."
    return draw("drift-history", title, alt, paint, height=0.9 + 1.75 * rows, salt=salt)


def _few_ticks() -> Any:
    # start-up time: matplotlib is imported only while drawing (see svg.draw)
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(4)


def _describe(s: _Series) -> str:
    times = sum(s.drifted)
    where = f"threshold {s.threshold:g}" if s.threshold is not None else "no threshold recorded"
    return (
        f"{s.column} latest {short(s.scores[-1])} ({where}), drifted in {times} of "
        f"{len(s.scores)} checks"
    )


def _panel(ax: Any, s: _Series) -> None:
    ax.plot(
        s.times, s.scores, "-o" if len(s.scores) <= 20 else "-", color=BLUE, ms=3, lw=1.2, zorder=3
    )
    ax.grid(axis="x", visible=False)
    ax.yaxis.set_major_locator(_few_ticks())
    hits = [(t, v) for t, v, d in zip(s.times, s.scores, s.drifted, strict=True) if d]
    if hits:
        ax.plot(*zip(*hits, strict=True), "X", color=LIMIT, ms=7, mec="white", mew=0.6, zorder=4)
    line = s.threshold
    top = max([*s.scores, line or 0.0]) * 1.15 or 1.0
    ax.set_ylim(0, top)
    if line is not None:
        ax.axhline(line, color=LIMIT, ls="--", lw=1.4, zorder=2)
        if s.pvalue:
            ax.axhspan(0, line, color=LIMIT, alpha=0.07, lw=0)
        else:
            ax.axhspan(line, top, color=LIMIT, alpha=0.07, lw=0)
        ax.annotate(
            f"threshold {line:g}",
            (1.0, line),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 3),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=LIMIT,
        )
    label = s.column + (" (p-value)" if line is not None and s.pvalue else "")
    ax.set_title(label, fontsize=9, fontweight="bold")
    ax.tick_params(labelsize=7.5)

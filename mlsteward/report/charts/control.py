"""Control charts and a Pareto chart: how the delivery process behaves, as Shewhart drew it.

Drawn from plain numbers (the process review computes the limits and the signals; this module
only draws them), so the report, the Prefect artifact and the console show the same picture.
An XmR chart is two panels sharing the time axis: the individuals with their centre line and
control limits, and the moving ranges with theirs. Points that belong to a special cause are
marked, the baseline the limits come from is shaded, and a specification limit (the target) is
a separate dashed line, because a process can be in control and still miss its target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mlsteward.report.charts.control_svg import Drawn, draw_control_svg
from mlsteward.report.charts.svg import (
    BLUE,
    Picture,
    draw,
    heading,
    short,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class ControlSeries:
    """One chart's numbers, as the review computed them.

    ``ucl``/``lcl`` are one number (an XmR chart) or one per point (a p-chart, whose limits
    widen for small subgroups); None where there are no limits. ``moving_ranges`` and
    ``mr_ucl`` make the second panel of an XmR chart.
    """

    key: str
    title: str
    unit: str
    times: Sequence[datetime]
    values: Sequence[float | None]
    center: float | None = None
    ucl: float | Sequence[float | None] | None = None
    lcl: float | Sequence[float | None] | None = None
    baseline: int = 0
    flagged: Sequence[int] = field(default_factory=tuple)
    moving_ranges: Sequence[float | None] | None = None
    mr_center: float | None = None
    mr_ucl: float | None = None
    target: float | None = None
    percent: bool = False
    target_text: str | None = None
    """How the target reads in the legend (default: in the chart's unit)."""
    scale: float = 1.0
    """Each number is multiplied by this to be drawn in ``unit`` (hours drawn as minutes: 60)."""


def _per_point(limit: float | Sequence[float | None] | None, n: int) -> list[float]:
    if limit is None:
        return [math.nan] * n
    if isinstance(limit, int | float):
        return [float(limit)] * n
    return [math.nan if v is None else float(v) for v in limit]


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def control_chart_picture(series: ControlSeries, salt: str = "") -> Picture | None:
    """The chart, or None when it has no point.

    Drawn as SVG by hand rather than through matplotlib: a weekly review draws a dozen charts
    per model, and at ~0.2 s each matplotlib alone took longer than the 10 s the whole report
    of a year's history may take. The look follows ``svg``'s (palette, fonts, dashed limits),
    and so do its rules: text stays text, no ``<style>``, no ids, the same bytes every time.
    """
    n = len(series.values)
    if n == 0 or all(v is None for v in series.values):
        return None
    scale = 100.0 if series.percent else series.scale
    mrs = series.moving_ranges
    d = Drawn(
        values=[v * scale for v in _nan(series.values)],
        ucl=[v * scale for v in _per_point(series.ucl, n)],
        lcl=[v * scale for v in _per_point(series.lcl, n)],
        center=None if series.center is None else series.center * scale,
        target=None if series.target is None else series.target * scale,
        flagged=sorted({i for i in series.flagged if 0 <= i < n}),
        unit="%" if series.percent else series.unit,
        mrs=None if mrs is None else [v * scale for v in _nan(mrs)],
        mr_center=None if series.mr_center is None else series.mr_center * scale,
        mr_ucl=None if series.mr_ucl is None else series.mr_ucl * scale,
    )
    alt = _alt(series, d)
    return Picture(series.key, series.title, draw_control_svg(series, d, alt), alt)


def _alt(series: ControlSeries, d: Drawn) -> str:
    known = [v for v in d.values if not math.isnan(v)]
    text = (
        f"{series.title}: {len(known)} points from {series.times[0]:%Y-%m-%d} to "
        f"{series.times[-1]:%Y-%m-%d}, latest {short(known[-1])} {d.unit}"
    )
    if d.center is not None:
        limits = [v for v in d.ucl if not math.isnan(v)]
        lows = [v for v in d.lcl if not math.isnan(v)]
        text += f"; centre line {short(d.center)}"
        if limits:
            text += f", control limits {short(min(lows))} to {short(max(limits))}"
        text += f" from the first {series.baseline} points"
    else:
        text += "; too few points for control limits"
    if d.target is not None:
        text += f"; target {short(d.target)} {d.unit}"
    return text + (
        f"; {len(d.flagged)} points flagged as special causes."
        if d.flagged
        else "; nothing flagged."
    )


@dataclass(frozen=True)
class ParetoBar:
    label: str
    count: int


def pareto_picture(
    key: str, title: str, bars: Sequence[ParetoBar], salt: str = ""
) -> Picture | None:
    """Counts sorted from the largest with the running share: the few causes behind most
    rejections stand out. Drawn across (a gate and its metric make long labels)."""
    bars = sorted(bars, key=lambda b: -b.count)[:12]
    total = sum(b.count for b in bars)
    if not bars or total == 0:
        return None
    running, shares = 0, []
    for b in bars:
        running += b.count
        shares.append(100.0 * running / total)

    def paint(fig: Figure) -> None:
        # start-up time: matplotlib is imported only while drawing (see svg.draw)
        from matplotlib.ticker import MaxNLocator

        ax = fig.subplots(1, 1)
        rows = list(range(len(bars)))[::-1]  # the largest on top
        ax.barh(rows, [b.count for b in bars], color=BLUE, zorder=3, height=0.6)
        ax.set_yticks(rows, [b.label for b in bars])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("rejections (cumulative share at each bar's end)")
        ax.grid(axis="y", visible=False)
        top = max(b.count for b in bars)
        ax.set_xlim(0, top * 1.25)
        for row, b, share in zip(rows, bars, shares, strict=True):
            ax.text(
                b.count + top * 0.02, row, f"{b.count}  ({share:.0f}%)", va="center", fontsize=8.5
            )
        heading(fig, title)

    alt = f"{title}: " + "; ".join(
        f"{b.label} {b.count} ({s:.0f}% cumulative)" for b, s in zip(bars, shares, strict=True)
    )
    return draw(key, title, alt + ".", paint, height=1.2 + 0.32 * len(bars), salt=salt)

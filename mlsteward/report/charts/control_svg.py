"""A control chart written as SVG directly: the individuals (or proportions) panel with its
centre line, control limits, target and flagged points, and under it the moving ranges.

Only lines, circles and text, so it is cheap (milliseconds, not matplotlib's fifth of a second)
and follows ``svg``'s rules by construction: text stays text, attributes instead of a
``<style>``, no ids or ``url(...)``, coordinates with two decimals, the same bytes every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from mlsteward.report.charts.svg import BLUE, GREEN, GREY, LIMIT, ORANGE, short

if TYPE_CHECKING:
    from mlsteward.report.charts.control import ControlSeries

W = 560.0
LEFT, RIGHT, TOP = 58.0, 14.0, 30.0
MAIN_H, MR_H, GAP, AXIS_H, LEGEND_H = 190.0, 70.0, 14.0, 22.0, 22.0
FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif"
INK, MUTED, GRID, BASELINE = "#1e293b", "#64748b", "#E5E7EB", "#F1F5F9"
MAX_MARKERS = 120
"""More points than this are drawn as a line only (markers would merge into a band)."""

_STEPS = (
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=7),
    timedelta(days=14),
    timedelta(days=30),
    timedelta(days=91),
    timedelta(days=182),
    timedelta(days=365),
)


def _f(x: float) -> str:
    out = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def nice_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """Round numbers (1, 2, 2.5 or 5 times a power of ten) spanning ``lo``..``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi - lo < 1e-12:
        lo, hi = lo - max(abs(lo) * 0.1, 1e-6), hi + max(abs(hi) * 0.1, 1e-6)
    raw = (hi - lo) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def time_ticks(lo: datetime, hi: datetime, most: int = 6) -> tuple[list[datetime], str]:
    """Tick times at a round step giving at most ``most`` ticks, and their label format."""
    span = hi - lo
    step = next((s for s in _STEPS if span / s <= most - 1), _STEPS[-1])
    if step >= timedelta(days=30):
        months = max(1, round(step.days / 30.4))
        t = datetime(lo.year, lo.month, 1, tzinfo=UTC)
        out = []
        while t <= hi:
            if t >= lo:
                out.append(t)
            month = t.month - 1 + months
            t = t.replace(year=t.year + month // 12, month=month % 12 + 1)
        return out, "%b %Y"
    epoch = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday: weekly ticks fall on Mondays
    first = epoch + math.ceil((lo - epoch) / step) * step
    out = []
    t = first
    while t <= hi:
        out.append(t)
        t += step
    return out, "%H:%M" if step < timedelta(days=1) else "%b %d"


class _Canvas:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def line(self, x1: float, y1: float, x2: float, y2: float, colour: str, **extra: str) -> None:
        attrs = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in extra.items())
        self.parts.append(
            f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
            f'stroke="{colour}"{attrs}/>'
        )

    def path(self, points: Sequence[tuple[float, float] | None], colour: str, **extra: str) -> None:
        """A polyline broken wherever a point is missing."""
        attrs = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in extra.items())
        d, pen = [], False
        for p in points:
            if p is None:
                pen = False
                continue
            d.append(f"{'L' if pen else 'M'}{_f(p[0])} {_f(p[1])}")
            pen = True
        if d:
            self.parts.append(f'<path d="{" ".join(d)}" fill="none" stroke="{colour}"{attrs}/>')

    def text(self, x: float, y: float, text: str, *, size: float = 10, anchor: str = "start",
             colour: str = MUTED, weight: str | None = None) -> None:  # fmt: skip
        bold = f' font-weight="{weight}"' if weight else ""
        self.parts.append(
            f'<text x="{_f(x)}" y="{_f(y)}" font-size="{_f(size)}" text-anchor="{anchor}" '
            f'fill="{colour}"{bold}>{escape(text)}</text>'
        )


@dataclass(frozen=True)
class Drawn:
    """A chart's numbers in the unit they are drawn in (limits one per point)."""

    values: list[float]
    ucl: list[float]
    lcl: list[float]
    center: float | None
    target: float | None
    flagged: list[int]
    unit: str
    mrs: list[float] | None
    mr_center: float | None
    mr_ucl: float | None


def draw_control_svg(series: ControlSeries, d: Drawn, alt: str) -> str:
    """The chart's ``<svg>`` element."""
    values, ucl, lcl, center, target, flagged, unit = (
        d.values,
        d.ucl,
        d.lcl,
        d.center,
        d.target,
        d.flagged,
        d.unit,
    )
    mrs, mr_center, mr_ucl = d.mrs, d.mr_center, d.mr_ucl
    times = list(series.times)
    lo_t, hi_t = min(times), max(times)
    pad = timedelta(hours=1) if hi_t - lo_t < timedelta(hours=2) else (hi_t - lo_t) / 40
    lo_t, hi_t = lo_t - pad, hi_t + pad
    plot_w = W - LEFT - RIGHT
    has_mr = mrs is not None and any(not math.isnan(v) for v in mrs)
    height = TOP + MAIN_H + (GAP + MR_H if has_mr else 0) + AXIS_H + LEGEND_H

    def x_of(t: datetime) -> float:
        return LEFT + plot_w * ((t - lo_t) / (hi_t - lo_t))

    def finite(xs: Sequence[float]) -> list[float]:
        return [v for v in xs if not math.isnan(v)]

    drawn = finite(values) + finite(ucl) + finite(lcl) + ([center] if center is not None else [])
    far_target = bool(target is not None and drawn and target > 3 * max(drawn))
    if target is not None and not far_target:
        drawn.append(target)
    low, high = min(drawn), max(drawn)
    if unit == "%":  # a share: from 0, and a flat zero still gets an axis a person can read
        low, high = 0.0, max(high, 5.0)
    ticks = nice_ticks(low, high)
    y_lo, y_hi = ticks[0], ticks[-1]

    def y_of(
        v: float, top: float = TOP, h: float = MAIN_H, lo: float = y_lo, hi: float = y_hi
    ) -> float:
        return top + h - h * ((v - lo) / (hi - lo) if hi > lo else 0.5)

    c = _Canvas()
    c.text(8, 18, series.title, size=12.5, colour=INK, weight="bold")
    if 0 < series.baseline < len(times):  # the baseline the limits come from, shaded
        x1 = x_of(times[0])
        x2 = x_of(times[series.baseline - 1])
        c.parts.append(
            f'<rect x="{_f(x1)}" y="{_f(TOP)}" width="{_f(max(x2 - x1, 1))}" '
            f'height="{_f(MAIN_H)}" fill="{BASELINE}"/>'
        )
    for t in ticks:
        y = y_of(t)
        c.line(LEFT, y, W - RIGHT, y, GRID, stroke_width="0.6")
        c.text(LEFT - 6, y + 3.5, short(t), size=9, anchor="end")
    c.text(14, TOP + MAIN_H / 2, unit, size=9.5, anchor="middle")
    c.parts[-1] = c.parts[-1].replace(
        "<text ", f'<text transform="rotate(-90 14 {_f(TOP + MAIN_H / 2)})" ', 1
    )
    if center is not None:
        c.line(LEFT, y_of(center), W - RIGHT, y_of(center), GREEN, stroke_width="1.2")
    for limit in (ucl, lcl):
        steps: list[tuple[float, float] | None] = []
        for i, v in enumerate(limit):
            if math.isnan(v):
                steps.append(None)
                continue
            left = x_of(times[i - 1]) + (x_of(times[i]) - x_of(times[i - 1])) / 2 if i else LEFT
            right = (
                x_of(times[i]) + (x_of(times[i + 1]) - x_of(times[i])) / 2
                if i + 1 < len(times)
                else W - RIGHT
            )
            steps += [(left, y_of(v)), (right, y_of(v))]
        c.path(steps, LIMIT, stroke_width="1.2", stroke_dasharray="5 3")
    if target is not None and not far_target:
        c.line(LEFT, y_of(target), W - RIGHT, y_of(target), ORANGE, stroke_width="1.6",
               stroke_dasharray="1.5 2.5")  # fmt: skip
    points = [
        None if math.isnan(v) else (x_of(t), y_of(v)) for t, v in zip(times, values, strict=True)
    ]
    c.path(points, BLUE, stroke_width="1.1")
    if len(values) <= MAX_MARKERS:
        for p in points:
            if p is not None:
                c.parts.append(f'<circle cx="{_f(p[0])}" cy="{_f(p[1])}" r="2" fill="{BLUE}"/>')
    for i in flagged:
        p = points[i]
        if p is None:
            continue
        for dx, dy in ((4, 4), (4, -4)):
            c.line(p[0] - dx, p[1] - dy, p[0] + dx, p[1] + dy, LIMIT, stroke_width="2.2")
    c.line(LEFT, TOP, LEFT, TOP + MAIN_H, INK, stroke_width="0.8")
    bottom = TOP + MAIN_H
    if has_mr and mrs is not None:
        top = bottom + GAP
        mr_drawn = finite(mrs) + [v for v in (mr_ucl, mr_center) if v is not None]
        mr_ticks = nice_ticks(0.0, max(mr_drawn), most=3)

        def mr_y(v: float) -> float:
            return y_of(v, top, MR_H, mr_ticks[0], mr_ticks[-1])

        for t in mr_ticks:
            c.line(LEFT, mr_y(t), W - RIGHT, mr_y(t), GRID, stroke_width="0.6")
            c.text(LEFT - 6, mr_y(t) + 3.5, short(t), size=9, anchor="end")
        if mr_center is not None:
            c.line(LEFT, mr_y(mr_center), W - RIGHT, mr_y(mr_center), GREEN, stroke_width="1")
        if mr_ucl is not None:
            c.line(LEFT, mr_y(mr_ucl), W - RIGHT, mr_y(mr_ucl), LIMIT, stroke_width="1",
                   stroke_dasharray="5 3")  # fmt: skip
        mr_points = [
            None if math.isnan(v) else (x_of(t), mr_y(v)) for t, v in zip(times, mrs, strict=True)
        ]
        c.path(mr_points, GREY, stroke_width="1")
        c.text(14, top + MR_H / 2, "moving range", size=8.5, anchor="middle")
        c.parts[-1] = c.parts[-1].replace(
            "<text ", f'<text transform="rotate(-90 14 {_f(top + MR_H / 2)})" ', 1
        )
        c.line(LEFT, top, LEFT, top + MR_H, INK, stroke_width="0.8")
        bottom = top + MR_H
    c.line(LEFT, bottom, W - RIGHT, bottom, INK, stroke_width="0.8")
    marks, fmt = time_ticks(lo_t, hi_t)
    for mark in marks:
        x = x_of(mark)
        c.line(x, bottom, x, bottom + 4, INK, stroke_width="0.8")
        c.text(x, bottom + 15, mark.strftime(fmt), size=9, anchor="middle")
    _legend(c, bottom + AXIS_H + 10, center, ucl, target, far_target, flagged, unit, series)
    label = quoteattr(series.title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(W)}" height="{_f(height)}" '
        f'viewBox="0 0 {_f(W)} {_f(height)}" role="img" aria-label={label} '
        f'font-family="{FONT}" stroke-linecap="butt" stroke-linejoin="round">'
        f"<title>{escape(series.title)}</title><desc>{escape(alt)}</desc>"
        + "".join(c.parts)
        + "</svg>"
    )


def _legend(
    c: _Canvas,
    y: float,
    center: float | None,
    ucl: list[float],
    target: float | None,
    far_target: bool,
    flagged: list[int],
    unit: str,
    series: ControlSeries,
) -> None:
    items: list[tuple[str, str, str]] = [("observed", BLUE, "")]
    if center is not None:
        items.append((f"centre {short(center)}", GREEN, ""))
    if any(not math.isnan(v) for v in ucl):
        items.append(("control limits", LIMIT, "5 3"))
    if target is not None:
        text = series.target_text or f"{short(target)} {unit}"
        items.append((f"target {text}" + (" (far above)" if far_target else ""), ORANGE, "1.5 2.5"))
    if flagged:
        items.append(("special cause", LIMIT, "x"))
    x = LEFT
    for label, colour, dash in items:
        if dash == "x":
            c.line(x + 4, y - 7, x + 12, y + 1, colour, stroke_width="2.2")
            c.line(x + 4, y + 1, x + 12, y - 7, colour, stroke_width="2.2")
        else:
            extra = {"stroke_dasharray": dash} if dash else {}
            c.line(x, y - 3, x + 16, y - 3, colour, stroke_width="1.6", **extra)
        c.text(x + 20, y, label, size=9, colour=INK)
        x += 28 + 5.4 * len(label)

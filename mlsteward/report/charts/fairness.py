"""Fairness by group, with the limits the fairness gate checked drawn in.

Drawn from the fairness gate's own details in the validation report (per attribute: the
groups' rates or errors, the metrics, their configured limits and the gate's verdicts), so the
picture shows exactly what was judged. Each gated metric is a spread, a ratio or a worst
group's value of one per-group number, and is drawn as a line on that number's axis:

- a difference (``max - min <= L``): the line ``L`` above the lowest gated group;
- a parity ratio (``min / max >= R``): the line at ``R`` times the highest group;
- an error ratio (``max / min <= R``): the line at ``R`` times the lowest group;
- bounded group loss (``max <= L``): the line at ``L``.

A gated group beyond its line is what failed the gate. Groups smaller than the gate's
``min_group_size`` are drawn hollow: reported, not gated.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteward.report.charts.svg import BLUE, GREY, LIMIT, Picture, draw, heading, number, short

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MINUS = "\u2212"
TIMES = "\u00d7"
# metric -> (the per-group numbers it reads, how it reads them)
METRIC_SHAPES: dict[str, tuple[tuple[str, ...], str]] = {
    "demographic_parity_difference": (("selection_rate",), "difference"),
    "demographic_parity_ratio": (("selection_rate",), "parity_ratio"),
    "equal_opportunity_difference": (("tpr",), "difference"),
    "equalized_odds_difference": (("tpr", "fpr"), "difference"),
    "mae_difference": (("mae",), "difference"),
    "mae_ratio": (("mae",), "error_ratio"),
    "rmse_difference": (("rmse",), "difference"),
    "rmse_ratio": (("rmse",), "error_ratio"),
    "mean_residual_difference": (("mean_residual",), "difference"),
    "bounded_group_loss": (("mae",), "worst"),
}
AXIS_LABELS = {
    "selection_rate": "Selection rate (share of the group predicted positive)",
    "tpr": "True-positive rate (share of the group's positives found)",
    "fpr": "False-positive rate (share of the group's negatives flagged)",
    "mae": "Mean absolute error (label units)",
    "rmse": "Root mean squared error (label units)",
    "mean_residual": f"Mean residual: predicted {MINUS} actual (label units)",
}
SHORT_NAMES = {
    "selection_rate": "Selection rate by group",
    "tpr": "True-positive rate by group",
    "fpr": "False-positive rate by group",
    "mae": "Mean absolute error by group",
    "rmse": "RMSE by group",
    "mean_residual": "Mean residual by group",
}
RATES = ("selection_rate", "tpr", "fpr")
_RULES = {
    "difference": f"max {MINUS} min ≤ {{v:g}}",
    "parity_ratio": f"min ≥ {{v:g}} {TIMES} max",
    "error_ratio": f"max ≤ {{v:g}} {TIMES} min",
    "worst": "every group ≤ {v:g}",
}


@dataclass(frozen=True)
class _Line:
    """One limit drawn on a panel: where it is and which metrics it stands for."""

    x: float
    rule: str
    metrics: tuple[str, ...]
    upper: bool  # True: groups must stay at or left of the line


def fairness_pictures(details: dict[str, Any], subject: str = "", salt: str = "") -> list[Picture]:
    """One picture per sensitive attribute of a fairness gate's ``details``."""
    out = []
    size = details.get("min_group_size")
    for attribute, assessment in (details.get("attributes") or {}).items():
        if isinstance(assessment, dict):
            given = {"min_group_size": size, **assessment}
            picture = fairness_picture(str(attribute), given, subject, salt)
            if picture is not None:
                out.append(picture)
    return out


def _limit_lines(key: str, assessment: dict[str, Any], gated: list[dict[str, Any]]) -> list[_Line]:
    """The lines of every gated metric that reads ``key``, merged where they coincide."""
    values = [x for g in gated if (x := number(g.get(key))) is not None]
    if not values:
        return []
    low, high = min(values), max(values)
    found: dict[tuple[float, str], list[str]] = {}
    for metric, bound in (assessment.get("limits") or {}).items():
        keys, kind = METRIC_SHAPES.get(metric, ((), ""))
        if key not in keys or not isinstance(bound, dict):
            continue
        upper, lower = number(bound.get("max")), number(bound.get("min"))
        if kind == "difference" and upper is not None:
            line = (low + upper, _RULES[kind].format(v=upper))
        elif kind == "parity_ratio" and lower is not None:
            line = (lower * high, _RULES[kind].format(v=lower))
        elif kind == "error_ratio" and upper is not None:
            line = (upper * low, _RULES[kind].format(v=upper))
        elif kind == "worst" and upper is not None:
            line = (upper, _RULES[kind].format(v=upper))
        else:
            continue
        found.setdefault(line, []).append(metric)
    return [
        _Line(x, rule, tuple(metrics), upper=not rule.startswith("min"))
        for (x, rule), metrics in found.items()
    ]


def _verdict(metric: str, assessment: dict[str, Any]) -> str:
    """``equal opportunity difference 0.0399 (limit ≤ 0.2): pass``."""
    value = number((assessment.get("metrics") or {}).get(metric))
    passed = (assessment.get("checks") or {}).get(metric)
    bound = (assessment.get("limits") or {}).get(metric) or {}
    limit = " ".join(
        f"{op} {v:g}"
        for op, v in (("≥", number(bound.get("min"))), ("≤", number(bound.get("max"))))
        if v is not None
    )
    shown = "n/a" if value is None else short(value)
    name = metric.replace("_", " ")
    if not limit:
        return f"{name} {shown}"
    result = "not assessable" if passed is None else ("pass" if passed else "FAIL")
    return f"{name} {shown} (limit {limit}): {result}"


def _gated(assessment: dict[str, Any]) -> list[str]:
    return [
        m
        for m, b in (assessment.get("limits") or {}).items()
        if isinstance(b, dict) and (b.get("min") is not None or b.get("max") is not None)
    ]


def _panels(assessment: dict[str, Any]) -> list[str]:
    """The per-group numbers to draw: those a gated metric reads, else those any reported
    metric reads, in a fixed order."""

    def reads(names: Any) -> set[str]:
        return {k for m in names for k in METRIC_SHAPES.get(m, ((), ""))[0]}

    keys = reads(_gated(assessment)) or reads(assessment.get("metrics") or {})
    order = [*RATES, "mae", "rmse", "mean_residual"]
    return [k for k in order if k in keys]


def fairness_picture(
    attribute: str, assessment: dict[str, Any], subject: str = "", salt: str = ""
) -> Picture | None:
    """One attribute: a panel per per-group number the gate read, each group a dot, every
    gated limit a dashed line with its metric's value and verdict; None without groups.

    ``assessment`` is one attribute of the fairness gate's ``details["attributes"]``; the
    gate's ``min_group_size`` may be put in it to name the size in the picture."""
    groups = [g for g in assessment.get("groups") or [] if isinstance(g, dict)]
    panels = _panels(assessment)
    if not groups or not panels:
        return None
    gated_groups = [g for g in groups if g.get("gated", True)]
    gated = _gated(assessment)
    reported = [m for m in assessment.get("metrics") or {} if m not in gated]
    title = f"Fairness across {attribute}" + (f": {subject}" if subject else "")
    lines = {key: _limit_lines(key, assessment, gated_groups) for key in panels}
    failed_any = any((assessment.get("checks") or {}).get(m) is False for m in gated)
    small = len(gated_groups) < len(groups)
    notes = []
    if small:
        size = assessment.get("min_group_size")
        notes.append(
            f"Hollow: groups under {size} rows, reported but not gated."
            if size is not None
            else "Hollow: groups too small to gate, reported only."
        )
    if reported:
        notes.append(
            "Reported, not gated: " + "; ".join(_verdict(m, assessment) for m in reported) + "."
        )
    if not gated:
        notes.append("No limit is configured for this attribute: nothing here is gated.")
    foot = [line for n in notes for line in textwrap.wrap(n, 84)]
    heights = [0.95 + 0.3 * len(groups) + 0.14 * _title_lines(key, assessment) for key in panels]
    foot_height = 0.3 + 0.15 * len(foot)

    def paint(fig: Figure) -> None:
        axes = fig.subplots(
            len(panels) + 1, 1, squeeze=False, height_ratios=[*heights, foot_height]
        )[:, 0]
        for ax, key in zip(axes[:-1], panels, strict=True):
            _panel(ax, key, groups, lines[key], assessment)
        heading(fig, title)
        footer = axes[-1]
        footer.axis("off")
        footer.legend(
            handles=_handles(small, any(lines.values()), failed_any),
            loc="upper left",
            ncols=4,
            fontsize=7.5,
            borderaxespad=0,
        )
        footer.text(
            0,
            0.0,
            "\n".join(foot),
            fontsize=7.5,
            color="#4B5563",
            va="bottom",
            transform=footer.transAxes,
        )

    alt = (
        f"Per-group numbers across {attribute} for {len(groups)} groups "
        f"({', '.join(str(g.get('group')) for g in groups)}), each limit the gate checked "
        "drawn as a dashed line. "
        + (
            "Gated: " + "; ".join(_verdict(m, assessment) for m in gated) + ". "
            if gated
            else "No metric is gated for this attribute. "
        )
        + ("The gate failed on this attribute." if failed_any else "")
    ).strip()
    height = 0.5 + sum(heights) + foot_height
    return draw(f"fairness-{attribute}", title, alt, paint, height=height, salt=salt)


def _title_lines(key: str, assessment: dict[str, Any]) -> int:
    return 1 + sum(1 for m in _gated(assessment) if key in METRIC_SHAPES.get(m, ((), ""))[0])


def _handles(small: bool, limits: bool, failed: bool) -> list[Any]:
    # start-up time: matplotlib is imported only while drawing (see svg.draw)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Line2D([], [], marker="o", ls="", ms=7, color=BLUE, mec="white", label="gated group")
    ]
    if failed:
        handles.append(
            Line2D(
                [], [], marker="X", ls="", ms=8, color=LIMIT, mec="white", label="beyond the limit"
            )
        )
    if small:
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                ms=7,
                mfc="white",
                mec=GREY,
                mew=1.5,
                label="small group: not gated",
            )
        )
    if limits:
        handles.append(Line2D([], [], color=LIMIT, ls="--", lw=1.6, label="limit"))
        handles.append(Patch(color=BLUE, alpha=0.1, label="allowed"))
    return handles


def _panel(
    ax: Any, key: str, groups: list[dict[str, Any]], lines: list[_Line], assessment: dict[str, Any]
) -> None:
    """One per-group number: a dot per group, each limit dashed and named, the allowed side
    of it shaded from the group it is measured from."""
    names = [
        f"{g.get('group')} (n={g['size']:,})"
        if isinstance(g.get("size"), int)
        else str(g.get("group"))
        for g in groups
    ]
    ys = list(range(len(groups)))
    xs = [number(g.get(key)) for g in groups]
    gated_x = [x for g, x in zip(groups, xs, strict=True) if g.get("gated", True) and x is not None]
    if key in RATES:
        ax.set_xlim(-0.02, 1.02)
    else:
        everything = [x for x in xs if x is not None] + [ln.x for ln in lines]
        low, high = min([0.0, *everything]), max([0.0, *everything])
        pad = (high - low) * 0.1 or 1.0
        ax.set_xlim(low - (pad if low < 0 else 0), high + pad)
    left, right = ax.get_xlim()
    for line in lines:
        ax.axvline(line.x, color=LIMIT, ls="--", lw=1.6, zorder=2)
        if gated_x:
            start = min(gated_x) if line.upper else max(gated_x)
            ax.axvspan(
                min(start, line.x), max(start, line.x), color=BLUE, alpha=0.1, lw=0, zorder=1
            )
        near_right = (line.x - left) > 0.7 * (right - left)
        ax.annotate(
            f"limit {short(line.x)}: {line.rule}",
            (line.x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if near_right else 4, -2),
            textcoords="offset points",
            ha="right" if near_right else "left",
            va="top",
            fontsize=7.5,
            color=LIMIT,
            fontweight="bold",
        )
    for y, g, x in zip(ys, groups, xs, strict=True):
        if x is None:
            ax.text(
                0.01,
                y,
                "undefined",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=8,
                color=GREY,
            )
            continue
        in_gate = g.get("gated", True)
        beyond = in_gate and any(
            (x > ln.x + 1e-12) if ln.upper else (x < ln.x - 1e-12) for ln in lines
        )
        if not in_gate:
            ax.plot(x, y, "o", ms=8, mfc="white", mec=GREY, mew=1.5, zorder=3)
        elif beyond:
            ax.plot(x, y, "X", ms=10, color=LIMIT, mec="white", mew=0.8, zorder=4)
        else:
            ax.plot(x, y, "o", ms=8, color=BLUE, mec="white", mew=0.8, zorder=3)
        ax.annotate(
            short(x),
            (x, y),
            xytext=(0, 7),
            textcoords="offset points",
            fontsize=7.5,
            ha="center",
            color="#374151",
        )
    ax.set_yticks(ys, names)
    ax.set_ylim(len(groups) - 0.4, -0.9)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(AXIS_LABELS.get(key, key))
    verdicts = [
        _verdict(m, assessment)
        for m in _gated(assessment)
        if key in METRIC_SHAPES.get(m, ((), ""))[0]
    ]
    ax.set_title(
        "\n".join([SHORT_NAMES.get(key, key), *verdicts]),
        fontsize=8.5,
        loc="left",
        fontweight="normal",
    )

"""A regression model's holdout: predictions against outcomes, and the errors by group.

Both are drawn from the evaluation stored with the validation report
(:mod:`mlsteward.governance.evaluation`): a seeded sample of at most 500 holdout rows for the
scatter, and every holdout row for the residuals of each sensitive attribute's groups (the
groups the fairness gate compared, in its order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsteward.report.charts.svg import (
    BLUE,
    GREY,
    LIMIT,
    ORANGE,
    Picture,
    draw,
    heading,
    number,
    numbers,
)

MINUS = "\u2212"

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def predicted_vs_actual_picture(
    evaluation: dict[str, Any], subject: str = "", label: str = "", salt: str = ""
) -> Picture | None:
    """Each sampled row's prediction against its outcome, with the line where they agree;
    None without a stored sample. ``label`` names the outcome (e.g. the config's label)."""
    reg = evaluation.get("regression") or {}
    actual, predicted = numbers(reg.get("actual")), numbers(reg.get("predicted"))
    if not actual or len(actual) != len(predicted):
        return None
    sample = evaluation.get("sample") or {}
    outcome = label or "outcome"
    title = "Predicted vs actual" + (f": {subject}" if subject else "")
    finite = sorted(v for v in actual + predicted if v == v)
    low = finite[0]
    # a long tail (counts, amounts) would squash the bulk into a corner: the axes end at the
    # 99th percentile and the rows beyond are counted in the legend
    high = finite[min(len(finite) - 1, int(0.99 * len(finite)))]
    pad = (high - low) * 0.04 or 1.0
    beyond = sum(
        1 for a, p in zip(actual, predicted, strict=True) if a > high + pad or p > high + pad
    )

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.plot(
            [low - pad, high + pad],
            [low - pad, high + pad],
            color=LIMIT,
            lw=1.2,
            ls="--",
            label="prediction = outcome",
            zorder=3,
        )
        shown = f"{len(actual):,} sampled holdout rows" + (
            f" ({beyond} beyond the axes)" if beyond else ""
        )
        ax.scatter(
            actual,
            predicted,
            s=12,
            color=BLUE,
            alpha=0.35,
            lw=0,
            label=shown,
            rasterized=len(actual) > 300,
        )
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_xlabel(f"Actual {outcome} (label units)")
        ax.set_ylabel(f"Predicted {outcome} (label units)")
        heading(fig, title)
        ax.legend(loc="upper left")

    of = sample.get("of")
    alt = (
        f"Scatter of predicted against actual {outcome} for {len(actual):,} holdout rows"
        + (f" sampled from {of:,}" if isinstance(of, int) else "")
        + "; points on the dashed line are predicted exactly, points above it over-predicted."
    )
    return draw("predicted-vs-actual", title, alt, paint, height=4.6, salt=salt)


def residuals_picture(
    evaluation: dict[str, Any], subject: str = "", label: str = "", salt: str = ""
) -> Picture | None:
    """Per sensitive attribute, each group's residuals (prediction - outcome) as a box from
    the 25th to the 75th percentile, whiskers from the 5th to the 95th and the mean marked;
    None without stored residuals."""
    reg = evaluation.get("regression") or {}
    by_attr = {
        a: [g for g in groups if isinstance(g, dict) and number(g.get("median")) is not None]
        for a, groups in (reg.get("residuals") or {}).items()
        if isinstance(groups, list)
    }
    by_attr = {a: g for a, g in by_attr.items() if g}
    if not by_attr:
        return None
    outcome = label or "outcome"
    title = "Residuals by group" + (f": {subject}" if subject else "")
    heights = [0.5 + 0.32 * len(g) for g in by_attr.values()]

    def paint(fig: Figure) -> None:
        axes = fig.subplots(len(by_attr), 1, squeeze=False, height_ratios=heights)[:, 0]
        for ax, (attr, groups) in zip(axes, by_attr.items(), strict=True):
            stats: list[dict[str, Any]] = [
                {
                    "label": f"{g['group']} (n={g.get('size', '?'):,})"
                    if isinstance(g.get("size"), int)
                    else str(g["group"]),
                    "whislo": number(g.get("q05")),
                    "q1": number(g.get("q25")),
                    "med": number(g.get("median")),
                    "q3": number(g.get("q75")),
                    "whishi": number(g.get("q95")),
                    "mean": number(g.get("mean")),
                    "fliers": [],
                }
                for g in groups
            ]
            boxes = ax.bxp(
                stats,
                orientation="horizontal",
                showmeans=True,
                widths=0.55,
                patch_artist=True,
                meanline=False,
                meanprops={
                    "marker": "D",
                    "markerfacecolor": ORANGE,
                    "markeredgecolor": "white",
                    "markersize": 6,
                },
                medianprops={"color": "black", "lw": 1.2},
            )
            for box, g in zip(boxes["boxes"], groups, strict=True):
                gated = g.get("gated", True)
                box.set_facecolor(BLUE if gated else "white")
                box.set_alpha(0.45 if gated else 1.0)
                box.set_edgecolor(BLUE if gated else GREY)
                if not gated:
                    box.set_linestyle("--")
            ax.axvline(0, color=LIMIT, lw=1, ls="--")
            ax.invert_yaxis()
            ax.set_title(f"{attr}", fontsize=10)
            ax.grid(axis="y", visible=False)
        axes[-1].set_xlabel(f"Predicted {MINUS} actual {outcome} (> 0: over-predicted)")
        heading(fig, title)
        small = any(not g.get("gated", True) for gs in by_attr.values() for g in gs)
        fig.legend(handles=_legend_handles(small), loc="outside lower center", ncols=4, fontsize=8)

    alt = (
        f"Box plots of the residuals (predicted minus actual {outcome}) for each group of "
        + ", ".join(by_attr)
        + ": boxes span the 25th to 75th percentile, whiskers the 5th to 95th, diamonds mark "
        "the mean; a box right of the dashed zero line is over-predicted."
    )
    return draw("residuals", title, alt, paint, height=1.2 + sum(heights), salt=salt)


def _legend_handles(small: bool) -> list[Any]:
    # start-up time: matplotlib is imported only while drawing (see svg.draw)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Patch(facecolor=BLUE, alpha=0.45, edgecolor=BLUE, label="25th-75th percentile"),
        Line2D([], [], color="black", lw=1.2, label="median"),
        Line2D([], [], marker="D", ls="", color=ORANGE, mec="white", label="mean"),
    ]
    if small:
        handles.append(
            Patch(facecolor="white", edgecolor=GREY, linestyle="--", label="small group: not gated")
        )
    return handles

"""What drives a version's predictions: SHAP importance and the beeswarm.

Both are drawn from the SHAP sample stored with the validation report
(:mod:`mlsteward.governance.evaluation`): exact TreeSHAP contributions of a seeded sample of
holdout rows, on the model's margin scale (log-odds for a classifier, the log of the
prediction for a log-link regression model, the prediction itself otherwise).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlsteward.report.charts.svg import (
    BLUE,
    GREY,
    SEQUENTIAL,
    Picture,
    draw,
    heading,
    number,
    numbers,
    short,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_FEATURES = 12
"""Features shown, most important first; the rest are named in the text alternative."""

SCALE_UNITS = {
    "log-odds": "log-odds of the positive class",
    "log": "log of the predicted value",
    "identity": "label units",
}


def _ranked(shap: dict[str, Any]) -> list[tuple[str, float]]:
    """(feature, mean |SHAP|), largest first."""
    mean_abs = shap.get("mean_abs") or {}
    ranked = [(str(f), number(v)) for f, v in mean_abs.items()]
    return sorted(((f, v) for f, v in ranked if v is not None), key=lambda fv: -fv[1])


def _rows(shap: dict[str, Any]) -> int:
    rows = shap.get("rows")
    return rows if isinstance(rows, int) else len(shap.get("contributions") or [])


def importance_picture(
    evaluation: dict[str, Any], subject: str = "", salt: str = ""
) -> Picture | None:
    """Mean |SHAP value| per feature as horizontal bars; None without a SHAP sample."""
    shap = evaluation.get("shap") or {}
    ranked = _ranked(shap)
    if not ranked:
        return None
    shown = ranked[:MAX_FEATURES]
    unit = SCALE_UNITS.get(str(shap.get("scale")), "model output")
    rows = _rows(shap)
    title = "Feature importance" + (f": {subject}" if subject else "")

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        names = [f for f, _ in shown][::-1]
        values = [v for _, v in shown][::-1]
        bars = ax.barh(names, values, color=BLUE, alpha=0.85, height=0.65)
        ax.bar_label(bars, labels=[short(v) for v in values], padding=3, fontsize=8)
        ax.set_xlabel(f"Mean |SHAP value| ({unit})")
        heading(fig, f"{title}, {rows:,} holdout rows")
        ax.grid(axis="y", visible=False)
        ax.margins(x=0.12)

    rest = [f for f, _ in ranked[MAX_FEATURES:]]
    alt = (
        f"Bar chart of the mean absolute SHAP value per feature on {rows:,} holdout rows, "
        f"in {unit}: " + ", ".join(f"{f} {short(v)}" for f, v in shown) + "."
    )
    if rest:
        alt += f" Not shown (smaller): {', '.join(rest)}."
    return draw("shap-importance", title, alt, paint, height=1.0 + 0.28 * len(shown), salt=salt)


def beeswarm_picture(
    evaluation: dict[str, Any], subject: str = "", salt: str = ""
) -> Picture | None:
    """One row of dots per feature, each dot a sampled row placed by its SHAP value and
    coloured by the feature's value (low to high; categorical features in grey, their codes
    having no order); None without a SHAP sample."""
    shap = evaluation.get("shap") or {}
    features = [str(f) for f in shap.get("features") or []]
    contributions = shap.get("contributions") or []
    values = shap.get("values") or []
    ranked = [f for f, _ in _ranked(shap) if f in features][:MAX_FEATURES]
    if not ranked or not contributions or len(values) != len(contributions):
        return None
    categorical = set(shap.get("categorical") or [])
    unit = SCALE_UNITS.get(str(shap.get("scale")), "model output")
    rows = _rows(shap)
    title = "SHAP values" + (f": {subject}" if subject else "")
    columns = {f: i for i, f in enumerate(features)}

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.axvline(0, color=GREY, lw=0.8)
        mappable = None
        for row, feature in enumerate(reversed(ranked)):
            i = columns[feature]
            x = numbers([r[i] if i < len(r) else None for r in contributions])
            v = numbers([r[i] if i < len(r) else None for r in values])
            keep = [k for k, xv in enumerate(x) if not math.isnan(xv)]
            xs = [x[k] for k in keep]
            ys = [row + dy for dy in _swarm(xs)]
            if feature in categorical:
                ax.scatter(xs, ys, s=7, color=GREY, lw=0, alpha=0.8, rasterized=True)
                continue
            colours = _scaled([v[k] for k in keep])
            mappable = ax.scatter(
                xs,
                ys,
                s=7,
                c=colours,
                cmap=SEQUENTIAL,
                vmin=0,
                vmax=1,
                lw=0,
                alpha=0.9,
                rasterized=True,
            )
        ax.set_yticks(range(len(ranked)), list(reversed(ranked)))
        ax.set_ylim(-0.6, len(ranked) - 0.4)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"SHAP value: effect on the model output ({unit})")
        heading(fig, f"{title}, {rows:,} holdout rows")
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=ax, pad=0.01, aspect=40, fraction=0.03, ticks=[0, 1])
            bar.ax.set_yticklabels(["low", "high"])
            bar.set_label("Feature value (grey: categorical)")
            if bar.solids is not None:  # a smooth gradient: pixels, not hundreds of paths
                bar.solids.set_rasterized(True)

    alt = (
        f"Beeswarm of SHAP values for the {len(ranked)} most important features on {rows:,} "
        f"holdout rows, each dot one row, coloured from low (dark) to high (yellow) feature "
        f"value; dots right of zero raise the model output ({unit})."
    )
    return draw("shap-beeswarm", title, alt, paint, height=1.2 + 0.36 * len(ranked), salt=salt)


def _scaled(values: list[float]) -> list[float]:
    """Feature values to 0..1 between their 5th and 95th percentile (as shap's own beeswarm
    clips them), so one extreme row does not wash out the colours; missing values mid-scale."""
    finite = sorted(v for v in values if not math.isnan(v))
    if not finite:
        return [0.5] * len(values)
    low = finite[int(0.05 * (len(finite) - 1))]
    high = finite[int(0.95 * (len(finite) - 1))]
    if high <= low:
        low, high = finite[0], finite[-1]
    span = high - low
    if span <= 0:
        return [0.5] * len(values)
    return [0.5 if math.isnan(v) else min(max((v - low) / span, 0.0), 1.0) for v in values]


def _swarm(xs: list[float], width: float = 0.38, bins: int = 80) -> list[float]:
    """Vertical offsets that spread dots with similar SHAP values apart: dots in the same
    slice of the x range alternate above and below the line, further out the more there are
    (deterministic, in the order given)."""
    if not xs:
        return []
    low, high = min(xs), max(xs)
    span = (high - low) or 1.0
    slot = [min(int((x - low) / span * bins), bins - 1) for x in xs]
    counts = [0] * bins
    for s in slot:
        counts[s] += 1
    crowd = max(counts)
    step = width / max(crowd / 2, 1)
    seen = [0] * bins
    out = []
    for s in slot:
        k = seen[s]
        seen[s] += 1
        out.append(((k + 1) // 2) * step * (1 if k % 2 else -1))
    return out

"""Champion against challenger on the primary metric.

:func:`comparison_picture` draws the champion-comparison gate's own numbers from a validation
report: both versions measured on the challenger's holdout, and the value the challenger had
to reach (the champion's, moved by ``min_delta`` in the configured mode).
:func:`metric_history_picture` draws every version's primary metric as the registry recorded
it at training, each on its own test split (so it shows a trend, not a like-for-like
comparison; the gate's picture is that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlsteward.report.charts.cache import memoised
from mlsteward.report.charts.svg import (
    BLUE,
    GREY,
    LIMIT,
    ORANGE,
    Picture,
    draw,
    heading,
    number,
    short,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _needed(p: dict[str, Any], champion: float) -> tuple[float, str]:
    """The value the challenger had to beat (strictly, with ``min_delta`` 0) or reach."""
    lower = p.get("direction") == "lower is better"
    delta = number(p.get("min_delta")) or 0.0
    step = delta * abs(champion) if p.get("delta_mode") == "relative" else delta
    target = champion - step if lower else champion + step
    sign = ("<" if lower else ">") if delta == 0 else ("≤" if lower else "≥")
    how = (
        "strictly better than the champion"
        if delta == 0
        else (f"min_delta {delta:g}, {p.get('delta_mode', 'absolute')}")
    )
    return target, f"needed: {sign} {_fixed(target)} ({how})"


@memoised
def comparison_picture(report: dict[str, Any], salt: str = "") -> Picture | None:
    """The champion-comparison gate of a stored ``ValidationReport.to_dict()``: champion and
    challenger on the primary metric, with the line the challenger had to cross; None when the
    report has no champion to compare with."""
    gate = next(
        (
            g
            for g in report.get("gates") or []
            if isinstance(g, dict) and g.get("name") == "champion_comparison"
        ),
        None,
    )
    details = (gate or {}).get("details") or {}
    p = details.get("primary") or {}
    challenger, champion = number(p.get("challenger")), number(p.get("champion"))
    champ_version = details.get("champion_version")
    if challenger is None or champion is None or champ_version is None:
        return None
    metric = str(p.get("metric") or "primary metric")
    version = report.get("version", "?")
    target, rule = _needed(p, champion)
    passed = bool(p.get("passed"))

    improvement = number(p.get("improvement"))
    verdict = "passed" if passed else "failed"
    title = f"Champion v{champ_version} vs challenger v{version} on {metric}: {verdict}"

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        names = [f"champion v{champ_version}", f"challenger v{version}"]
        values = [champion, challenger]
        colours = [GREY, BLUE if passed else LIMIT]
        low, high = min(*values, target), max(*values, target)
        pad = (high - low) * 0.3 or abs(high) * 0.05 or 0.01
        ax.set_xlim(low - pad, high + pad)
        ax.axvline(target, color=LIMIT, ls="--", lw=1.6, zorder=2, label=rule)
        for y, v, c in zip([0, 1], values, colours, strict=True):
            ax.plot(
                v, y, "o" if c != LIMIT else "X", ms=12, color=c, mec="white", mew=1.2, zorder=4
            )
            ax.annotate(
                _fixed(v),
                (v, y),
                xytext=(0, 11),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                fontweight="bold",
            )
        if improvement is not None:
            ax.annotate(
                "",
                (challenger, 0.5),
                (champion, 0.5),
                arrowprops={"arrowstyle": "->", "color": "#374151", "lw": 1.2},
            )
            ax.text(
                (champion + challenger) / 2,
                0.5,
                f"improvement {_signed(improvement)}\n",
                ha="center",
                va="bottom",
                fontsize=8,
                color="#374151",
            )
        ax.set_yticks([0, 1], names)
        ax.set_ylim(-0.6, 1.7)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"{metric} on the challenger's holdout ({p.get('direction') or ''})")
        heading(fig, title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncols=1)

    alt = (
        f"Champion v{champ_version} scores {_fixed(champion)} and challenger v{version} "
        f"{_fixed(challenger)} on {metric}, both on the challenger's holdout; {rule}. "
        + (f"Improvement {_signed(improvement)}; " if improvement is not None else "")
        + f"the comparison {'passed' if passed else 'failed'}."
    )
    return draw("champion-comparison", title, alt, paint, height=3.0, salt=salt)


def _fixed(x: float) -> str:
    """Four decimals: two close values of one metric must read as different."""
    return f"{x:,.4f}" if abs(x) < 1e5 else f"{x:,.0f}"


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + short(x, 4)


@memoised
def metric_history_picture(
    versions: Sequence[Mapping[str, Any]],
    metric: str,
    champion: str | None = None,
    challenger: str | None = None,
    subject: str = "",
    salt: str = "",
) -> Picture | None:
    """Every version's ``metric`` as recorded at training, oldest to newest, marked by its
    validation (passed, failed, not validated) and the current champion and challenger.

    Args:
        versions: Dicts with ``version``, ``metrics`` (``{metric: value}``) and optionally
            ``validation_status`` (the card's and the API's version rows).
        metric: The metric to draw, usually the primary one.
        champion, challenger: The versions holding those aliases, highlighted.

    Returns:
        The picture, or None when fewer than one version recorded the metric.
    """
    rows = []
    for v in versions:
        value = number((v.get("metrics") or {}).get(metric))
        if value is not None:
            rows.append((str(v.get("version")), value, v.get("validation_status")))
    if not rows:
        return None
    rows.sort(key=lambda r: (int(r[0]) if r[0].isdigit() else -1, r[0]))
    title = f"{metric} by version" + (f": {subject}" if subject else "")
    styles = {
        "passed": ("o", BLUE, "validation passed"),
        "failed": ("X", LIMIT, "validation failed"),
        None: ("s", GREY, "not validated"),
    }

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        xs = list(range(len(rows)))
        ax.plot(xs, [r[1] for r in rows], color=GREY, lw=1, zorder=1)
        seen: set[str] = set()
        for x, (ver, value, status) in zip(xs, rows, strict=True):
            marker, colour, label = styles.get(status, styles[None])
            ax.plot(
                x,
                value,
                marker,
                ms=9,
                color=colour,
                mec="white",
                mew=1,
                zorder=3,
                label=None if label in seen else label,
            )
            seen.add(label)
            if ver in (champion, challenger):
                role = "champion" if ver == champion else "challenger"
                ring = ORANGE if role == "champion" else BLUE
                ring_label = None if role in seen else role
                ax.plot(
                    x, value, "o", ms=17, mfc="none", mec=ring, mew=2, zorder=2, label=ring_label
                )
                seen.add(role)
        ax.set_xticks(xs, [f"v{r[0]}" for r in rows])
        ax.set_xlabel("Registered version (oldest to newest)")
        ax.set_ylabel(f"{metric} (own test split)")
        heading(fig, title)
        ax.margins(x=0.08, y=0.2)
        fig.legend(loc="outside lower center", ncols=4, fontsize=8)

    best = max(rows, key=lambda r: r[1])
    alt = (
        f"{metric} of {len(rows)} versions as recorded at training, each on its own test "
        f"split: " + ", ".join(f"v{r[0]} {short(r[1], 4)}" for r in rows) + f"; highest v{best[0]}."
    )
    return draw("metric-history", title, alt, paint, height=3.4, salt=salt)

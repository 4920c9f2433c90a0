"""A classifier's holdout curves: ROC, precision-recall and the reliability diagram.

Each is drawn from the evaluation stored with the validation report
(:mod:`mlsteward.governance.evaluation`): the curve whose area the metric-threshold gate
checked, thinned for storage, with the version's decision cut-off marked on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsteward.report.charts.svg import (
    BLUE,
    GREY,
    ORANGE,
    Picture,
    draw,
    heading,
    number,
    numbers,
    short,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RATE_TICKS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def _of(subject: str) -> str:
    return f" of {subject}" if subject else ""


def roc_picture(evaluation: dict[str, Any], subject: str = "", salt: str = "") -> Picture | None:
    """The ROC curve with its area (the gate's ``roc_auc``) and the cut-off's point; None
    without a stored curve."""
    roc = evaluation.get("roc") or {}
    fpr, tpr = numbers(roc.get("fpr")), numbers(roc.get("tpr"))
    if len(fpr) < 2 or len(fpr) != len(tpr):
        return None
    auc = number(roc.get("auc"))
    at = roc.get("at_threshold") or {}
    cut = number(evaluation.get("threshold"))
    at_fpr, at_tpr = number(at.get("fpr")), number(at.get("tpr"))
    rows = evaluation.get("rows")
    title = f"ROC curve{_of(subject)}"

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        label = "ROC curve" + (f" (AUC {auc:.3f})" if auc is not None else "")
        ax.plot(fpr, tpr, color=BLUE, lw=2, label=label, drawstyle="default")
        ax.plot([0, 1], [0, 1], color=GREY, lw=1, ls="--", label="chance (AUC 0.5)")
        if at_fpr is not None and at_tpr is not None:
            _cut_off(ax, at_fpr, at_tpr, cut, f"TPR {at_tpr:.2f}, FPR {at_fpr:.2f}")
        _rate_axes(ax)
        ax.set_xlabel("False-positive rate (share of negatives flagged)")
        ax.set_ylabel("True-positive rate (share of positives found)")
        heading(fig, title + (f", {rows:,} holdout rows" if isinstance(rows, int) else ""))
        ax.legend(loc="lower right")

    alt = (
        f"ROC curve{_of(subject)} on the holdout"
        + (f": area under the curve {auc:.3f}" if auc is not None else "")
        + (
            f"; at the cut-off the model finds {at_tpr:.0%} of positives and flags "
            f"{at_fpr:.0%} of negatives."
            if at_fpr is not None and at_tpr is not None
            else "."
        )
    )
    return draw("roc", title, alt, paint, height=4.4, salt=salt)


def pr_picture(evaluation: dict[str, Any], subject: str = "", salt: str = "") -> Picture | None:
    """The precision-recall curve with its average precision (the gate's ``pr_auc``), the
    no-skill line at the positive rate and the cut-off's point; None without a stored curve."""
    pr = evaluation.get("pr") or {}
    recall, precision = numbers(pr.get("recall")), numbers(pr.get("precision"))
    if len(recall) < 2 or len(recall) != len(precision):
        return None
    ap = number(pr.get("average_precision"))
    base = number(pr.get("positive_rate"))
    at = pr.get("at_threshold") or {}
    at_recall, at_precision = number(at.get("recall")), number(at.get("precision"))
    cut = number(evaluation.get("threshold"))
    title = f"Precision-recall curve{_of(subject)}"

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        label = "precision-recall" + (f" (average precision {ap:.3f})" if ap is not None else "")
        ax.plot(recall, precision, color=BLUE, lw=2, label=label, drawstyle="steps-post")
        if base is not None:
            ax.axhline(
                base, color=GREY, lw=1, ls="--", label=f"no skill (positive rate {base:.2f})"
            )
        if at_recall is not None and at_precision is not None:
            _cut_off(
                ax, at_recall, at_precision, cut,
                f"recall {at_recall:.2f}, precision {at_precision:.2f}",
            )  # fmt: skip
        _rate_axes(ax)
        ax.set_xlabel("Recall (share of positives found)")
        ax.set_ylabel("Precision (share of flagged rows that are positive)")
        heading(fig, title)
        ax.legend(loc="lower left")

    alt = (
        f"Precision-recall curve{_of(subject)} on the holdout"
        + (f": average precision {ap:.3f}" if ap is not None else "")
        + (f" against a positive rate of {base:.2f}." if base is not None else ".")
    )
    return draw("pr", title, alt, paint, height=4.4, salt=salt)


def calibration_picture(
    evaluation: dict[str, Any], subject: str = "", salt: str = ""
) -> Picture | None:
    """The reliability diagram: observed positive rate against the mean predicted probability
    per bin, the diagonal of perfect calibration, and how many rows each bin holds."""
    cal = evaluation.get("calibration") or {}
    predicted, observed = numbers(cal.get("mean_predicted")), numbers(cal.get("observed"))
    count = [int(c) for c in cal.get("count") or []]
    lower, upper = numbers(cal.get("lower")), numbers(cal.get("upper"))
    if not predicted or not (len(predicted) == len(observed) == len(count) == len(lower)):
        return None
    title = f"Calibration{_of(subject)}"
    worst = max(range(len(count)), key=lambda i: abs(observed[i] - predicted[i]))

    def paint(fig: Figure) -> None:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3.2, 1])
        top.plot([0, 1], [0, 1], color=GREY, lw=1, ls="--", label="perfectly calibrated")
        top.plot(
            predicted,
            observed,
            "-o",
            color=BLUE,
            lw=1.8,
            ms=5,
            label=f"model ({cal.get('bins', len(count))} equal-width bins)",
        )
        _rate_axes(top)
        top.set_xlabel("")
        top.set_ylabel("Observed positive rate (per bin)")
        heading(fig, title)
        top.legend(loc="upper left")
        widths = [u - lo for lo, u in zip(lower, upper, strict=True)]
        bottom.bar(
            lower, count, width=widths, align="edge", color=BLUE, alpha=0.35, edgecolor=BLUE, lw=0.6
        )
        bottom.set_ylabel("Rows")
        bottom.set_xlabel("Mean predicted probability (per bin)")
        bottom.set_xlim(0, 1)
        bottom.set_xticks(RATE_TICKS)
        bottom.grid(axis="x", visible=False)

    alt = (
        f"Reliability diagram{_of(subject)}: in {len(count)} bins of predicted probability "
        f"the observed positive rate is compared with the mean prediction; the largest gap "
        f"is {observed[worst] - predicted[worst]:+.2f} in the bin around "
        f"{predicted[worst]:.2f} ({count[worst]:,} rows)."
    )
    return draw("calibration", title, alt, paint, height=4.6, salt=salt)


def _cut_off(ax: Any, x: float, y: float, cut: Any, numbers: str) -> None:
    """The model's operating point on a curve, named by its cut-off and the rates there."""
    what = f"cut-off {short(cut)}" if cut is not None else "decision cut-off"
    ax.plot(
        x, y, "o", ms=8, color=ORANGE, mec="white", mew=1.2, zorder=5,
        label=f"{what}: {numbers}",
    )  # fmt: skip


def _rate_axes(ax: Any) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xticks(RATE_TICKS)
    ax.set_yticks(RATE_TICKS)

"""A model's quality on recent outcomes against its reference, and whether it got worse enough
to retrain.

Drift measures the quality of both windows with the metric definitions training and the gates
use (``training.metrics.evaluate_for``), so "RMSE rose by 12%" means here what it means at
promotion. The retrain policy watches one metric (``drift.performance_metric``, by default the
promotion's primary metric) in its own direction: a fall of ROC-AUC, a rise of RMSE. The limit
``drift.performance_drop`` is in the metric's units (``absolute``) or a share of the reference
value (``relative``), the natural reading for errors whose scale is the label's units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.governance import LOWER_IS_BETTER


def performance_metrics(cfg: ModelConfig) -> tuple[str, ...]:
    """The metrics compared between the windows: the model's own (``cfg.metric_names``), so a
    regression model under ``count:poisson`` also compares its Poisson deviance."""
    return cfg.metric_names


def watched_metric(cfg: ModelConfig) -> str:
    """The metric whose worsening retrains: ``drift.performance_metric``, else the primary one."""
    return cfg.drift.performance_metric or cfg.promotion.primary_metric


def measure_quality(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    label: str,
    prediction: str,
    cfg: ModelConfig,
    threshold: float | None,
) -> dict[str, Any]:
    """Quality on both windows with the definitions the validation gates use.

    Uses :func:`mlsteward.training.metrics.evaluate_for` (scikit-learn) rather than Evidently's
    metrics: Evidently 0.7 has no Brier score or deviances, and the gates' own definitions keep
    "the primary metric fell by X" comparable with the promotion gate.

    Args:
        reference: Rows with the outcome in ``label`` and the model's output in ``prediction``.
        current: The same, for the recent labelled rows.
        label: The outcome column.
        prediction: A classifier's probability column, a regression model's predicted value.
        cfg: The model's config (task, objective, the metrics it reports).
        threshold: A classifier's decision threshold for its label metrics; None for regression.

    Returns:
        ``{"reference": {...}, "current": {...}, "change": {metric: current - reference}}``,
        each side with the model's metrics and ``rows``, plus ``positive_rate`` (classification)
        or ``mean_prediction`` and ``mean_outcome`` (regression); a classifier's result also
        has ``decision_threshold``.
    """
    # xgboost and hyperopt come with it (~1.6 s): only when there are outcomes to score
    from mlsteward.training.metrics import evaluate_for

    metrics = performance_metrics(cfg)
    extra = ("mean_prediction", "mean_outcome") if cfg.is_regression else ("positive_rate",)
    cut = None if cfg.is_regression else threshold
    out: dict[str, Any] = {}
    for side, frame in (("reference", reference), ("current", current)):
        y = frame[label].to_numpy()
        p = frame[prediction].to_numpy(dtype=np.float64)
        m = evaluate_for(cfg, y, p, cut)
        out[side] = {k: m[k] for k in (*metrics, *extra, "rows")}
    out["change"] = {k: out["current"][k] - out["reference"][k] for k in metrics}
    if cut is not None:
        out["decision_threshold"] = float(cut)
    return out


@dataclass(frozen=True)
class QualityCheck:
    """The watched metric on both windows and how much worse the current one is.

    ``worsening`` is positive when the current window is worse, in the metric's units;
    ``relative`` is that as a share of the reference value (None when the reference is 0);
    ``amount`` is the one of the two ``performance_drop`` is compared with (per ``mode``).
    """

    metric: str
    reference: float
    current: float
    lower_is_better: bool
    worsening: float
    relative: float | None
    mode: str
    limit: float
    rows: int | None

    @property
    def amount(self) -> float | None:
        return self.worsening if self.mode == "absolute" else self.relative

    @property
    def worse(self) -> bool:
        """Worse by at least the limit: what retrains. Exactly the limit counts, also when the
        subtraction lands a rounding error below it (2.3 - 2.0 is 0.2999...98 in floats)."""
        amount = self.amount
        if amount is None or math.isnan(amount):
            return False
        return amount >= self.limit or math.isclose(amount, self.limit, rel_tol=1e-9)

    def _amount_text(self, value: float) -> str:
        return f"{value:.1%}" if self.mode == "relative" else f"{value:.4f}"

    def _limit_text(self) -> str:
        return f"{self._amount_text(self.limit)}" + (
            " of the reference" if self.mode == "relative" else ""
        )

    def reason(self) -> str:
        """The retrain reason: which metric, from what to what, by how much against the limit."""
        verb = "fell" if self.current < self.reference else "rose"
        head = (
            f"{self.metric} {verb} from {self.reference:.4f} to {self.current:.4f} on labelled "
            "recent data"
        )
        if self.mode == "absolute" and not self.lower_is_better:
            return f"{head} (drop {self.worsening:.4f} >= {self.limit:.4f})"
        amount = self.amount if self.amount is not None else float("inf")
        return f"{head} (worse by {self._amount_text(amount)} >= {self._limit_text()})"

    def summary(self) -> str:
        """One line for the drift report, whether or not it retrains."""
        rows = f" on {self.rows:,} labelled rows" if self.rows is not None else ""
        direction = "lower" if self.lower_is_better else "higher"
        head = (
            f"{self.metric} ({direction} is better): {self.reference:.4f} reference, "
            f"{self.current:.4f} current{rows}"
        )
        amount = self.amount
        if amount is None or math.isnan(amount):
            return f"{head}; not comparable (the metric is undefined on one window)"
        how = "worse" if amount > 0 else "better" if amount < 0 else "no worse"
        size = f" by {self._amount_text(abs(amount))}" if amount != 0 else ""
        verdict = "retrains" if self.worse else "below the limit"
        return (
            f"{head}; {how}{size} ({self.mode}), retrain at {self._limit_text()} worse: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities as None."""
        out = {**asdict(self), "worse": self.worse}
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()
        }


def performance_drop(performance: dict[str, Any] | None, metric: str) -> float | None:
    """How much worse the current window is on ``metric`` (positive = worse), if known."""
    if not performance:
        return None
    ref = (performance.get("reference") or {}).get(metric)
    cur = (performance.get("current") or {}).get(metric)
    if ref is None or cur is None:
        return None
    return float(cur - ref) if metric in LOWER_IS_BETTER else float(ref - cur)


def quality_check(performance: dict[str, Any] | None, cfg: ModelConfig) -> QualityCheck | None:
    """The watched metric's change against the policy, or None without both windows' values.

    Raises nothing for a metric the windows lack (a result measured before the config named
    another metric): there is then nothing to judge.
    """
    metric = watched_metric(cfg)
    worsening = performance_drop(performance, metric)
    if performance is None or worsening is None:
        return None
    ref = float(performance["reference"][metric])
    cur = float(performance["current"][metric])
    relative: float | None
    if math.isnan(worsening):
        relative = None
    elif ref != 0:
        relative = worsening / abs(ref)
    else:  # any change from a reference of 0 is infinitely large as a share of it
        relative = math.copysign(math.inf, worsening) if worsening else 0.0
    rows = performance["current"].get("rows")
    return QualityCheck(
        metric=metric,
        reference=ref,
        current=cur,
        lower_is_better=metric in LOWER_IS_BETTER,
        worsening=worsening,
        relative=relative,
        mode=cfg.drift.performance_drop_mode,
        limit=cfg.drift.performance_drop,
        rows=int(rows) if rows is not None and not math.isnan(float(rows)) else None,
    )


def quality_lines(performance: dict[str, Any] | None, cfg: ModelConfig) -> list[str]:
    """The lines the drift report shows about quality: the watched metric against its limit,
    then every compared metric's two values."""
    check = quality_check(performance, cfg)
    if performance is None or check is None:
        return []
    compared = ", ".join(
        f"{m} {_num(performance['reference'].get(m))} -> {_num(performance['current'].get(m))}"
        for m in performance.get("change", {})
    )
    return [check.summary(), f"all metrics (reference -> current): {compared}"]


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    f = float(value)
    return "n/a" if math.isnan(f) else f"{f:.4f}"

"""A champion's quality on the outcomes of its own predictions since it was promoted, against
the holdout value it was promoted on: the quality rule the post-promotion watch runs.

The drift run compares whole windows with the reference; the watch asks a narrower question
sooner: are the predictions *this version* made, now that their outcomes are in, as good as its
holdout said? Only the rows the version scored (``model_version``) since the promotion count.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.governance import LOWER_IS_BETTER
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.columns import drift_prediction_column


def version_quality(
    cfg: ModelConfig,
    version: str,
    *,
    since: datetime,
    promoted_value: float | None,
    threshold: float | None,
) -> Observation:
    """The quality rule on ``version``'s labelled predictions since ``since``."""
    rule = cfg.alerts.rules.quality_drop
    metric = rule.metric or cfg.drift.performance_metric or cfg.promotion.primary_metric
    pred = drift_prediction_column(cfg)
    frame = prediction_log.read_with_labels(cfg.name, since=since, columns=[pred, "model_version"])
    mine = frame[(frame["model_version"].astype(str) == str(version)) & frame["label"].notna()]
    rows = len(mine)
    if promoted_value is None or rows < rule.min_labelled_rows:
        return Observation(
            rule="quality_drop",
            breached=None,
            subject=metric,
            summary=f"v{version}: {rows:,} labelled predictions since promotion "
            f"(needs {rule.min_labelled_rows:,})",
            version=version,
        )
    # xgboost and hyperopt come with it (~1.6 s): only when there are outcomes to score
    from mlsteward.training.metrics import evaluate_for

    y = mine["label"].to_numpy()
    p = mine[pred].to_numpy(dtype=np.float64)
    value = float(evaluate_for(cfg, y, p, None if cfg.is_regression else threshold)[metric])
    worse = value - promoted_value if metric in LOWER_IS_BETTER else promoted_value - value
    amount = worse if rule.mode == "absolute" else worse / abs(promoted_value or math.inf)
    return Observation(
        rule="quality_drop",
        breached=amount > rule.max_drop,
        subject=metric,
        summary=f"v{version} {metric} {value:.4f} on {rows:,} labelled predictions since "
        f"promotion, {promoted_value:.4f} at promotion (alert at {rule.max_drop:g} worse, "
        f"{rule.mode})",
        value=amount,
        limit=rule.max_drop,
        version=version,
        details={"metric": metric, "current": value, "promoted": promoted_value, "rows": rows},
    )

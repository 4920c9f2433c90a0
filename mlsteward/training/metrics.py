"""A model's quality as numbers: classification metrics at the chosen cut-off, regression
metrics in the label's units.

Training, validation, drift with outcomes and the model card all call these, so a metric has
one definition wherever a version is judged. Which metrics a model reports follows its config
(``ModelConfig.metric_names``): a deviance only where the objective keeps predictions positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.training import TuningConfig


def choose_threshold(y: np.ndarray, proba: np.ndarray, strategy: str, value: float) -> float:
    """Pick the label cut-off on validation data, never on test (that would leak)."""
    if strategy == "fixed":
        return float(value)
    precision, recall, thresholds = skm.precision_recall_curve(y, proba)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    if len(thresholds) == 0:
        return float(value)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def evaluate(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Classification: ranking and calibration metrics, plus label metrics at the cut-off."""
    y = np.asarray(y).astype(int)
    pred = (proba >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y, proba)) if both_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, proba)) if both_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, proba)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "threshold": float(threshold),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def evaluate_regression(y: Any, prediction: Any, tuning: TuningConfig) -> dict[str, float]:
    """Regression: errors in the label's units, R², the objective's own deviance where it is a
    count or Tweedie model, and calibration in the large (mean prediction over mean outcome:
    1 is unbiased, 1.1 predicts 10% too much on average).

    A deviance needs predictions above 0, which only the log-link objectives guarantee; R² is
    undefined (NaN) on a constant outcome, as is the ratio on an outcome that averages 0.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    mean_y, mean_pred = float(y.mean()), float(pred.mean())
    out = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)) if np.ptp(y) > 0 else float("nan"),
        "median_absolute_error": float(skm.median_absolute_error(y, pred)),
        "calibration_ratio": mean_pred / mean_y if mean_y != 0 else float("nan"),
    }
    positive = np.clip(pred, 1e-9, None)
    if tuning.objective == "count:poisson":
        out["mean_poisson_deviance"] = float(skm.mean_poisson_deviance(y, positive))
    elif tuning.objective == "reg:tweedie":
        out["mean_tweedie_deviance"] = float(
            skm.mean_tweedie_deviance(y, positive, power=tuning.tweedie_variance_power)
        )
    return {
        **out,
        "mean_prediction": mean_pred,
        "mean_outcome": mean_y,
        "rows": float(len(y)),
    }


def evaluate_for(
    cfg: ModelConfig, y: Any, prediction: Any, threshold: float | None
) -> dict[str, float]:
    """The model's own metrics: classification at ``threshold``, or regression."""
    if cfg.is_regression:
        return evaluate_regression(y, prediction, cfg.tuning)
    if threshold is None:
        raise ValueError(f"{cfg.name}: a classification model is evaluated at a cut-off")
    return evaluate(np.asarray(y), np.asarray(prediction, dtype=np.float64), threshold)

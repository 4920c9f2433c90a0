"""The holdout evaluation behind the gates' numbers, compact enough to store with the report.

:func:`evaluate_holdout` runs inside :func:`~mlsteward.governance.validation.score_holdout`, on
the same labels and predictions the metrics and the fairness gate read, so a curve drawn from
it is the curve whose area the threshold gate checked, never a re-scoring that could differ.
It is stored in the validation report (``details["evaluation"]`` of the ``metric_thresholds``
gate, see :func:`attach`) and drawn by :mod:`mlsteward.report.charts`.

It runs in every training flow, so it is kept cheap and small: curves are thinned to at most
:data:`MAX_CURVE_POINTS` points, the scatter holds at most :data:`MAX_SAMPLE_ROWS` rows and the
SHAP sample a prefix of the same seeded sample, as many rows as exact TreeSHAP explains within
:data:`SHAP_BUDGET_SECONDS` (:func:`shap_rows`), numbers keep :data:`DIGITS` significant
digits, and SHAP comes from XGBoost's own ``pred_contribs`` (the values ``shap.TreeExplainer``
delegates to for XGBoost) without importing shap. Everything is plain JSON (``None`` for a
missing value); a regression model's residuals per group cover every holdout row.

Shape (``schema`` 1); keys absent where they do not apply to the task::

    {"schema": 1, "task": "binary_classification" | "regression", "rows": n,
     "threshold": cut-off | None, "sample": {"rows": k, "of": n, "seed": 0},
     "roc": {"fpr": [...], "tpr": [...], "auc": a, "at_threshold": {"fpr", "tpr"}},
     "pr": {"recall": [...], "precision": [...], "average_precision": ap,
            "positive_rate": p, "at_threshold": {"recall", "precision"}},
     "calibration": {"bins": 10, "lower": [...], "upper": [...], "count": [...],
                     "mean_predicted": [...], "observed": [...]},
     "regression": {"actual": [...], "predicted": [...],
                    "residuals": {attribute: [{"group", "size", "gated", "mean", "std",
                                               "q05", "q25", "median", "q75", "q95"}]}},
     "shap": {"rows": k, "features": [...], "categorical": [...],
              "scale": "log-odds" | "log" | "identity", "base_value": b,
              "values": [[...]], "contributions": [[...]], "mean_abs": {feature: m}}}
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.training import LOG_LINK_OBJECTIVES
from mlsteward.governance.evaluation_format import SCHEMA
from mlsteward.governance.fairness import AttributeFairness, group_labels
from mlsteward.governance.registry import VerifiedModel

MAX_CURVE_POINTS = 200
MAX_SAMPLE_ROWS = 500
MIN_SHAP_ROWS = 50
SHAP_BUDGET_SECONDS = 0.1
"""What the SHAP sample may cost on this machine kind (2 cores): exact TreeSHAP takes about
``SECONDS_PER_LEAF_DEPTH2 * leaves * depth**2`` per row, so a large model explains fewer rows
(never fewer than MIN_SHAP_ROWS) and a small one up to MAX_SAMPLE_ROWS. The count follows from
the model alone, so the same model always explains the same rows."""
SECONDS_PER_LEAF_DEPTH2 = 8e-9
CALIBRATION_BINS = 10
SAMPLE_SEED = 0
DIGITS = 4
STAT_KEYS = ("mean", "std", "q05", "q25", "median", "q75", "q95")


def evaluate_holdout(
    cfg: ModelConfig,
    verified: VerifiedModel,
    x: pd.DataFrame,
    y: np.ndarray,
    prediction: np.ndarray,
    threshold: float | None,
    metrics: dict[str, float],
    fairness: dict[str, AttributeFairness],
    holdout: pd.DataFrame,
    *,
    explain: bool = True,
) -> dict[str, Any]:
    """The payload for one scored holdout (see the module docstring for its shape).

    Args:
        cfg: The model config (task, sensitive attributes).
        verified: The model that made ``prediction`` (its booster explains the sample).
        x: The encoded holdout, the matrix the model predicted on.
        y: The outcomes (0/1 or numbers), aligned with ``prediction``.
        prediction: A classifier's probabilities, or a regression model's predicted values.
        threshold: The classifier's cut-off (``None`` for regression).
        metrics: The metrics computed on the same rows: the legend's areas are these numbers.
        fairness: The per-attribute assessments, whose group order and ``gated`` flags the
            residuals follow.
        holdout: The raw holdout (the sensitive columns the groups are cut from).
        explain: Explain a sample with SHAP (the costly part); a score that is only compared
            with, such as the champion's, needs no explanations.
    """
    n = len(y)
    order = _sample_order(n)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "task": cfg.task,
        "rows": n,
        "threshold": threshold,
        "sample": {"rows": len(order), "of": n, "seed": SAMPLE_SEED},
    }
    if cfg.is_regression:
        out["regression"] = _regression(cfg, y, prediction, np.sort(order), fairness, holdout)
    elif len(np.unique(y)) == 2 and threshold is not None:
        out |= _classification(y.astype(np.int64), prediction, threshold, metrics)
    if explain and n:
        out["shap"] = _shap(verified, x, np.sort(order[: shap_rows(verified)]))
    return out


# -- sampling and numbers ---------------------------------------------------------------------


def _sample_order(n: int) -> np.ndarray:
    """At most MAX_SAMPLE_ROWS row positions in a seeded random order: any prefix is a random
    sample, so the scatter and the (possibly smaller) SHAP sample share their rows."""
    rng = np.random.default_rng(SAMPLE_SEED)
    return rng.permutation(n)[:MAX_SAMPLE_ROWS]


def shap_rows(verified: VerifiedModel) -> int:
    """How many rows the SHAP sample explains within SHAP_BUDGET_SECONDS (see there)."""
    booster = verified.model.get_booster()
    trees = max(booster.num_boosted_rounds(), 1)
    splits = booster.get_score(importance_type="weight")  # splits per feature, over all trees
    leaves = trees + sum(float(n) for n in splits.values() if isinstance(n, (int, float)))
    try:
        config = json.loads(booster.save_config())
        depth = int(config["learner"]["gradient_booster"]["tree_train_param"]["max_depth"])
    except (KeyError, TypeError, ValueError):
        depth = 0
    if depth <= 0:  # unlimited depth (lossguide): a balanced tree's, twice over
        depth = 2 * math.ceil(math.log2(max(leaves / trees, 2.0))) + 1
    per_row = SECONDS_PER_LEAF_DEPTH2 * leaves * depth**2
    return int(min(MAX_SAMPLE_ROWS, max(MIN_SHAP_ROWS, SHAP_BUDGET_SECONDS // per_row)))


def _rounded(values: np.ndarray, digits: int = DIGITS) -> np.ndarray:
    """``digits`` significant digits, vectorised (JSON stays short: 0.1235, not 0.12345678);
    NaN and infinities pass through."""
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(a)))
    exponent = np.where(np.isfinite(exponent), exponent, 0.0)
    shift = (digits - 1 - exponent).astype(np.int64)
    up = np.power(10.0, np.clip(shift, 0, 300))  # exact powers of ten, so k / 10**s is
    down = np.power(10.0, np.clip(-shift, 0, 300))  # the shortest decimal that reads back
    return np.where(shift >= 0, np.round(a * up) / up, np.round(a / down) * down)


def _numbers(values: np.ndarray) -> list[float | None]:
    """Rounded plain floats; NaN and infinities become None (JSON has neither)."""
    a = _rounded(values)
    out: list[float | None] = a.tolist()
    if not np.isfinite(a).all():
        out = [v if math.isfinite(v) else None for v in out]  # type: ignore[arg-type]
    return out


def _matrix(values: np.ndarray) -> list[list[float | None]]:
    """Rows of rounded plain floats, in one vectorised pass; NaN becomes None."""
    a = _rounded(values)
    out: list[list[float | None]] = a.tolist()
    if not np.isfinite(a).all():
        out = [[v if math.isfinite(v) else None for v in row] for row in out]  # type: ignore[arg-type]
    return out


def _number(value: float) -> float | None:
    return _numbers(np.array([value]))[0]


def _thin(x: np.ndarray, y: np.ndarray, limit: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` points spread evenly along the curve's length, the ends
    kept: a step curve keeps its corners' shape where a plain stride would cut them."""
    if len(x) <= limit:
        return np.arange(len(x))
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    targets = np.linspace(0.0, length[-1], limit)
    picked = np.clip(np.searchsorted(length, targets), 0, len(x) - 1)
    return np.unique(np.concatenate([[0], picked, [len(x) - 1]]))


# -- classification ---------------------------------------------------------------------------


def _classification(
    y: np.ndarray, proba: np.ndarray, threshold: float, metrics: dict[str, float]
) -> dict[str, Any]:
    """ROC and precision-recall curves as scikit-learn computes them for the gate's
    ``roc_auc`` and ``pr_auc`` (whose values the legend shows), each with the cut-off's point,
    and the reliability bins."""
    fpr, tpr, _ = skm.roc_curve(y, proba)
    keep = _thin(fpr, tpr)
    precision, recall, _ = skm.precision_recall_curve(y, proba)
    keep_pr = _thin(recall, precision)
    positives = float(y.sum())
    negatives = float(len(y)) - positives
    chosen = proba >= threshold
    tp = float(np.sum(chosen & (y == 1)))
    fp = float(np.sum(chosen & (y == 0)))
    return {
        "roc": {
            "fpr": _numbers(fpr[keep]),
            "tpr": _numbers(tpr[keep]),
            "auc": _number(metrics.get("roc_auc", math.nan)),
            "at_threshold": {"fpr": _number(fp / negatives), "tpr": _number(tp / positives)},
        },
        "pr": {
            "recall": _numbers(recall[keep_pr]),
            "precision": _numbers(precision[keep_pr]),
            "average_precision": _number(metrics.get("pr_auc", math.nan)),
            "positive_rate": _number(positives / len(y)),
            "at_threshold": {
                "recall": _number(tp / positives),
                "precision": _number(tp / (tp + fp)) if tp + fp else None,
            },
        },
        "calibration": _calibration(y, proba),
    }


def _calibration(y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Equal-width bins of the predicted probability: how many rows fell in each, their mean
    prediction and the observed positive rate (empty bins are left out)."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    which = np.clip(np.searchsorted(edges, proba, side="right") - 1, 0, CALIBRATION_BINS - 1)
    count = np.bincount(which, minlength=CALIBRATION_BINS).astype(np.float64)
    total_p = np.bincount(which, weights=proba, minlength=CALIBRATION_BINS)
    total_y = np.bincount(which, weights=y.astype(np.float64), minlength=CALIBRATION_BINS)
    used = count > 0
    return {
        "bins": CALIBRATION_BINS,
        "lower": _numbers(edges[:-1][used]),
        "upper": _numbers(edges[1:][used]),
        "count": [int(c) for c in count[used]],
        "mean_predicted": _numbers(total_p[used] / count[used]),
        "observed": _numbers(total_y[used] / count[used]),
    }


# -- regression -------------------------------------------------------------------------------


def _regression(
    cfg: ModelConfig,
    y: np.ndarray,
    prediction: np.ndarray,
    sample: np.ndarray,
    fairness: dict[str, AttributeFairness],
    holdout: pd.DataFrame,
) -> dict[str, Any]:
    """The sampled (actual, predicted) pairs and, per sensitive attribute, each group's
    residual spread (prediction - outcome) on every holdout row, in the fairness table's
    group order."""
    residual = prediction - y
    by_attribute: dict[str, list[dict[str, Any]]] = {}
    for attribute in cfg.sensitive_attributes:
        assessed = fairness.get(attribute.column)
        if assessed is None or attribute.column not in holdout.columns:
            continue
        labels = group_labels(holdout[attribute.column].reset_index(drop=True), attribute)
        codes = labels.to_numpy()
        rows = []
        for g in assessed.groups:
            r = residual[codes == g["group"]]
            if not len(r):
                continue
            q = np.quantile(r, [0.05, 0.25, 0.5, 0.75, 0.95])
            stats = _numbers(np.array([r.mean(), r.std(), *q]))
            rows.append(
                {
                    "group": str(g["group"]),
                    "size": len(r),
                    "gated": bool(g.get("gated", True)),
                    **dict(zip(STAT_KEYS, stats, strict=True)),
                }
            )
        by_attribute[attribute.column] = rows
    return {
        "actual": _numbers(y[sample]),
        "predicted": _numbers(prediction[sample]),
        "residuals": by_attribute,
    }


# -- SHAP -------------------------------------------------------------------------------------


def _scale(verified: VerifiedModel) -> str:
    """What a contribution adds to: log-odds (classifier), the log of the prediction
    (log-link regression) or the prediction itself."""
    if not verified.is_regression:
        return "log-odds"
    return "log" if verified.objective in LOG_LINK_OBJECTIVES else "identity"


def _shap(verified: VerifiedModel, x: pd.DataFrame, sample: np.ndarray) -> dict[str, Any]:
    """Exact TreeSHAP on the sampled rows, from XGBoost's ``pred_contribs`` on the margin
    scale (contributions plus the base value give each row's margin); ``of`` is the size of
    the scatter sample it was drawn from."""
    import xgboost as xgb  # already loaded: the verified model is an XGBoost model

    enc = verified.info.encoding
    rows = x.iloc[sample]
    matrix = xgb.DMatrix(
        rows.to_numpy(dtype=np.float32),
        feature_names=list(enc.columns),
        feature_types=enc.feature_types,
        enable_categorical=True,
    )
    raw = np.asarray(
        verified.model.get_booster().predict(matrix, pred_contribs=True), dtype=np.float64
    )
    contributions = raw[:, :-1] if len(raw) else np.zeros((0, len(enc.columns)))
    base = float(raw[0, -1]) if len(raw) else math.nan
    mean_abs = np.abs(contributions).mean(axis=0) if len(raw) else np.zeros(len(enc.columns))
    return {
        "rows": len(sample),
        "features": list(enc.columns),
        "categorical": [c for c in enc.columns if enc.dtypes.get(c) == "category"],
        "scale": _scale(verified),
        "base_value": _number(base),
        "values": _matrix(rows.to_numpy(dtype=np.float64)),
        "contributions": _matrix(contributions),
        "mean_abs": dict(zip(enc.columns, _numbers(mean_abs), strict=True)),
    }

"""Batch scoring as plain functions: predictions and per-row SHAP explanations.

A classification version gives a probability and a label at its decision threshold; a
regression version gives one number in the label's units (``prediction``), with no probability,
label or threshold.

Nothing here knows about Prefect or MLflow: the caller loads a SHA-256-verified model
(``governance.load_version``) and passes a frame of raw features in; a typed ``ScoredBatch``
comes out, ready for the prediction log.

Choices, and why:

* **Inputs are encoded with the version's recorded encoding** (``VersionInfo.encoding``), not
  with today's config: category codes must be the ones the model was trained on. Columns are
  selected by name (``training.encode``), so a frame whose columns arrive in any order (Feast
  online results do) scores identically.
* **SHAP path: ``shap.TreeExplainer`` on the native XGBoost model.** Probed with shap 0.51 and
  xgboost 3.2 on a model with categorical features (``feature_types`` 'c', partition splits such
  as ``chest_pain_type:{1,2}``): TreeExplainer accepts it and, for XGBoost, delegates to
  XGBoost's own TreeSHAP (``Booster.predict(..., pred_contribs=True)``), which follows
  categorical splits and missing-value branches exactly. Its values were identical (max
  difference 0.0) to ``pred_contribs`` on a ``DMatrix(enable_categorical=True)``, with NaNs in
  categorical and numeric columns too, and contributions + base value equal the margin
  (log-odds) to ~2e-6. The unit tests pin that identity, so a shap release that broke it would
  fail loudly. The base value is read from ``Explanation.base_values`` (``expected_value``
  changes shape after the first call in shap 0.51).
* **SHAP runs once per batch**, on the whole encoded frame, and only when explanations are
  asked for (``top_k > 0``); otherwise one row is explained just to report the base value.
* **Explanation columns are flat**: ``shap_1_feature``, ``shap_1_value``, ...,
  ``shap_k_feature``, ``shap_k_value`` (string / float64), rank 1 = largest ``|SHAP|``. Flat
  scalar columns write to parquet without nested types, read back as plain pandas columns
  (list columns come back as numpy object arrays), and are directly filterable in
  pyarrow/duckdb (e.g. "how often is age the top reason"). ``top_k=0`` adds no such columns.
* **A regression model's explanations are in the target's units.** A log-link objective
  (``count:poisson``, ``reg:tweedie``) explains the log of the prediction; its contributions
  and base value are restated by ``contributions.in_target_units`` so that they add up to the
  predicted value itself (days, not log-days). Identity-link objectives are unchanged, and so
  is classification (log-odds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import shap

from mlsteward.config.models import ModelConfig
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import encode
from mlsteward.governance.registry import VerifiedModel
from mlsteward.monitoring.columns import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    PROBA_COLUMN,
    SCORED_AT_COLUMN,
    VERSION_COLUMN,
    drift_prediction_column,
)
from mlsteward.monitoring.contributions import in_target_units

__all__ = [
    "LABEL_COLUMN",
    "PREDICTION_COLUMN",
    "PROBA_COLUMN",
    "SCORED_AT_COLUMN",
    "VERSION_COLUMN",
    "ScoredBatch",
    "check_task",
    "drift_prediction_column",
    "explain",
    "explain_in_units",
    "score_frame",
    "shap_feature_column",
    "shap_value_column",
    "top_k_contributions",
]


def shap_feature_column(rank: int) -> str:
    """Name of the column holding the rank-th (1-based) most important feature of a row."""
    return f"shap_{rank}_feature"


def shap_value_column(rank: int) -> str:
    """Name of the column holding the rank-th (1-based) largest SHAP value (log-odds for a
    classifier, the target's units for a regression model)."""
    return f"shap_{rank}_value"


def check_task(cfg: ModelConfig, verified: VerifiedModel) -> None:
    """Refuse a version whose kind of model is not the config's task.

    A config switched to regression while the champion is still a classifier (or back) would
    otherwise score probabilities as amounts, or amounts against a threshold.

    Raises:
        MlstewardError: naming the version, what it is and what the config says.
    """
    if verified.is_regression == cfg.is_regression:
        return
    kind = "a regression model" if verified.is_regression else "a classifier"
    raise MlstewardError(
        f"{cfg.name} v{verified.info.version} is {kind} ({verified.objective}) but the config "
        f"says task {cfg.task}: train and promote a {cfg.task} version first"
    )


@dataclass
class ScoredBatch:
    """One scored batch.

    ``frame`` holds, per input row and in input order (fresh RangeIndex): the entity and
    event-time columns, the raw feature columns, then for a classifier ``prediction_proba`` and
    ``prediction`` (label at ``threshold``), for a regression model ``prediction`` (the value,
    float64) alone; then ``model_version``, ``scored_at`` (UTC) and the flat top-k explanation
    columns. ``base_value`` is what each row's SHAP values add to: the expected margin
    (log-odds) of a classifier, the base prediction in the target's units of a regression model.
    ``threshold`` is None for a regression model.
    """

    frame: pd.DataFrame
    model: str
    version: str
    threshold: float | None
    base_value: float
    top_k: int

    @property
    def is_regression(self) -> bool:
        return self.threshold is None


def _top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices per row, largest ``|value|`` first; ties keep column order."""
    order = np.argsort(-np.abs(values), axis=1, kind="stable")
    return order[:, :k]


def top_k_contributions(
    explainer_values: np.ndarray, columns: list[str], k: int
) -> list[list[tuple[str, float]]]:
    """Per row, the ``k`` features with the largest absolute SHAP value, largest first.

    Args:
        explainer_values: ``(rows, features)`` SHAP values, columns in ``columns`` order.
        columns: Feature names of the value columns.
        k: How many to keep; more than the number of features keeps all of them.

    Returns:
        One list per row of ``(feature, value)`` pairs.
    """
    values = np.asarray(explainer_values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(columns):
        raise ValueError(
            f"SHAP values of shape {values.shape} do not match {len(columns)} feature names"
        )
    k = max(0, min(int(k), len(columns)))
    if k == 0:
        return [[] for _ in range(len(values))]
    idx = _top_k_indices(values, k)
    picked = np.take_along_axis(values, idx, axis=1)
    names = np.asarray(columns, dtype=object)[idx]
    return [
        list(zip(n, map(float, v), strict=True))
        for n, v in zip(names.tolist(), picked, strict=True)
    ]


def explain(verified: VerifiedModel, encoded: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Exact TreeSHAP contributions on the margin scale per row and feature, and the base value.

    ``values.sum(axis=1) + base_value`` equals the model's margin for every row (log-odds; the
    log of the prediction for a log-link regression model, see :func:`explain_in_units`).
    """
    explainer = shap.TreeExplainer(verified.model)
    if encoded.empty:
        # The base value does not depend on the input; explain one all-missing row to get it.
        probe = pd.DataFrame({c: np.array([np.nan], dtype=np.float32) for c in encoded.columns})
        explanation = explainer(probe)
        return np.zeros((0, encoded.shape[1])), float(np.ravel(explanation.base_values)[0])
    explanation = explainer(encoded)
    values = np.asarray(explanation.values, dtype=np.float64)
    base = np.ravel(np.asarray(explanation.base_values, dtype=np.float64))
    return values, float(base[0])


def explain_in_units(verified: VerifiedModel, encoded: pd.DataFrame) -> tuple[np.ndarray, float]:
    """:func:`explain` in the units the model predicts in: a log-link regression model's
    contributions and base value restated so that, per row, they add up to the predicted value;
    any other model's as :func:`explain` gives them."""
    values, base = explain(verified, encoded)
    if not verified.is_regression:
        return values, base
    if len(values) == 0:
        # the base alone: with no contribution, in_target_units gives exp(base) for a log link
        _, units = in_target_units(
            np.zeros((1, values.shape[1])), np.array([base]), verified.objective
        )
        return values, float(units[0])
    restated, units = in_target_units(values, np.full(len(values), base), verified.objective)
    return np.asarray(restated, dtype=np.float64), float(np.ravel(units)[0])


def _utc(ts: datetime | None) -> pd.Timestamp:
    stamp = pd.Timestamp(ts if ts is not None else datetime.now(UTC))
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def score_frame(
    cfg: ModelConfig,
    verified: VerifiedModel,
    features: pd.DataFrame,
    *,
    top_k: int | None = None,
    scored_at: datetime | None = None,
) -> ScoredBatch:
    """Score raw feature rows with a verified model and explain each prediction.

    A classifier gives ``prediction_proba`` and the label ``prediction`` at the version's
    decision threshold; a regression model gives ``prediction``, the predicted value, and its
    explanations in the target's units.

    Args:
        cfg: The model's config (entity/timestamp column names, label values, default top_k).
        verified: The SHA-256-verified model and its registered version.
        features: Raw rows with the entity, event-time and every recorded feature column (any
            column order; extra columns are ignored).
        top_k: SHAP contributions kept per row; ``None`` uses ``cfg.scoring.top_k``; 0 skips
            explanation columns (and the per-row SHAP computation).
        scored_at: Scoring time recorded on every row (naive means UTC); default now.

    Raises:
        ValueError: a required column is missing, or ``top_k`` is negative.
        MlstewardError: the version is not a model of the config's task.
    """
    check_task(cfg, verified)
    info = verified.info
    enc = info.encoding
    entity, ts_col = cfg.source.entity, cfg.timestamp_column
    missing = [c for c in (entity, ts_col, *enc.columns) if c not in features.columns]
    if missing:
        raise ValueError(
            f"{cfg.name} v{info.version}: cannot score, missing column(s) {missing} "
            f"(the version was trained on {enc.columns})"
        )
    k = cfg.scoring.top_k if top_k is None else int(top_k)
    if k < 0:
        raise ValueError(f"top_k must be >= 0, got {k}")
    k = min(k, len(enc.columns))
    # never the version's decision_threshold tag for a regression model: it reads 0.5 untagged
    threshold = None if verified.is_regression else info.decision_threshold

    encoded = encode(features, enc)  # selects by name, in the recorded order
    out = features[[entity, ts_col, *enc.columns]].reset_index(drop=True)
    prediction = verified.predict(encoded)
    if threshold is None:
        out[PREDICTION_COLUMN] = prediction
    else:
        proba = prediction
        negative, positive = cfg.label_values
        out[PROBA_COLUMN] = proba
        out[LABEL_COLUMN] = np.where(proba >= threshold, positive, negative).astype(np.int64)
    out[VERSION_COLUMN] = str(info.version)
    out[SCORED_AT_COLUMN] = pd.Series(_utc(scored_at), index=out.index).astype(
        "datetime64[us, UTC]"
    )

    values, base_value = explain_in_units(verified, encoded if k else encoded.iloc[:0])
    if k:
        idx = _top_k_indices(values, k)
        picked = np.take_along_axis(values, idx, axis=1)
        names = np.asarray(enc.columns, dtype=object)[idx]
        explanation: dict[str, Any] = {}
        for r in range(k):
            explanation[shap_feature_column(r + 1)] = pd.array(names[:, r], dtype="string")
            explanation[shap_value_column(r + 1)] = picked[:, r]
        out = pd.concat([out, pd.DataFrame(explanation, index=out.index)], axis=1)

    return ScoredBatch(
        frame=out,
        model=cfg.name,
        version=str(info.version),
        threshold=threshold,
        base_value=base_value,
        top_k=k,
    )

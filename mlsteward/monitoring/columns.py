"""The names of the columns a scored batch carries, and which of them stands for the model's
output: one light module (no SHAP, no XGBoost), so drift and the log readers can name them
without importing scoring."""

from __future__ import annotations

from mlsteward.config.models import ModelConfig

PROBA_COLUMN = "prediction_proba"
"""A classifier's probability of the positive class."""
PREDICTION_COLUMN = "prediction"
"""A regression model's predicted value (float); a classifier's label (int) has the same name."""
LABEL_COLUMN = PREDICTION_COLUMN
VERSION_COLUMN = "model_version"
SCORED_AT_COLUMN = "scored_at"


def drift_prediction_column(cfg: ModelConfig) -> str:
    """The column whose drift stands for the model's output: the probability of a classifier,
    the predicted value of a regression model."""
    return PREDICTION_COLUMN if cfg.is_regression else PROBA_COLUMN

"""Config sections for monitoring: how drift is measured and acted on, and batch scoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsteward.config.base import StrictModel

DriftMethod = Literal[
    "wasserstein", "ks", "psi", "kl_div", "jensenshannon", "chisquare", "z", "anderson",
    "hellinger", "mannw", "ed", "es", "t_test", "empirical_mmd", "cramer_von_mises",
    "fisher_exact", "g_test", "TVD",
]  # fmt: skip


class ColumnDrift(StrictModel):
    """Per-column override of the drift test."""

    method: DriftMethod | None = Field(
        default=None, description="Unset: the method of the column's type."
    )
    threshold: float | None = Field(default=None, gt=0, description="Unset: drift.threshold.")


class DriftConfig(StrictModel):
    """How drift is measured (Evidently methods per column type) and when it means retrain."""

    numeric_method: DriftMethod = Field(
        default="wasserstein", description="Evidently's default for numeric columns >1000 rows."
    )
    categorical_method: DriftMethod = Field(
        default="jensenshannon", description="Evidently's default for categorical columns."
    )
    threshold: float | None = Field(
        default=None, gt=0, description="None: Evidently's default threshold for each method."
    )
    columns: dict[str, ColumnDrift] = Field(
        default_factory=dict, description="Per-column overrides of method and threshold."
    )
    prediction_method: DriftMethod = Field(
        default="wasserstein",
        description="Drift test of the model's output: the predicted probability, or a "
        "regression model's predicted value.",
    )
    window_days: float = Field(default=7, gt=0, description="Prediction-log window compared.")
    max_rows: int = Field(
        default=200_000, ge=1_000, description="Stratified sample cap per side (recorded)."
    )
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="Retrain when this share of features drifts."
    )
    key_features: list[str] = Field(
        default_factory=list, description="Retrain when any of these drifts, whatever the share."
    )
    performance_drop: float = Field(
        default=0.05,
        gt=0,
        description="With outcomes: retrain when the quality metric gets this much worse "
        "(ROC-AUC down 0.05; for regression, e.g. RMSE up by 0.1 with drop_mode relative).",
    )
    performance_metric: str | None = Field(
        default=None,
        description="The quality metric watched once outcomes arrive; unset: "
        "promotion.primary_metric.",
    )
    performance_drop_mode: Literal["absolute", "relative"] = Field(
        default="absolute",
        description="relative: performance_drop is a share of the reference value.",
    )
    min_labelled_rows: int = Field(
        default=200,
        ge=1,
        description=(
            "Target drift and quality need at least this many current rows with an outcome: "
            "outcomes arrive late, and a metric on a few dozen rows moves more by chance than "
            "performance_drop."
        ),
    )
    cooldown_hours: float = Field(
        default=24, ge=0, description="At most one drift-triggered retrain per model per window."
    )
    schedule: str | None = Field(default="0 6 * * *", description="Cron (UTC) of drift runs.")


class ScoringConfig(StrictModel):
    """Batch scoring: explanations per row and the scoring schedule."""

    top_k: int = Field(default=3, ge=0, le=50, description="SHAP contributions kept per row.")
    schedule: str | None = Field(default="0 * * * *", description="Cron (UTC) of score runs.")

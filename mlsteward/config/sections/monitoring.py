"""Config sections for monitoring: how drift is measured and acted on, and batch scoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlsteward.config.base import StrictModel

DriftMethod = Literal[
    "wasserstein", "ks", "psi", "kl_div", "jensenshannon", "chisquare", "z", "anderson",
    "hellinger", "mannw", "ed", "es", "t_test", "empirical_mmd", "cramer_von_mises",
    "fisher_exact", "g_test", "TVD", "chisquare_two_sample",
]  # fmt: skip
"""Evidently's method names, and ``chisquare_two_sample``: a chi-square test of homogeneity on
both sides' counts, which mlsteward registers with Evidently (Evidently's own ``chisquare``
takes the reference's shares as exact, so it flags unshifted data far more often than its
p-value says unless the reference is much larger than the current window)."""

MethodChoice = Literal["auto"] | DriftMethod
"""``auto``: chosen by sample size (see :class:`DriftConfig`), else one method always."""


class ColumnDrift(StrictModel):
    """Per-column override of the drift test."""

    method: MethodChoice | None = Field(
        default=None, description="Unset: the method of the column's type (auto by default)."
    )
    threshold: float | None = Field(
        default=None,
        gt=0,
        description="Unset: drift.threshold. With method auto it is the distance's threshold "
        "(samples above drift.small_sample_rows); the p-value tests of smaller samples use "
        "drift.p_value.",
    )


class DriftConfig(StrictModel):
    """How drift is measured (Evidently methods per column type) and when it means retrain."""

    numeric_method: MethodChoice = Field(
        default="auto",
        description="auto: K-S (ks, a p-value test) while the smaller side has at most "
        "small_sample_rows rows, Wasserstein distance normed by the reference's SD "
        "(wasserstein) above; or one method always.",
    )
    categorical_method: MethodChoice = Field(
        default="auto",
        description="auto: a Z-test (z) for two categories, a two-sample chi-square test "
        "(chisquare_two_sample) for more, while the smaller side has at most small_sample_rows "
        "rows; Jensen-Shannon distance (jensenshannon) above; or one method always.",
    )
    small_sample_rows: int = Field(
        default=1_000,
        ge=1,
        description="auto's switch, per column: p-value tests while the smaller side has at "
        "most this many rows, distances above (Evidently's own default switch). A distance's "
        "fixed threshold sits inside the sampling noise of a few hundred rows (unshifted, 100 "
        "rows against a large reference: 23% of columns past 0.1); a p-value test allows for "
        "the sample size.",
    )
    p_value: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="auto's p-value tests flag a column when p < this. Not Evidently's 0.05: "
        "each test flags up to that share of unshifted columns, so a check of 14 features "
        "flags at least one in half of all checks (1 - 0.95^14) and one of 4 key features, "
        "enough to retrain, in 1 of 5; measured at 0.05: 5.7% of unshifted columns at 1,000 "
        "rows. At 0.01: at most 1.4% at every size measured (100 to 1,000 rows), and a 0.5-SD "
        "shift of one column still flagged in every seed from 500 rows "
        "(benchmarks/drift_calibration.py).",
    )
    threshold: float | None = Field(
        default=None,
        gt=0,
        description="None: Evidently's default threshold for each method (0.1 for the "
        "distances auto picks). With auto it is the distances' threshold; the p-value tests "
        "use p_value.",
    )
    columns: dict[str, ColumnDrift] = Field(
        default_factory=dict, description="Per-column overrides of method and threshold."
    )
    prediction_method: MethodChoice = Field(
        default="auto",
        description="Drift test of the model's output: the predicted probability, or a "
        "regression model's predicted value (numeric: auto as numeric_method). Compared with "
        "the holdout's out-of-sample predictions, whatever the features' reference.",
    )
    min_reference_rows: int = Field(
        default=1_000,
        ge=1,
        description="A champion's holdout with fewer rows is replaced, as the features' and "
        "outcome's reference, by its training window (the rows of its recorded snapshot it "
        "was fit on), so a small data set's drift is measured against more than a few dozen "
        "rows; the model output and the quality stay compared with the holdout.",
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

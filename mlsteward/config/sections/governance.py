"""Config sections for governance: the metrics gates know, their bounds, fairness and promotion."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from mlsteward.config.base import StrictModel
from mlsteward.config.sections.data import FeatureDtype, FeatureSpec

# Metrics that evaluation reports, by task; thresholds and the primary metric must name one of
# the model's task.
CLASSIFICATION_METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "accuracy",
    "precision",
    "recall",
    "f1",
)
REGRESSION_METRICS = (
    "rmse",
    "mae",
    "r2",
    "median_absolute_error",
    "mean_poisson_deviance",
    "mean_tweedie_deviance",
    "calibration_ratio",
)
EVALUATION_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
LOWER_IS_BETTER = frozenset(
    {
        "log_loss",
        "brier",
        "rmse",
        "mae",
        "median_absolute_error",
        "mean_poisson_deviance",
        "mean_tweedie_deviance",
    }
)
# Mean prediction over mean outcome is best at 1 from either side: it can be bounded, never
# ranked, so it is no primary metric.
UNRANKED_METRICS = frozenset({"calibration_ratio"})
# Deviances are defined only for predictions the objective keeps positive.
COUNT_METRICS = {"count:poisson": "mean_poisson_deviance", "reg:tweedie": "mean_tweedie_deviance"}

ClassificationFairnessMetric = Literal[
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equalized_odds_difference",
]
RegressionFairnessMetric = Literal[
    "mae_difference",
    "mae_ratio",
    "rmse_difference",
    "rmse_ratio",
    "mean_residual_difference",
    "bounded_group_loss",
]
FairnessMetric = Literal[ClassificationFairnessMetric, RegressionFairnessMetric]
CLASSIFICATION_FAIRNESS_METRICS: tuple[str, ...] = get_args(ClassificationFairnessMetric)
REGRESSION_FAIRNESS_METRICS: tuple[str, ...] = get_args(RegressionFairnessMetric)

# Larger is worse for differences and losses, smaller is worse for parity ratios, larger is
# worse for error ratios (worst group over best): the challenger-vs-champion gate needs the
# direction to tell "worsened" from "improved".
FAIRNESS_HIGHER_IS_WORSE: dict[str, bool] = {
    "demographic_parity_difference": True,
    "demographic_parity_ratio": False,
    "equal_opportunity_difference": True,
    "equalized_odds_difference": True,
    "mae_difference": True,
    "mae_ratio": True,
    "rmse_difference": True,
    "rmse_ratio": True,
    "mean_residual_difference": True,
    "bounded_group_loss": True,
}


class MetricBound(StrictModel):
    """A floor and/or a ceiling on one metric."""

    min: float | None = Field(default=None, description="Lowest allowed value; unset: no floor.")
    max: float | None = Field(default=None, description="Highest allowed value; unset: no ceiling.")

    @property
    def gated(self) -> bool:
        return self.min is not None or self.max is not None


def default_fairness_limits() -> dict[FairnessMetric, MetricBound]:
    """Documented defaults for classification: the four-fifths rule for parity, 0.1 for the
    error-rate gaps."""
    return {
        "demographic_parity_ratio": MetricBound(min=0.8),
        "demographic_parity_difference": MetricBound(),
        "equal_opportunity_difference": MetricBound(max=0.1),
        "equalized_odds_difference": MetricBound(max=0.1),
    }


def default_regression_fairness_limits() -> dict[FairnessMetric, MetricBound]:
    """Documented defaults for regression: no group's mean absolute error above 1.25 times
    another's (the four-fifths rule read for errors); the rest reported, not gated, because
    their scale is the target's units."""
    return {
        "mae_ratio": MetricBound(max=1.25),
        "mae_difference": MetricBound(),
        "rmse_ratio": MetricBound(),
        "rmse_difference": MetricBound(),
        "mean_residual_difference": MetricBound(),
        "bounded_group_loss": MetricBound(),
    }


class SensitiveAttribute(StrictModel):
    """A column the fairness gate groups by; numeric columns may be cut into labelled buckets."""

    column: str = Field(
        description="The column the fairness gate groups by: a feature, or a column of the data "
        "that is not a model input (the lawful setup for race or sex in credit, hiring or "
        "insurance): contract-checked and kept beside the features, never given to the model."
    )
    dtype: FeatureDtype | None = Field(
        default=None,
        description="A column that is not a feature: int, float, bool or category (unset: "
        "inferred and recorded). A feature's own rules apply to a feature.",
    )
    categories: list[str] | None = Field(
        default=None, description="A column that is not a feature: the allowed values."
    )
    min: float | None = Field(
        default=None, description="A column that is not a feature: the smallest value."
    )
    max: float | None = Field(
        default=None, description="A column that is not a feature: the largest value."
    )
    nullable: bool = Field(
        default=False,
        description="A column that is not a feature: missing values allowed (their group is "
        "'missing').",
    )
    buckets: list[float] | None = Field(
        default=None, description="Inner bucket edges, e.g. [40, 60] gives <40, 40-60, >=60."
    )
    labels: list[str] | None = Field(
        default=None, description="Group names, one more than the edges; default <a, a-b, >=b."
    )
    limits: dict[FairnessMetric, MetricBound] = Field(
        default_factory=dict,
        description="Per-attribute overrides of fairness.limits; an empty bound ({}) reports "
        "the metric without gating it.",
    )

    @property
    def declares_rules(self) -> bool:
        """Whether the entry carries contract rules of its own (only for a non-feature)."""
        return (
            self.dtype is not None
            or self.categories is not None
            or self.min is not None
            or self.max is not None
            or self.nullable
        )

    def as_column(self) -> FeatureSpec:
        """The contract rules of a sensitive column that is not a feature."""
        return FeatureSpec(
            name=self.column,
            dtype=self.dtype,
            categories=self.categories,
            min=self.min,
            max=self.max,
            nullable=self.nullable,
            description="sensitive attribute (not a model input)",
        )

    @model_validator(mode="after")
    def _buckets(self) -> SensitiveAttribute:
        if self.buckets is not None:
            if sorted(self.buckets) != self.buckets or len(set(self.buckets)) != len(self.buckets):
                raise ValueError(f"sensitive attribute {self.column!r}: buckets must increase")
            if self.labels is not None and len(self.labels) != len(self.buckets) + 1:
                raise ValueError(
                    f"sensitive attribute {self.column!r}: {len(self.buckets) + 1} labels needed "
                    f"for {len(self.buckets)} bucket edges, got {len(self.labels)}"
                )
        elif self.labels is not None:
            raise ValueError(f"sensitive attribute {self.column!r}: labels need buckets")
        return self


class FairnessConfig(StrictModel):
    """Limits of the fairness gate, applied to every sensitive attribute unless it overrides."""

    min_group_size: int = Field(
        default=30, ge=1, description="Smaller groups are reported but not gated."
    )
    limits: dict[FairnessMetric, MetricBound] = Field(
        default_factory=default_fairness_limits,
        description="Bounds per fairness metric of the model's task; keys left out keep their "
        "default (classification: demographic_parity_ratio >= 0.8, equal_opportunity_difference "
        "and equalized_odds_difference <= 0.1; regression: mae_ratio <= 1.25).",
    )

    def limits_for(self, attribute: SensitiveAttribute) -> dict[FairnessMetric, MetricBound]:
        return {**self.limits, **attribute.limits}


class PromotionConfig(StrictModel):
    """How a validated version may replace the champion."""

    policy: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: promote when every gate passes; manual: pause for a person's approval.",
    )
    primary_metric: str = Field(
        default="roc_auc",
        description="Metric the challenger must improve over the champion (regression "
        "default: rmse).",
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="Required improvement of the primary metric."
    )
    delta_mode: Literal["absolute", "relative"] = Field(
        default="absolute", description="relative: min_delta is a share of the champion's value."
    )
    fairness_tolerance: float = Field(
        default=0.02,
        ge=0,
        description="How much worse than the champion's any fairness metric may get.",
    )
    approval_timeout_seconds: int = Field(
        default=86_400, ge=1, description="Unanswered approval requests count as rejected."
    )


class ApprovalsConfig(StrictModel):
    """Who must agree before a version becomes champion under ``promotion.policy: manual``."""

    required: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Distinct approvers needed (manual policy); none of them may be the "
        "principal who trained or submitted the version (four eyes).",
    )

"""Config sections for governance: the metrics gates know, their bounds, fairness and promotion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlsteward.config.base import StrictModel

# Metrics that evaluation reports; thresholds and the primary metric must name one of them.
EVALUATION_METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "accuracy",
    "precision",
    "recall",
    "f1",
)
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})

FairnessMetric = Literal[
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equalized_odds_difference",
]

# Larger is worse for differences, smaller is worse for ratios: the challenger-vs-champion gate
# needs the direction to tell "worsened" from "improved".
FAIRNESS_HIGHER_IS_WORSE: dict[str, bool] = {
    "demographic_parity_difference": True,
    "demographic_parity_ratio": False,
    "equal_opportunity_difference": True,
    "equalized_odds_difference": True,
}


class MetricBound(StrictModel):
    """A floor and/or a ceiling on one metric."""

    min: float | None = Field(default=None, description="Lowest allowed value; unset: no floor.")
    max: float | None = Field(default=None, description="Highest allowed value; unset: no ceiling.")

    @property
    def gated(self) -> bool:
        return self.min is not None or self.max is not None


def default_fairness_limits() -> dict[FairnessMetric, MetricBound]:
    """Documented defaults: the four-fifths rule for parity, 0.1 for the error-rate gaps."""
    return {
        "demographic_parity_ratio": MetricBound(min=0.8),
        "demographic_parity_difference": MetricBound(),
        "equal_opportunity_difference": MetricBound(max=0.1),
        "equalized_odds_difference": MetricBound(max=0.1),
    }


class SensitiveAttribute(StrictModel):
    """A column the fairness gate groups by; numeric columns may be cut into labelled buckets."""

    column: str = Field(description="A feature column the fairness gate groups by.")
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
        description="Bounds per fairness metric; keys left out keep their default.",
    )

    @field_validator("limits", mode="after")
    @classmethod
    def _fill(cls, v: dict[FairnessMetric, MetricBound]) -> dict[FairnessMetric, MetricBound]:
        """Keys the user leaves out keep their documented default."""
        return {**default_fairness_limits(), **v}

    def limits_for(self, attribute: SensitiveAttribute) -> dict[FairnessMetric, MetricBound]:
        return {**self.limits, **attribute.limits}


class PromotionConfig(StrictModel):
    """How a validated version may replace the champion."""

    policy: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: promote when every gate passes; manual: pause for a person's approval.",
    )
    primary_metric: str = Field(
        default="roc_auc", description="Metric the challenger must improve over the champion."
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

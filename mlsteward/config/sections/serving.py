"""Config sections for online serving and canary rollouts with their guardrails."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, field_validator

from mlsteward.config.base import StrictModel


class ServingConfig(StrictModel):
    """Online predictions (``mlsteward serve``)."""

    max_batch_rows: int = Field(
        default=256, ge=1, le=100_000, description="Rows one predict request may carry (413 above)."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        le=1_073_741_824,
        description="Bytes one predict request's body may have (413 above, refused before the "
        "rest is read); raise it with max_batch_rows when clients send instances.",
    )
    top_k: int | None = Field(
        default=None, ge=1, le=50, description="SHAP contributions per row; default scoring.top_k."
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, description="How often the registry is read for alias/rollout changes."
    )
    micro_batch_rows: int = Field(
        default=128, ge=1, description="Concurrent rows scored (and explained) in one XGBoost call."
    )
    shap_threads: int = Field(
        default=0, ge=0, description="Threads of one exact-SHAP call; 0 = every core."
    )
    log_queue_rows: int = Field(
        default=100_000, ge=1, description="Prediction-log rows buffered before requests wait."
    )
    log_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest a prediction waits before it is written."
    )


class GuardrailConfig(StrictModel):
    """What a canary must keep to go on to the next step (see ``mlsteward.rollout.guardrails``)."""

    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Share of the challenger's rows that fail to score."
    )
    max_p99_latency_ratio: float = Field(
        default=1.5, gt=0, description="Challenger p99 latency over the champion's, same step."
    )
    latency_slack_ms: float = Field(
        default=5.0,
        ge=0,
        description="p99 differences smaller than this never breach (timer noise at ~1 ms).",
    )
    max_prediction_psi: float = Field(
        default=0.25,
        gt=0,
        description="Population stability index of challenger vs champion predictions "
        "(probabilities; a regression model's predicted values).",
    )
    min_labelled_rows: int = Field(
        default=200, ge=1, description="Labelled rows per arm before quality is tested."
    )
    quality_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Classification: error-rate increase (absolute) the challenger may have "
        "without breaching.",
    )
    mae_margin: float = Field(
        default=0.1,
        ge=0,
        description="Regression: mean-absolute-error increase the challenger may have without "
        "breaching, as a share of the champion's MAE (mae_margin_mode relative: 0.1 = 10 %, "
        "about what quality_margin's 0.02 is on an error rate near 0.2) or in the label's units "
        "(absolute).",
    )
    mae_margin_mode: Literal["relative", "absolute"] = Field(
        default="relative",
        description="How mae_margin reads: a share of the champion's MAE, or the label's units.",
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="False-rollback budget of the quality test over the whole rollout.",
    )


class RolloutConfig(StrictModel):
    """Canary rollout of a validated challenger (``rollout-<model>`` deployment)."""

    steps: list[float] = Field(
        default_factory=lambda: [0.05, 0.25, 0.5, 1.0],
        description="Share of traffic on the challenger at each step; increasing, last 1.0.",
    )
    min_requests: int = Field(
        default=200, ge=1, description="Challenger rows a step needs before it is judged."
    )
    step_timeout_seconds: float = Field(
        default=3600,
        gt=0,
        description="A step without min_requests by then ends the rollout (champion stays).",
    )
    check_interval_seconds: float = Field(
        default=10, gt=0, description="Seconds between scrapes of the service's metrics in a step."
    )
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one step is required")
        if any(not 0 < s <= 1 for s in v):
            raise ValueError(f"every step must be in (0, 1], got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"steps must increase, got {v}")
        if v[-1] != 1.0:
            raise ValueError(f"the last step must be 1.0 (all traffic), got {v[-1]}")
        return v

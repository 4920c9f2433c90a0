"""Config section for alerts: the standing rules a model is watched by, who hears of a breach,
and the watch after each promotion.

The defaults are the seeds' alert conditions: accuracy down 5% once outcomes arrive, latency
p99 twice the baseline, error rate 10% (5% rolls back), drift score 0.1 and PSI 0.2 as the
retrain signal, pipeline success rate below 95%; fairness in production is held to the limits
that gate promotion.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from mlsteward.config.base import StrictModel

Severity = Literal["info", "warning", "critical"]

RULES = (
    "quality_drop",
    "latency_p99",
    "error_rate",
    "success_rate",
    "feature_drift",
    "feature_psi",
    "prediction_shift",
    "skew",
    "attribution_drift",
    "bias_drift",
    "process_special_cause",
)
"""Every standing rule, in the order the docs list them."""


class Rule(StrictModel):
    """What every rule has: on or off, how loud, and whether a breach during the watch after a
    promotion rolls back."""

    enabled: bool = Field(default=True, description="false: never evaluated.")
    severity: Severity = Field(default="warning", description="info, warning or critical.")
    rollback: bool = Field(
        default=False,
        description="A breach during the post-promotion watch rolls back to the previous "
        "champion (through governance, audited and alerted).",
    )
    quiet_period_minutes: float | None = Field(
        default=None, ge=0, description="Unset: alerts.quiet_period_minutes."
    )


class QualityDropRule(Rule):
    """The primary metric once outcomes arrive, against the value it had at promotion."""

    severity: Severity = "critical"
    rollback: bool = True
    max_drop: float = Field(
        default=0.05,
        gt=0,
        description="How much worse the metric may get before it alerts (seed: accuracy -5%).",
    )
    mode: Literal["relative", "absolute"] = Field(
        default="relative",
        description="relative: max_drop is a share of the value at promotion (0.05 = 5% "
        "worse); absolute: in the metric's units.",
    )
    metric: str | None = Field(
        default=None, description="Unset: drift.performance_metric, else the primary metric."
    )
    min_labelled_rows: int = Field(
        default=200, ge=1, description="Fewer rows with an outcome: no verdict (chance)."
    )


class LatencyRule(Rule):
    """Serving p99 against the baseline recorded when the version became champion."""

    max_ratio: float = Field(default=2.0, gt=1, description="Seed: 2x the baseline.")
    slack_ms: float = Field(
        default=5.0, ge=0, description="Differences smaller than this never breach (timer noise)."
    )
    min_requests: int = Field(
        default=100, ge=1, description="Fewer requests in the window: no verdict."
    )


class ErrorRateRule(Rule):
    """Share of predict requests (and rows) that failed."""

    severity: Severity = "critical"
    max: float = Field(default=0.10, ge=0, le=1, description="Seed: 10% alerts.")
    rollback_above: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="During the post-promotion watch, above this share the new champion is "
        "rolled back (seed: 5% with auto-rollback).",
    )
    min_requests: int = Field(
        default=100, ge=1, description="Fewer requests in the window: no verdict."
    )


class SuccessRateRule(Rule):
    """Share of the model's flow runs (training, scoring, drift, monitoring) that completed."""

    min: float = Field(default=0.95, ge=0, le=1, description="Seed: below 95% alerts.")
    window_hours: float = Field(default=24, gt=0, description="Runs counted from this far back.")
    min_runs: int = Field(default=5, ge=1, description="Fewer finished runs: no verdict.")


class FeatureDriftRule(Rule):
    """A feature's drift verdict (the size-aware test of ``drift``) or its score."""

    max_score: float | None = Field(
        default=None,
        gt=0,
        description="Unset: the drift test's own verdict; set: alert when a distance score "
        "exceeds it (seed: 0.1).",
    )


class PsiRule(Rule):
    """Population stability index per feature against the reference."""

    max: float = Field(default=0.2, gt=0, description="Seed: PSI 0.2 is the retrain signal.")
    min_rows: int = Field(
        default=1_000, ge=1, description="PSI below this many current rows is noise: no verdict."
    )


class PredictionShiftRule(Rule):
    """The model's output distribution against the reference (the drift test's verdict)."""


class SkewRule(Rule):
    """Features the service used against Feast's offline store, point in time."""

    max_mismatch_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Share of checked rows whose value of a feature differs; above: alert.",
    )
    tolerance: float = Field(
        default=1e-6,
        ge=0,
        description="Numbers closer than this (relative to the offline value) are equal.",
    )
    max_rows: int = Field(
        default=200_000, ge=100, description="Newest prediction-log rows checked per run."
    )
    window_hours: float = Field(default=24, gt=0, description="Prediction log read from.")


class AttributionDriftRule(Rule):
    """Each feature's share of SHAP attribution against the training reference."""

    max_share_change: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Alert when a feature's share of total |SHAP| moves by more than this "
        "(0.1 = ten percentage points).",
    )
    min_rows: int = Field(
        default=500, ge=1, description="Fewer explained rows in the window: no verdict."
    )
    window_hours: float = Field(default=24, gt=0, description="Prediction log read from.")


class BiasDriftRule(Rule):
    """The fairness metrics that gate promotion, over labelled windows of the prediction log."""

    severity: Severity = "critical"
    window_days: float = Field(
        default=30, gt=0, description="Labelled predictions from this far back (outcomes lag)."
    )
    min_labelled_rows: int = Field(
        default=200, ge=1, description="Fewer labelled rows: no verdict."
    )


class AlertRules(StrictModel):
    """The standing rules; each defaults to the seeds' condition."""

    quality_drop: QualityDropRule = Field(default_factory=QualityDropRule)
    latency_p99: LatencyRule = Field(default_factory=LatencyRule)
    error_rate: ErrorRateRule = Field(default_factory=ErrorRateRule)
    success_rate: SuccessRateRule = Field(default_factory=SuccessRateRule)
    feature_drift: FeatureDriftRule = Field(default_factory=FeatureDriftRule)
    feature_psi: PsiRule = Field(default_factory=PsiRule)
    prediction_shift: PredictionShiftRule = Field(default_factory=PredictionShiftRule)
    skew: SkewRule = Field(default_factory=SkewRule)
    attribution_drift: AttributionDriftRule = Field(default_factory=AttributionDriftRule)
    bias_drift: BiasDriftRule = Field(default_factory=BiasDriftRule)
    process_special_cause: Rule = Field(
        default_factory=Rule,
        description="A control chart of the model's delivery (lead and cycle times, gate and "
        "run failure rates) shows a special cause (process.rules).",
    )


class WebhookChannel(StrictModel):
    """A JSON POST to a URL (Prefect's CustomWebhookNotificationBlock)."""

    type: Literal["webhook"]
    url_env: str = Field(description="Environment variable holding the URL (a secret).")
    allow_private_urls: bool = Field(
        default=False, description="Allow an address on a private network (an internal hook)."
    )


class SlackChannel(StrictModel):
    """A Slack incoming webhook (Prefect's SlackWebhook block)."""

    type: Literal["slack"]
    url_env: str = Field(description="Environment variable holding the webhook URL.")


class TeamsChannel(StrictModel):
    """A Microsoft Teams workflow webhook (Prefect's MicrosoftTeamsWebhook block)."""

    type: Literal["teams"]
    url_env: str = Field(description="Environment variable holding the webhook URL.")


class EmailChannel(StrictModel):
    """Mail through an SMTP server (prefect-email's EmailServerCredentials)."""

    type: Literal["email"]
    to: list[str] = Field(min_length=1, description="Recipients.")
    smtp_server: str = Field(description="Host name of the SMTP server.")
    smtp_port: int = Field(default=587, ge=1, le=65_535)
    smtp_type: Literal["SSL", "STARTTLS", "INSECURE"] = Field(
        default="STARTTLS", description="How the connection is secured."
    )
    username_env: str | None = Field(
        default=None, description="Environment variable holding the SMTP user name."
    )
    password_env: str | None = Field(
        default=None, description="Environment variable holding the SMTP password."
    )
    sender: str = Field(
        default="mlsteward@localhost", description="From address when there is no login."
    )


class BlockChannel(StrictModel):
    """A notification block someone already saved in Prefect, by its name."""

    type: Literal["block"]
    block: str = Field(description="``block-type-slug/name``, e.g. ``slack-webhook/oncall``.")


Channel = Annotated[
    WebhookChannel | SlackChannel | TeamsChannel | EmailChannel | BlockChannel,
    Field(discriminator="type"),
]


class WatchConfig(StrictModel):
    """The watch after each promotion: the standing rules, more often, for a while."""

    enabled: bool = Field(default=True, description="false: no watch after promotions.")
    window_minutes: float = Field(
        default=120, gt=0, description="How long after a promotion the watch runs."
    )
    interval_minutes: float = Field(
        default=5, gt=0, description="How often the rules run during the watch."
    )


class AlertsConfig(StrictModel):
    """Standing alert rules, notification channels and the post-promotion watch."""

    rules: AlertRules = Field(default_factory=AlertRules)
    channels: list[Channel] = Field(
        default_factory=list,
        description="Where notifications go (webhook, slack, teams, email, or a saved block); "
        "none: alerts are Prefect events and audit records only.",
    )
    min_severity: Severity = Field(
        default="warning", description="Notifications are sent from this severity up."
    )
    quiet_period_minutes: float = Field(
        default=60,
        ge=0,
        description="After a notification, further breaches of the same rule are counted, "
        "not sent; still breached after this long: one reminder.",
    )
    resolve_after: int = Field(
        default=1, ge=1, description="Consecutive clear checks before an incident resolves."
    )
    schedule: str | None = Field(
        default="*/15 * * * *", description="Cron (UTC) of the standing-rules monitor runs."
    )
    watch: WatchConfig = Field(default_factory=WatchConfig)

    @field_validator("channels")
    @classmethod
    def _distinct(cls, v: list) -> list:
        seen = set()
        for channel in v:
            key = channel.model_dump_json()
            if key in seen:
                raise ValueError(f"channel listed twice: {key}")
            seen.add(key)
        return v

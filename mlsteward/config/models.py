"""Model configuration: one YAML file per model in ``config/models/``, validated once on load.

Adding a model is adding a YAML file and a data file; everything downstream (data contract,
Feast objects, search space, split, thresholds) is derived from the validated object here, so a
bad key fails loudly at load time instead of half-way through a training run.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from mlsteward.config.base import StrictModel
from mlsteward.config.paths import config_dir, project_root
from mlsteward.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
FeatureDtype = Literal["int", "float", "bool", "category"]


class FeatureSpec(StrictModel):
    """One feature column. ``dtype`` may be omitted: ingestion infers and records it."""

    name: str
    dtype: FeatureDtype | None = None
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"feature {self.name!r}: min {self.min} is greater than max {self.max}"
            )
        if self.categories is not None:
            if self.dtype not in (None, "category"):
                raise ValueError(
                    f"feature {self.name!r}: categories are only allowed for dtype 'category'"
                )
            if len(set(self.categories)) != len(self.categories) or not self.categories:
                raise ValueError(f"feature {self.name!r}: categories must be non-empty and unique")
        if self.dtype == "category" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max make no sense for a category")
        return self


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
    min: float | None = None
    max: float | None = None

    @property
    def gated(self) -> bool:
        return self.min is not None or self.max is not None


def default_fairness_limits() -> dict[str, MetricBound]:
    """Documented defaults: the four-fifths rule for parity, 0.1 for the error-rate gaps."""
    return {
        "demographic_parity_ratio": MetricBound(min=0.8),
        "demographic_parity_difference": MetricBound(),
        "equal_opportunity_difference": MetricBound(max=0.1),
        "equalized_odds_difference": MetricBound(max=0.1),
    }


class SensitiveAttribute(StrictModel):
    """A column the fairness gate groups by; numeric columns may be cut into labelled buckets."""

    column: str
    buckets: list[float] | None = Field(
        default=None, description="Inner bucket edges, e.g. [40, 60] gives <40, 40-60, >=60."
    )
    labels: list[str] | None = None
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


class SourceConfig(StrictModel):
    path: str
    entity: str
    timestamp: str | None = Field(
        default=None,
        description="Event-time column. When absent, ingestion stamps every row with the "
        "ingestion time (UTC, whole seconds) and records that it did.",
    )
    format: Literal["csv", "parquet"] | None = None

    def resolved_path(self, base: Path | None = None) -> Path:
        """Relative paths are relative to the project root, so configs stay portable."""
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else (base or project_root()) / p

    def file_format(self, path: Path | None = None) -> str:
        if self.format:
            return self.format
        suffix = (path or Path(self.path)).suffix.lower()
        return "parquet" if suffix in (".parquet", ".pq") else "csv"


class SearchDimension(StrictModel):
    """One hyperparameter's distribution, as data (mirrors hyperopt's ``hp.*`` families)."""

    dist: Literal["uniform", "loguniform", "quniform", "qloguniform", "choice"]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    options: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> SearchDimension:
        if self.dist == "choice":
            if not self.options:
                raise ValueError("dist 'choice' needs a non-empty 'options' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"dist {self.dist!r} needs 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.dist.startswith("q") and (self.q is None or self.q <= 0):
            raise ValueError(f"dist {self.dist!r} needs a positive 'q'")
        if "log" in self.dist and self.low <= 0:
            raise ValueError(f"dist {self.dist!r} needs low > 0 (it is searched on a log scale)")
        return self


def default_search_space() -> dict[str, SearchDimension]:
    """A conventional XGBoost space; documented in README so users know what they override."""
    return {
        "max_depth": SearchDimension(dist="quniform", low=2, high=8, q=1),
        "learning_rate": SearchDimension(dist="loguniform", low=0.01, high=0.3),
        "min_child_weight": SearchDimension(dist="loguniform", low=0.5, high=20),
        "subsample": SearchDimension(dist="uniform", low=0.6, high=1.0),
        "colsample_bytree": SearchDimension(dist="uniform", low=0.5, high=1.0),
        "reg_lambda": SearchDimension(dist="loguniform", low=0.1, high=10),
        "reg_alpha": SearchDimension(dist="loguniform", low=0.001, high=5),
        "gamma": SearchDimension(dist="uniform", low=0.0, high=2.0),
    }


TuningRunner = Literal["sequential", "threads", "dask", "ray"]


class ParallelTuning(StrictModel):
    """How Hyperopt trials are evaluated: one at a time, or in batches on a Prefect task runner.

    The batch size is part of the search (TPE sees a batch's pending trials when it suggests the
    next one), so the same seed and batch size give the same trials on every runner, and batch
    size 1 is exactly the sequential search. The runner, worker count and per-trial thread cap
    only decide where and how fast trials run. ``address`` points Dask (scheduler) or Ray
    (cluster) at production infrastructure; empty starts a local cluster for the run.
    """

    runner: TuningRunner = "sequential"
    batch_size: int = Field(default=1, ge=1, le=1_000)
    workers: int = Field(default=0, ge=0, description="0 = batch_size, capped at the cores")
    trial_nthread: int = Field(
        default=0, ge=0, description="XGBoost threads per trial; 0 = cores // workers"
    )
    address: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ParallelTuning:
        if self.runner == "sequential" and self.address:
            raise ValueError("'address' is for the dask or ray runner, not 'sequential'")
        if self.runner == "threads" and self.address:
            raise ValueError("'address' is for the dask or ray runner; threads run in-process")
        return self


class TuningConfig(StrictModel):
    max_evals: int = Field(default=30, ge=1, le=10_000)
    seed: int = Field(default=42, ge=0)
    early_stopping_rounds: int = Field(default=30, ge=1)
    num_boost_round: int = Field(default=400, ge=1)
    eval_metric: Literal["logloss", "auc", "aucpr"] = "logloss"
    nthread: int = Field(default=0, ge=0, description="0 = all cores")
    search_space: dict[str, SearchDimension] = Field(default_factory=default_search_space)
    parallel: ParallelTuning = Field(default_factory=ParallelTuning)


class DistributedTraining(StrictModel):
    """Training sets above a size train on a Dask cluster with ``xgboost.dask``.

    The point-in-time join then runs in chunks of ``chunk_rows`` entity rows, each chunk's
    training rows written as one parquet partition under ``staging_dir``, which the Dask workers
    read (production: a volume or object-store prefix every worker mounts). ``workers`` is part
    of the result: partition i always trains on worker slot ``i % workers`` (see
    ``mlsteward.training.distributed``), so the same data, seed and worker count give the same
    model.
    """

    above_rows: int | None = Field(
        default=None,
        ge=1,
        description="entity rows above which training is distributed; unset = never",
    )
    address: str | None = Field(
        default=None,
        description="Dask scheduler; unset = tuning.parallel.address when the tuning runner is "
        "dask, else a LocalCluster for the run",
    )
    workers: int = Field(default=2, ge=1, le=1_000)
    threads_per_worker: int = Field(
        default=0, ge=0, description="LocalCluster; 0 = cores // workers"
    )
    chunk_rows: int = Field(default=250_000, ge=1)
    staging_dir: str | None = Field(
        default=None, description="where partitions are written; unset = <state>/training_sets"
    )

    def applies(self, rows: int) -> bool:
        return self.above_rows is not None and rows > self.above_rows


class SplitConfig(StrictModel):
    """Time-ordered split: the oldest rows train, the newest rows test (no look-ahead)."""

    train: float = Field(default=0.7, gt=0, lt=1)
    validation: float = Field(default=0.15, gt=0, lt=1)
    test: float = Field(default=0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class DecisionThreshold(StrictModel):
    """How the probability cut-off for labels is chosen: maximise F1 on validation, or fixed."""

    strategy: Literal["max_f1", "fixed"] = "max_f1"
    value: float = Field(default=0.5, gt=0, lt=1)


class FairnessConfig(StrictModel):
    """Limits of the fairness gate, applied to every sensitive attribute unless it overrides."""

    min_group_size: int = Field(
        default=30, ge=1, description="Smaller groups are reported but not gated."
    )
    limits: dict[FairnessMetric, MetricBound] = Field(default_factory=default_fairness_limits)

    @field_validator("limits", mode="after")
    @classmethod
    def _fill(cls, v: dict[str, MetricBound]) -> dict[str, MetricBound]:
        """Keys the user leaves out keep their documented default."""
        return {**default_fairness_limits(), **v}

    def limits_for(self, attribute: SensitiveAttribute) -> dict[str, MetricBound]:
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
    delta_mode: Literal["absolute", "relative"] = "absolute"
    fairness_tolerance: float = Field(
        default=0.02,
        ge=0,
        description="How much worse than the champion's any fairness metric may get.",
    )
    approval_timeout_seconds: int = Field(
        default=86_400, ge=1, description="Unanswered approval requests count as rejected."
    )


DriftMethod = Literal[
    "wasserstein", "ks", "psi", "kl_div", "jensenshannon", "chisquare", "z", "anderson",
    "hellinger", "mannw", "ed", "es", "t_test", "empirical_mmd", "cramer_von_mises",
    "fisher_exact", "g_test", "TVD",
]  # fmt: skip


class ColumnDrift(StrictModel):
    """Per-column override of the drift test."""

    method: DriftMethod | None = None
    threshold: float | None = Field(default=None, gt=0)


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
    columns: dict[str, ColumnDrift] = Field(default_factory=dict)
    prediction_method: DriftMethod = "wasserstein"
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
        description="With labels: retrain when the primary metric falls this much (absolute).",
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


class ServingConfig(StrictModel):
    """Online predictions (``mlsteward serve``)."""

    max_batch_rows: int = Field(
        default=256, ge=1, le=100_000, description="Rows one predict request may carry (413 above)."
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
        description="Population stability index of challenger vs champion probabilities.",
    )
    min_labelled_rows: int = Field(
        default=200, ge=1, description="Labelled rows per arm before quality is tested."
    )
    quality_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Error-rate increase (absolute) the challenger may have without breaching.",
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
    check_interval_seconds: float = Field(default=10, gt=0)
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


class ContractConfig(StrictModel):
    max_bad_row_share: float = Field(default=0.05, ge=0, le=1)
    future_tolerance_seconds: int = Field(
        default=300, ge=0, description="Clock skew allowed before a timestamp counts as future."
    )


class FeastConfig(StrictModel):
    ttl_days: float | None = Field(
        default=None, gt=0, description="Feature freshness limit; None keeps values forever."
    )
    online: bool = True


class ModelConfig(StrictModel):
    name: str
    description: str = ""
    owner: str = "unknown"
    task: Literal["binary_classification", "regression"]
    source: SourceConfig
    label: str
    label_values: list[int] = Field(default_factory=lambda: [0, 1])
    features: list[FeatureSpec]
    sensitive_attributes: list[SensitiveAttribute] = Field(default_factory=list)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    distributed: DistributedTraining = Field(default_factory=DistributedTraining)
    split: SplitConfig = Field(default_factory=SplitConfig)
    decision_threshold: DecisionThreshold = Field(default_factory=DecisionThreshold)
    thresholds: dict[str, MetricBound] = Field(default_factory=dict)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    contract: ContractConfig = Field(default_factory=ContractConfig)
    feast: FeastConfig = Field(default_factory=FeastConfig)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError(
                "must be lower_snake_case (a-z, 0-9, _), start with a letter, max 63 chars"
            )
        return v

    @field_validator("features", mode="before")
    @classmethod
    def _feature_shorthand(cls, v: Any) -> Any:
        """Allow ``- age`` as shorthand for ``- {name: age}``."""
        if isinstance(v, list):
            return [{"name": f} if isinstance(f, str) else f for f in v]
        return v

    @field_validator("sensitive_attributes", mode="before")
    @classmethod
    def _sensitive_shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"column": s} if isinstance(s, str) else s for s in v]
        return v

    @model_validator(mode="after")
    def _columns(self) -> ModelConfig:
        if self.task != "binary_classification":
            raise ValueError(f"task {self.task!r} is not supported yet (binary_classification is)")
        names = [f.name for f in self.features]
        if not names:
            raise ValueError("features: at least one feature is required")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: duplicated column(s) {dupes}")
        reserved = {self.source.entity, self.label} | (
            {self.source.timestamp} if self.source.timestamp else set()
        )
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"features: {clash} is also the entity, label or timestamp column")
        if self.label in (self.source.entity, self.source.timestamp):
            raise ValueError("label: must differ from the entity and timestamp columns")
        for s in self.sensitive_attributes:
            if s.column not in names:
                raise ValueError(
                    f"sensitive_attributes: {s.column!r} is not one of the features {names}"
                )
            spec = self.feature(s.column)
            if s.buckets is not None and spec.dtype == "category":
                raise ValueError(f"sensitive_attributes: {s.column!r} is categorical; no buckets")
        for metric, bound in self.thresholds.items():
            if metric not in EVALUATION_METRICS:
                raise ValueError(
                    f"thresholds.{metric}: unknown metric (known: {list(EVALUATION_METRICS)})"
                )
            if bound.min is None and bound.max is None:
                raise ValueError(f"thresholds.{metric}: give min and/or max")
        for col in [*self.drift.columns, *self.drift.key_features]:
            if col not in names:
                raise ValueError(f"drift: {col!r} is not one of the features {names}")
        if self.promotion.primary_metric not in EVALUATION_METRICS:
            raise ValueError(
                f"promotion.primary_metric: unknown metric {self.promotion.primary_metric!r} "
                f"(known: {list(EVALUATION_METRICS)})"
            )
        if (
            sorted(set(self.label_values)) != sorted(self.label_values)
            or len(self.label_values) != 2
        ):
            raise ValueError("label_values: exactly two distinct values for a binary label")
        return self

    # -- derived names: one place decides what Feast objects are called -----------------------
    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def timestamp_column(self) -> str:
        """Event-time column after ingestion (the configured one, or the one ingestion adds)."""
        return self.source.timestamp or "event_timestamp"

    @property
    def entity_name(self) -> str:
        return f"{self.name}__{self.source.entity}"

    @property
    def feature_view_name(self) -> str:
        return f"{self.name}__features"

    @property
    def data_source_name(self) -> str:
        return f"{self.name}__snapshot"

    @property
    def feature_service_name(self) -> str:
        return self.name


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid model config ({err.error_count()} problem(s))"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - {key}: {msg}")
    return "\n".join(lines)


def load_model_config(path: str | Path) -> ModelConfig:
    """Parse and validate one model YAML; every error names the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model config: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a model config must be a YAML mapping, got {type(raw).__name__}"
        )
    try:
        cfg = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from exc
    if cfg.name != path.stem:
        raise ConfigError(f"{path}: name: {cfg.name!r} must match the file name {path.stem!r}")
    return cfg


def model_config_paths(directory: Path | None = None) -> list[Path]:
    d = directory or config_dir() / "models"
    return sorted([*d.glob("*.yaml"), *d.glob("*.yml")])


def load_all_model_configs(directory: Path | None = None) -> dict[str, ModelConfig]:
    return {c.name: c for c in map(load_model_config, model_config_paths(directory))}


def model_config_path(name: str, directory: Path | None = None) -> Path:
    """The YAML file that declares a model (its hash goes into lineage); the error lists the
    models that do exist."""
    d = directory or config_dir() / "models"
    for suffix in (".yaml", ".yml"):
        if (d / f"{name}{suffix}").exists():
            return d / f"{name}{suffix}"
    known = [p.stem for p in model_config_paths(d)]
    raise ConfigError(f"unknown model {name!r}: no {d}/{name}.yaml (known: {known or 'none'})")


def get_model_config(name: str, directory: Path | None = None) -> ModelConfig:
    return load_model_config(model_config_path(name, directory))

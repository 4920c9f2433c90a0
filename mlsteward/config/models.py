"""Model configuration: one YAML file per model in ``config/models/``, validated once on load.

Adding a model is adding a YAML file and a data file; everything downstream (data contract,
Feast objects, search space, split, thresholds) is derived from the validated object here, so a
bad key fails loudly at load time instead of half-way through a training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from mlsteward.config.base import StrictModel
from mlsteward.config.names import NAME_PATTERN, NAME_RULE, check_model_name
from mlsteward.config.paths import config_dir
from mlsteward.config.sections.alerts import AlertsConfig
from mlsteward.config.sections.data import ContractConfig, FeastConfig, FeatureSpec, SourceConfig
from mlsteward.config.sections.governance import (
    CLASSIFICATION_FAIRNESS_METRICS,
    CLASSIFICATION_METRICS,
    COUNT_METRICS,
    REGRESSION_FAIRNESS_METRICS,
    REGRESSION_METRICS,
    UNRANKED_METRICS,
    ApprovalsConfig,
    FairnessConfig,
    MetricBound,
    PromotionConfig,
    SensitiveAttribute,
    default_fairness_limits,
    default_regression_fairness_limits,
)
from mlsteward.config.sections.monitoring import DriftConfig, ScoringConfig
from mlsteward.config.sections.process import ProcessConfig
from mlsteward.config.sections.serving import RolloutConfig, ServingConfig
from mlsteward.config.sections.training import (
    REGRESSION_OBJECTIVES,
    DecisionThreshold,
    DistributedTraining,
    SplitConfig,
    TuningConfig,
)
from mlsteward.errors import ConfigError


class ModelConfig(StrictModel):
    """One model: its data, features, search, gates, monitoring and serving."""

    name: str = Field(description="lower_snake_case, equal to the file name.")
    description: str = Field(default="", description="What the model predicts (model card, Feast).")
    owner: str = Field(default="unknown", description="Who answers for it (model card, Feast).")
    task: Literal["binary_classification", "regression"] = Field(
        description="binary_classification (a probability and a label) or regression (a "
        "number in the label's units; tuning.objective says which loss)."
    )
    source: SourceConfig
    label: str = Field(description="The label column (regression: the numeric outcome).")
    label_values: list[int] = Field(
        default_factory=lambda: [0, 1],
        description="The two values a binary label takes (classification only).",
    )
    features: list[FeatureSpec] = Field(
        description="The columns the model trains on; ``- age`` is short for ``- {name: age}``."
    )
    sensitive_attributes: list[SensitiveAttribute] = Field(
        default_factory=list,
        description="Columns the fairness gate groups by; ``- sex`` is short for "
        "``- {column: sex}``. A column that is not a feature is checked by the contract, kept "
        "beside the features and never given to the model.",
    )
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    distributed: DistributedTraining = Field(default_factory=DistributedTraining)
    split: SplitConfig = Field(default_factory=SplitConfig)
    decision_threshold: DecisionThreshold = Field(default_factory=DecisionThreshold)
    thresholds: dict[str, MetricBound] = Field(
        default_factory=dict,
        description="Inclusive bounds on test-set metrics, by name (classification: roc_auc, "
        "pr_auc, log_loss, brier, accuracy, precision, recall, f1; regression: rmse, mae, r2, "
        "median_absolute_error, mean_poisson_deviance (count:poisson), mean_tweedie_deviance "
        "(reg:tweedie), calibration_ratio = mean prediction / mean outcome); a version outside "
        "one fails validation.",
    )
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    process: ProcessConfig = Field(default_factory=ProcessConfig)
    contract: ContractConfig = Field(default_factory=ContractConfig)
    feast: FeastConfig = Field(default_factory=FeastConfig)
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on the Feast objects.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.fullmatch(v):
            raise ValueError(f"must be {NAME_RULE}")
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

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """Defaults that depend on the task: a regression model gets reg:squarederror, RMSE as
        its primary metric and the regression fairness limits unless the file says otherwise;
        fairness limits left out keep the task's documented default."""
        if not isinstance(data, dict):
            return data
        regression = data.get("task") == "regression"
        out = dict(data)
        fairness = out.get("fairness")
        if fairness is None or isinstance(fairness, dict):
            fairness = dict(fairness or {})
            given = fairness.get("limits")
            if given is None or isinstance(given, dict):
                defaults = (
                    default_regression_fairness_limits()
                    if regression
                    else default_fairness_limits()
                )
                fairness["limits"] = {**defaults, **(given or {})}
                out["fairness"] = fairness
        if not regression:
            return out
        for section, key, default in (
            ("tuning", "objective", "reg:squarederror"),
            ("promotion", "primary_metric", "rmse"),
        ):
            part = out.get(section)
            if part is None or isinstance(part, dict):
                out[section] = {key: default, **(part or {})}
        return out

    @model_validator(mode="after")
    def _task(self) -> ModelConfig:
        """Everything that names a metric or a loss names one of the model's task."""
        regression = self.task == "regression"
        if regression != (self.tuning.objective in REGRESSION_OBJECTIVES):
            raise ValueError(
                f"tuning.objective: {self.tuning.objective!r} does not fit task {self.task!r} "
                f"(regression: {', '.join(REGRESSION_OBJECTIVES)}; binary_classification: "
                "binary:logistic)"
            )
        known = self.metric_names
        for metric, bound in self.thresholds.items():
            if metric not in known:
                raise ValueError(
                    f"thresholds.{metric}: not a metric of this {self.task} model "
                    f"(known: {list(known)})"
                )
            if bound.min is None and bound.max is None:
                raise ValueError(f"thresholds.{metric}: give min and/or max")
        ranked = [m for m in known if m not in UNRANKED_METRICS]
        named: list[tuple[str, str | None]] = [
            ("promotion.primary_metric", self.promotion.primary_metric),
            ("drift.performance_metric", self.drift.performance_metric),
        ]
        for where, chosen in named:
            if chosen is not None and chosen not in ranked:
                raise ValueError(
                    f"{where}: {chosen!r} is not a metric of this {self.task} model that has a "
                    f"better direction (known: {ranked})"
                )
        fair = REGRESSION_FAIRNESS_METRICS if regression else CLASSIFICATION_FAIRNESS_METRICS
        per_attribute = [
            (f"sensitive_attributes.{s.column}.limits", s.limits) for s in self.sensitive_attributes
        ]
        for where, limits in [("fairness.limits", self.fairness.limits), *per_attribute]:
            wrong = [m for m in limits if m not in fair]
            if wrong:
                raise ValueError(
                    f"{where}: {wrong} are not fairness metrics of a {self.task} model "
                    f"(known: {list(fair)})"
                )
        if not regression and (
            sorted(set(self.label_values)) != sorted(self.label_values)
            or len(self.label_values) != 2
        ):
            raise ValueError("label_values: exactly two distinct values for a binary label")
        return self

    @model_validator(mode="after")
    def _columns(self) -> ModelConfig:
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
        columns = [s.column for s in self.sensitive_attributes]
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise ValueError(f"sensitive_attributes: duplicated column(s) {dupes}")
        for s in self.sensitive_attributes:
            where = f"sensitive_attributes: {s.column!r}"
            if s.column in reserved:
                raise ValueError(f"{where} is the entity, label or timestamp column")
            if s.column in names:
                if s.declares_rules:
                    raise ValueError(
                        f"{where} is a feature: its rules (dtype, categories, min, max, "
                        "nullable) are the feature's; give them there"
                    )
                dtype = self.feature(s.column).dtype
            else:
                dtype = s.as_column().dtype
            if s.buckets is not None and dtype in ("category", "bool"):
                raise ValueError(f"{where} is {dtype}; buckets are for numeric columns")
        for col in [*self.drift.columns, *self.drift.key_features]:
            if col not in names:
                raise ValueError(f"drift: {col!r} is not one of the features {names}")
        return self

    # -- derived names: one place decides what Feast objects are called -----------------------
    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs, and only those."""
        return [f.name for f in self.features]

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics evaluation reports for this model (a deviance only where the objective
        keeps predictions positive)."""
        if not self.is_regression:
            return CLASSIFICATION_METRICS
        count = COUNT_METRICS.get(self.tuning.objective)
        return tuple(m for m in REGRESSION_METRICS if m not in COUNT_METRICS.values() or m == count)

    @property
    def attribute_columns(self) -> list[FeatureSpec]:
        """Sensitive columns that are not features: measured, never model inputs."""
        names = set(self.feature_names)
        return [s.as_column() for s in self.sensitive_attributes if s.column not in names]

    @property
    def data_columns(self) -> list[FeatureSpec]:
        """Every column the contract checks and the feature store keeps: the features, then
        the sensitive columns that are not features."""
        return [*self.features, *self.attribute_columns]

    @property
    def data_column_names(self) -> list[str]:
        return [c.name for c in self.data_columns]

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


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML file, at which line and column, as one message."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{path}: not valid YAML{where}: {problem}"


"""libyaml's safe loader when PyYAML was built with it: 1 ms a config instead of 7, and every
page of the console reads each model's config."""


_PARSED: dict[tuple[str, str], ModelConfig] = {}
"""Configs parsed lately, by path and exact text: the console's Models page reads every
model's config (20 models: 28 ms of parsing a page). Keyed on the text, not the file's
mtime, so a config rewritten within the clock's granularity is never served stale; the
models are frozen, so sharing one is safe."""
_PARSED_MAX = 256


def load_model_config(path: str | Path) -> ModelConfig:
    """Parse and validate one model YAML; every error names the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model config: {exc.strerror}") from exc
    key = (str(path), text)
    cached = _PARSED.get(key)
    if cached is not None:
        return cached
    cfg = _parse_model_config(path, text)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = cfg
    return cfg


def _parse_model_config(path: Path, text: str) -> ModelConfig:
    try:
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(path, exc)) from exc
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


def model_names(directory: Path | None = None) -> list[str]:
    """The models the config directory declares, by file name only (one broken config must not
    hide the others; a file whose name is not a model name is never a model)."""
    return sorted({p.stem for p in model_config_paths(directory) if NAME_PATTERN.fullmatch(p.stem)})


def load_all_model_configs(directory: Path | None = None) -> dict[str, ModelConfig]:
    return {c.name: c for c in map(load_model_config, model_config_paths(directory))}


def model_config_path(name: str, directory: Path | None = None) -> Path:
    """The YAML file that declares a model (its hash goes into lineage); the error lists the
    models that do exist.

    Raises:
        ConfigError: ``name`` is not a model name (it is never joined to a path), or no file
            declares it.
    """
    check_model_name(name)
    d = directory or config_dir() / "models"
    for suffix in (".yaml", ".yml"):
        if (d / f"{name}{suffix}").exists():
            return d / f"{name}{suffix}"
    known = [p.stem for p in model_config_paths(d)]
    raise ConfigError(f"unknown model {name!r}: no {d}/{name}.yaml (known: {known or 'none'})")


def get_model_config(name: str, directory: Path | None = None) -> ModelConfig:
    return load_model_config(model_config_path(name, directory))

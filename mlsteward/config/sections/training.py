"""Config sections for training: the search space and tuning, distributed training, the split
and how the decision threshold is chosen."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mlsteward.config.base import StrictModel


class SearchDimension(StrictModel):
    """One hyperparameter's distribution, as data (mirrors hyperopt's ``hp.*`` families)."""

    dist: Literal["uniform", "loguniform", "quniform", "qloguniform", "choice"] = Field(
        description="Hyperopt's distribution family."
    )
    low: float | None = Field(default=None, description="Lower end (log families: above 0).")
    high: float | None = Field(default=None, description="Upper end, above low.")
    q: float | None = Field(
        default=None, description="Step of the q families; a whole step gives integers."
    )
    options: list[Any] | None = Field(default=None, description="The values of choice.")

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


Objective = Literal[
    "binary:logistic",
    "reg:squarederror",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "count:poisson",
    "reg:tweedie",
]
REGRESSION_OBJECTIVES: tuple[str, ...] = (
    "reg:squarederror",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "count:poisson",
    "reg:tweedie",
)
# Objectives whose predictions come through a log link: always positive, explained on the log
# scale by XGBoost (serving and scoring restate contributions in the target's units).
LOG_LINK_OBJECTIVES = frozenset({"count:poisson", "reg:tweedie"})
# A count model's label must be a whole number >= 0; Tweedie's only >= 0.
NON_NEGATIVE_LABEL_OBJECTIVES = frozenset({"count:poisson", "reg:tweedie"})
INTEGER_LABEL_OBJECTIVES = frozenset({"count:poisson"})

EvalMetric = Literal[
    "logloss",
    "auc",
    "aucpr",
    "rmse",
    "mae",
    "mphe",
    "poisson-nloglik",
    "tweedie-nloglik",
]
CLASSIFICATION_EVAL_METRICS = ("logloss", "auc", "aucpr")
# XGBoost's own choice for each objective, so early stopping watches the loss being fitted.
DEFAULT_EVAL_METRIC: dict[str, str] = {
    "binary:logistic": "logloss",
    "reg:squarederror": "rmse",
    "reg:pseudohubererror": "mphe",
    "reg:absoluteerror": "mae",
    "count:poisson": "poisson-nloglik",
    "reg:tweedie": "tweedie-nloglik",
}
MAXIMISED_EVAL_METRICS = frozenset({"auc", "aucpr"})

DEFAULT_MAX_EVALS_CEILING = 200
"""Trials a webhook may ask for when a model sets no ``tuning.max_evals_ceiling``."""

TuningRunner = Literal["sequential", "threads", "dask", "ray"]


class ParallelTuning(StrictModel):
    """How Hyperopt trials are evaluated: one at a time, or in batches on a Prefect task runner.

    The batch size is part of the search (TPE sees a batch's pending trials when it suggests the
    next one), so the same seed and batch size give the same trials on every runner, and batch
    size 1 is exactly the sequential search. The runner, worker count and per-trial thread cap
    only decide where and how fast trials run. ``address`` points Dask (scheduler) or Ray
    (cluster) at production infrastructure; empty starts a local cluster for the run.
    """

    runner: TuningRunner = Field(
        default="sequential",
        description="Where trials run: sequential (one at a time), threads (in process), dask "
        "or ray (Prefect task runners).",
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=1_000,
        description="Trials per TPE batch; part of the search (recorded).",
    )
    workers: int = Field(default=0, ge=0, description="0 = batch_size, capped at the cores")
    trial_nthread: int = Field(
        default=0, ge=0, description="XGBoost threads per trial; 0 = cores // workers"
    )
    address: str | None = Field(
        default=None, description="Dask scheduler or Ray cluster; unset: a local cluster per run."
    )

    @model_validator(mode="after")
    def _coherent(self) -> ParallelTuning:
        if self.runner == "sequential" and self.address:
            raise ValueError("'address' is for the dask or ray runner, not 'sequential'")
        if self.runner == "threads" and self.address:
            raise ValueError("'address' is for the dask or ray runner; threads run in-process")
        return self


class TuningConfig(StrictModel):
    """The Hyperopt TPE search over XGBoost's parameters."""

    max_evals: int = Field(default=30, ge=1, le=10_000, description="Hyperopt trials.")
    max_evals_ceiling: int = Field(
        default=DEFAULT_MAX_EVALS_CEILING,
        ge=1,
        le=10_000,
        description="Most trials a run started by a signed CI webhook may ask for (at least "
        "max_evals; unset: 200, or max_evals when that is higher).",
    )
    seed: int = Field(default=42, ge=0, description="Seed for Hyperopt (rstate) and XGBoost.")
    early_stopping_rounds: int = Field(
        default=30, ge=1, description="Rounds without improvement on validation before a fit stops."
    )
    num_boost_round: int = Field(default=400, ge=1, description="Most boosting rounds per fit.")
    objective: Objective = Field(
        default="binary:logistic",
        description="XGBoost's objective: binary:logistic for binary_classification; for "
        "regression (default reg:squarederror) reg:pseudohubererror (outliers), "
        "reg:absoluteerror (the median), count:poisson (counts) or reg:tweedie (non-negative "
        "with many zeros).",
    )
    tweedie_variance_power: float = Field(
        default=1.5, gt=1, lt=2, description="reg:tweedie only: the variance power."
    )
    huber_slope: float = Field(
        default=1.0, gt=0, description="reg:pseudohubererror only: where the loss turns linear."
    )
    eval_metric: EvalMetric | None = Field(
        default=None,
        description="Validation metric of early stopping and of the search (auc, aucpr "
        "maximised, the others minimised); unset: the objective's own loss (logloss, rmse, "
        "mphe, mae, poisson-nloglik, tweedie-nloglik).",
    )
    nthread: int = Field(default=0, ge=0, description="0 = all cores")
    search_space: dict[str, SearchDimension] = Field(
        default_factory=default_search_space,
        description="Distributions searched, by XGBoost parameter; a configured space replaces "
        "the default one.",
    )
    parallel: ParallelTuning = Field(default_factory=ParallelTuning)

    @model_validator(mode="before")
    @classmethod
    def _ceiling_default(cls, data: Any) -> Any:
        """An unset ceiling never refuses the config's own max_evals, so a config written
        before the ceiling existed still loads."""
        if isinstance(data, dict) and "max_evals_ceiling" not in data:
            evals = data.get("max_evals")
            if isinstance(evals, int) and evals > DEFAULT_MAX_EVALS_CEILING:
                return {**data, "max_evals_ceiling": evals}
        return data

    @property
    def metric(self) -> str:
        """The validation metric as XGBoost names it (Tweedie's carries its power)."""
        name = self.eval_metric or DEFAULT_EVAL_METRIC[self.objective]
        if name == "tweedie-nloglik":
            return f"tweedie-nloglik@{self.tweedie_variance_power:g}"
        return name

    @property
    def is_regression(self) -> bool:
        return self.objective in REGRESSION_OBJECTIVES

    def objective_params(self) -> dict[str, Any]:
        """The objective and the parameters it alone reads, for XGBoost."""
        out: dict[str, Any] = {"objective": self.objective}
        if self.objective == "reg:tweedie":
            out["tweedie_variance_power"] = self.tweedie_variance_power
        elif self.objective == "reg:pseudohubererror":
            out["huber_slope"] = self.huber_slope
        return out

    @model_validator(mode="after")
    def _metric_fits_objective(self) -> TuningConfig:
        if self.eval_metric is None:
            return self
        classifying = self.eval_metric in CLASSIFICATION_EVAL_METRICS
        if classifying == self.is_regression:
            kind = "a regression" if self.is_regression else "a classification"
            raise ValueError(
                f"eval_metric {self.eval_metric!r} does not fit {kind} objective {self.objective!r}"
            )
        return self

    @model_validator(mode="after")
    def _ceiling_covers_max_evals(self) -> TuningConfig:
        if self.max_evals > self.max_evals_ceiling:
            raise ValueError(
                f"max_evals ({self.max_evals}) must not be above max_evals_ceiling "
                f"({self.max_evals_ceiling})"
            )
        return self


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
    workers: int = Field(
        default=2, ge=1, le=1_000, description="Worker slots the data is grouped into (recorded)."
    )
    threads_per_worker: int = Field(
        default=0, ge=0, description="LocalCluster; 0 = cores // workers"
    )
    chunk_rows: int = Field(
        default=250_000, ge=1, description="Entity rows per point-in-time join (one partition)."
    )
    staging_dir: str | None = Field(
        default=None, description="where partitions are written; unset = <state>/training_sets"
    )

    def applies(self, rows: int) -> bool:
        return self.above_rows is not None and rows > self.above_rows


class SplitConfig(StrictModel):
    """Time-ordered split: the oldest rows train, the newest rows test (no look-ahead)."""

    train: float = Field(default=0.7, gt=0, lt=1, description="Share of the oldest rows: fitting.")
    validation: float = Field(
        default=0.15, gt=0, lt=1, description="The next share: early stopping and the cut-off."
    )
    test: float = Field(
        default=0.15, gt=0, lt=1, description="Share of the newest rows: test metrics and gates."
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class DecisionThreshold(StrictModel):
    """How the probability cut-off for labels is chosen: maximise F1 on validation, or fixed.
    Classification only: a regression model predicts a number and has no cut-off."""

    strategy: Literal["max_f1", "fixed"] = Field(
        default="max_f1", description="max_f1: highest F1 on validation; fixed: value."
    )
    value: float = Field(default=0.5, gt=0, lt=1, description="The cut-off when fixed.")

"""A training run's settings, worked out once.

The flow's parameters (trial count, seed, promote, reason, commit) and the model config's
defaults and parallel settings become one ``TrainingSpec`` at the start of the run; the tuning
subflow, the tasks and the core read it and never resolve a default again. Reproduction builds
the same spec from the recorded config and recipe.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mlsteward.config.models import ModelConfig
from mlsteward.training.tuning import ExecutionPlan, SearchSpec, require_runner_package


def dask_plan(cfg: ModelConfig) -> ExecutionPlan:
    """Trials of a partitioned set run one at a time, each on the whole cluster; TPE still
    suggests them in the configured batches. The cluster is ``distributed.address``, else the
    tuning runner's Dask scheduler (one cluster serves both), else a LocalCluster."""
    d, parallel = cfg.distributed, cfg.tuning.parallel
    tuning_address = parallel.address if parallel.runner == "dask" else None
    return ExecutionPlan(
        "xgboost.dask",
        parallel.batch_size,
        d.workers,
        d.threads_per_worker,
        d.address or tuning_address,
    )


class TrainingSpec(BaseModel):
    """What one training run does, resolved from its parameters and the model config."""

    model_config = ConfigDict(frozen=True)

    cfg: ModelConfig
    search: SearchSpec
    """Trials, seed and where they run, for a training set in memory."""
    dask: ExecutionPlan
    """Where the trials of a partitioned training set run (``xgboost.dask``)."""
    promote: bool = True
    reason: str = "manual"
    git_ref: str | None = None

    @classmethod
    def resolve(
        cls,
        cfg: ModelConfig,
        *,
        max_evals: int | None = None,
        seed: int | None = None,
        promote: bool = True,
        reason: str = "manual",
        git_ref: str | None = None,
        require_runner: bool = True,
    ) -> TrainingSpec:
        """The run's settings; ``max_evals`` and ``seed`` default to ``tuning.max_evals`` and
        ``tuning.seed``.

        Raises:
            ConfigError: the configured runner's Prefect integration is not installed (checked
                unless ``require_runner`` is False: a rebuild needs no runner).
        """
        if require_runner:
            require_runner_package(cfg.tuning.parallel.runner)
        return cls(
            cfg=cfg,
            search=SearchSpec.resolve(cfg.tuning, max_evals=max_evals, seed=seed),
            dask=dask_plan(cfg),
            promote=promote,
            reason=reason,
            git_ref=git_ref,
        )

    def search_for(self, partitioned: bool) -> SearchSpec:
        """The search of a training set in memory, or of a partitioned one on Dask."""
        return self.search.model_copy(update={"plan": self.dask}) if partitioned else self.search

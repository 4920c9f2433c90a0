"""Hyperopt TPE in batches: B suggestions, then B evaluations side by side, then the next batch.

Why not ``fmin``: its loop suggests one trial, evaluates it, and only then suggests the next, so
trials cannot overlap. Asking ``tpe.suggest`` for B ids at once does not help either: after the
random start-up trials it returns only one. And ``SparkTrials``-style "as many in flight as
workers" turns TPE into random search when every trial is in flight at once.

What this loop does instead (DESIGN.md §5): each of the B suggestions in a batch is its own
``tpe.suggest`` call over the history so far, *including* the batch's earlier, still pending
trials (TPE counts them at loss = +inf, which pushes the next suggestion away from points already
being tried). Only then is the batch evaluated, and the results are written back into the trial
documents in trial-id order. Every step mirrors hyperopt 0.3's ``FMinIter.run``/``serial_evaluate``
call for call (same ``rstate`` draws, same ``new_trial_ids``/``refresh`` sequence), so:

* batch size 1 gives exactly ``fmin``'s trials (tested against ``fmin`` itself);
* the same seed and batch size give the same trials whatever evaluates them and in whatever order
  the evaluations finish: a batch's suggestions are all drawn before any result of that batch is
  known, and results are applied by trial id.

Nothing here knows about XGBoost, Prefect or MLflow: ``evaluate`` is any function from a batch of
sampled points to their result dicts.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from hyperopt import STATUS_OK, Domain, Trials, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_NEW, JOB_STATE_RUNNING, Ctrl, spec_from_misc
from hyperopt.utils import coarse_utcnow
from pydantic import BaseModel, ConfigDict

from mlsteward.config.sections.training import ParallelTuning, TuningConfig
from mlsteward.errors import ConfigError

Algo = Callable[..., list[dict[str, Any]]]


@dataclass(frozen=True)
class PendingTrial:
    """One suggested point, ready to evaluate anywhere (plain, picklable values)."""

    tid: int
    params: dict[str, Any]


BatchEvaluator = Callable[[Sequence[PendingTrial]], Sequence[dict[str, Any]]]
"""Evaluates a batch and returns one hyperopt result dict (``loss``, ``status``) per trial, in
the order of the batch it was given."""

BatchCallback = Callable[[Sequence[PendingTrial], Sequence[dict[str, Any]]], None]


def _not_called(_: Any) -> Any:  # pragma: no cover - evaluation goes through BatchEvaluator
    raise RuntimeError("batched search evaluates through its BatchEvaluator")


def _suggest_batch(
    domain: Domain, trials: Trials, rstate: np.random.Generator, size: int, algo: Algo
) -> list[dict[str, Any]]:
    """``size`` single-trial suggestions, each seeing the pending ones before it.

    The statement order is FMinIter.run's for one queued trial: ids, refresh, one rstate draw,
    insert, refresh.
    """
    docs = []
    for _ in range(size):
        new_ids = trials.new_trial_ids(1)
        trials.refresh()
        new = algo(new_ids, domain, trials, rstate.integers(2**31 - 1))
        if not new:
            break
        trials.insert_trial_docs(new)
        trials.refresh()
        docs.extend(trials._dynamic_trials[-len(new) :])
    return docs


def _sampled_point(domain: Domain, trials: Trials, doc: dict[str, Any]) -> dict[str, Any]:
    """The objective's argument for a trial, computed the way ``Domain.evaluate`` does."""
    doc["state"] = JOB_STATE_RUNNING
    now = coarse_utcnow()
    doc["book_time"] = now
    doc["refresh_time"] = now
    ctrl = Ctrl(trials, current_trial=doc)
    _, point = domain.evaluate_async(spec_from_misc(doc["misc"]), ctrl)
    return point


def batched_search(
    space: Any,
    evaluate: BatchEvaluator,
    *,
    max_evals: int,
    batch_size: int,
    rstate: np.random.Generator,
    algo: Algo = tpe.suggest,
    on_batch: BatchCallback | None = None,
) -> Trials:
    """Run ``max_evals`` trials of ``algo`` over ``space``, ``batch_size`` at a time.

    Args:
        space: a hyperopt search space (``hp.*`` expressions).
        evaluate: evaluates one batch; may run the trials in parallel and finish them in any
            order, but must return results in the batch's order.
        max_evals: total trials; the last batch is shorter when it does not divide evenly.
        batch_size: trials suggested before any of them is evaluated; 1 reproduces ``fmin``.
        rstate: ``np.random.default_rng(seed)``, drawn from exactly as ``fmin`` draws.
        algo: the suggestion algorithm (``tpe.suggest``; ``rand.suggest`` for comparisons).
        on_batch: called after each batch's results are recorded (e.g. to log trials).

    Returns:
        The hyperopt ``Trials`` with every trial DONE, as ``fmin`` would leave them.

    Raises:
        ValueError: a result without a valid ``status``/``loss``, or a wrong result count.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    domain = Domain(_not_called, space)
    trials = Trials()
    while len(trials._dynamic_trials) < max_evals:
        size = min(batch_size, max_evals - len(trials._dynamic_trials))
        docs = _suggest_batch(domain, trials, rstate, size, algo)
        if not docs:
            break
        batch = [PendingTrial(d["tid"], _sampled_point(domain, trials, d)) for d in docs]
        results = list(evaluate(batch))
        if len(results) != len(batch):
            raise ValueError(f"evaluator returned {len(results)} results for {len(batch)} trials")
        for doc, result in sorted(zip(docs, results, strict=True), key=lambda p: p[0]["tid"]):
            ctrl = Ctrl(trials, current_trial=doc)
            doc["result"] = domain.evaluate_async2(result, ctrl)
            doc["state"] = JOB_STATE_DONE
            doc["refresh_time"] = coarse_utcnow()
        trials.refresh()
        if on_batch is not None:
            on_batch(batch, [d["result"] for d in docs])
    unfinished = [d["tid"] for d in trials._dynamic_trials if d["state"] == JOB_STATE_NEW]
    assert not unfinished, f"trials left unevaluated: {unfinished}"
    return trials


def ok(loss: float) -> dict[str, Any]:
    """A successful trial's result dict."""
    return {"loss": float(loss), "status": STATUS_OK}


# --------------------------------------------------------------------------------------------
# Execution plan: where the batches run (never what they compute)
# --------------------------------------------------------------------------------------------

RUNNER_PACKAGES = {
    "dask": ("prefect_dask", "prefect-dask", ""),
    "ray": ("prefect_ray", "prefect-ray", "ray"),
}
"""runner -> (module, distribution, mlsteward extra that installs it; "" = a core dependency)."""


@dataclass(frozen=True)
class ExecutionPlan:
    """The resolved parallel settings of one search, recorded with the run and the version."""

    runner: str
    batch_size: int
    workers: int
    trial_nthread: int
    """XGBoost threads per trial; 0 = all cores (the sequential default)."""
    address: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_execution(
    parallel: ParallelTuning, nthread: int = 0, cores: int | None = None
) -> ExecutionPlan:
    """Fill in the defaults: as many workers as a batch has trials (at most the cores), and
    each trial's XGBoost capped at its share of the cores, so W trials x T threads never ask
    for more threads than there are cores (XGBoost threads meet at a barrier every boosting
    round; oversubscribed, they wait on each other).

    ``nthread`` is ``tuning.nthread``, used when trials run one at a time.
    """
    cores = cores or os.cpu_count() or 1
    if parallel.runner == "sequential":
        return ExecutionPlan(
            "sequential", parallel.batch_size, 1, parallel.trial_nthread or nthread
        )
    workers = parallel.workers or max(1, min(parallel.batch_size, cores))
    trial_nthread = parallel.trial_nthread or max(1, cores // workers)
    return ExecutionPlan(
        parallel.runner, parallel.batch_size, workers, trial_nthread, parallel.address
    )


class SearchSpec(BaseModel):
    """One search's settings, worked out once: how many trials, the seed, and where they run.

    The only place where the trial count and the seed fall back to the config's defaults
    (``tuning.max_evals``, ``tuning.seed``) and the execution plan is resolved.
    """

    model_config = ConfigDict(frozen=True)

    max_evals: int
    seed: int
    plan: ExecutionPlan

    @classmethod
    def resolve(
        cls,
        tuning: TuningConfig,
        *,
        max_evals: int | None = None,
        seed: int | None = None,
        cores: int | None = None,
    ) -> SearchSpec:
        return cls(
            max_evals=max_evals or tuning.max_evals,
            seed=tuning.seed if seed is None else seed,
            plan=plan_execution(tuning.parallel, tuning.nthread, cores),
        )

    def in_process(self) -> SearchSpec:
        """The same search with its batches on local threads: a Prefect runner (Dask, Ray)
        changes where trials run, never which trials (the batch size stays)."""
        if self.plan.runner in ("sequential", "threads"):
            return self
        return self.model_copy(update={"plan": replace(self.plan, runner="threads")})


def require_runner_package(
    runner: str, find_spec: Callable[[str], Any] = importlib.util.find_spec
) -> None:
    """Fail before any work starts when the configured runner's Prefect integration is absent.

    Checked when a search starts rather than when config loads: a recorded config that names
    Ray must still load (e.g. to reproduce the version, which needs no Ray) where Ray is absent.

    Raises:
        ConfigError: naming the missing package and how to install it.
    """
    if runner not in RUNNER_PACKAGES:
        return
    module, dist, extra = RUNNER_PACKAGES[runner]
    if find_spec(module) is None:
        how = (
            f"install the extra: pip install 'mlsteward[{extra}]'"
            if extra
            else f"pip install {dist}"
        )
        raise ConfigError(
            f"tuning.parallel.runner is {runner!r}, but the {dist} package is not installed: {how} "
            "(or choose runner 'threads' or 'sequential')"
        )

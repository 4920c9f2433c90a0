"""Training maths as plain functions: time split, search space, tuning and the refit.

Nothing here knows about Prefect, MLflow or Feast. The flow passes frames in and gets typed
results out; trial logging is a callback so the tuning loop stays testable on its own. How the
trials of a batch are spread over workers is an evaluator passed to ``search`` (the batched TPE
loop itself is ``mlsteward.training.tuning``), so the objective here is the same function on every
runner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from hyperopt import hp, space_eval

from mlsteward.config.sections.training import (
    MAXIMISED_EVAL_METRICS,
    SearchDimension,
    TuningConfig,
)
from mlsteward.features.encoding import (
    FeatureEncoding,
)
from mlsteward.training.tuning import (
    ExecutionPlan,
    PendingTrial,
    SearchSpec,
    batched_search,
    ok,
)

# --------------------------------------------------------------------------------------------
# Time-ordered split
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    train: pd.DataFrame
    """Empty (columns only) when the training rows live in partitions for ``xgboost.dask``;
    ``train_rows`` then counts them."""
    validation: pd.DataFrame
    test: pd.DataFrame
    train_rows: int | None = None

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train) if self.train_rows is None else self.train_rows,
            "validation": len(self.validation),
            "test": len(self.test),
        }


def time_split(
    frame: pd.DataFrame,
    ts_col: str,
    train: float,
    validation: float,
    tie_col: str = "row_id",
    keep_ties_together: bool = True,
) -> Split:
    """Oldest rows train, newest rows test: the test set imitates the future the model will see.

    Rows sharing a timestamp at a boundary stay on the same side, so no event time appears in
    two parts (a silent source of look-ahead). When ingestion had to assign one timestamp to
    every row (the source has no event time), there is no time order to respect:
    ``keep_ties_together=False`` then splits in ``tie_col`` order.
    """
    ordered = frame.sort_values([ts_col, tie_col], kind="mergesort").reset_index(drop=True)
    a, b = split_boundaries(ordered[ts_col].to_numpy(), train, validation, keep_ties_together)
    return Split(
        ordered.iloc[:a].reset_index(drop=True),
        ordered.iloc[a:b].reset_index(drop=True),
        ordered.iloc[b:].reset_index(drop=True),
    )


SPLIT_PARTS = ("train", "validation", "test")


def split_boundaries(
    ts: np.ndarray, train: float, validation: float, keep_ties_together: bool = True
) -> tuple[int, int]:
    """Where validation and test start in rows sorted by (event time, row id).

    Only the sorted times are needed, so a training set split in chunks (``xgboost.dask``)
    finds exactly the boundaries ``time_split`` finds on the whole frame.

    Raises:
        ValueError: fewer than 3 rows, or a part would be empty.
    """
    n = len(ts)
    if n < 3:
        raise ValueError(f"need at least 3 rows to split, got {n}")

    def boundary(fraction: float) -> int:
        i = min(max(round(n * fraction), 1), n - 1)
        if not keep_ties_together:
            return i
        return int(np.searchsorted(ts, ts[i], side="left")) or int(
            np.searchsorted(ts, ts[i], side="right")
        )

    a = boundary(train)
    b = max(boundary(train + validation), a + 1)
    b = min(b, n)
    empty = [name for name, size in zip(SPLIT_PARTS, (a, b - a, n - b), strict=True) if size <= 0]
    if empty:
        raise ValueError(
            f"time split left {empty} empty ({n} rows, fractions {train}/"
            f"{validation}); more distinct event times are needed"
        )
    return a, b


# --------------------------------------------------------------------------------------------
# Search space and tuning
# --------------------------------------------------------------------------------------------


def _is_integral(dim: SearchDimension) -> bool:
    return dim.dist in ("quniform", "qloguniform") and float(dim.q or 0).is_integer()


def _log_bounds(d: SearchDimension) -> tuple[float, float]:
    """The log of a log family's bounds (the config requires both, above 0)."""
    assert d.low is not None and d.high is not None
    return math.log(d.low), math.log(d.high)


def build_search_space(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """Translate the config's space (data) into hyperopt expressions."""
    out: dict[str, Any] = {}
    for name, d in sorted(space.items()):
        if d.dist == "uniform":
            out[name] = hp.uniform(name, d.low, d.high)
        elif d.dist == "loguniform":
            out[name] = hp.loguniform(name, *_log_bounds(d))
        elif d.dist == "quniform":
            out[name] = hp.quniform(name, d.low, d.high, d.q)
        elif d.dist == "qloguniform":
            out[name] = hp.qloguniform(name, *_log_bounds(d), d.q)
        else:
            out[name] = hp.choice(name, d.options)
    return out


def typed_params(params: dict[str, Any], space: dict[str, SearchDimension]) -> dict[str, Any]:
    """q-distributions with a whole-number step are integers (max_depth=4, not 4.0)."""
    out = {}
    for k, v in params.items():
        dim = space.get(k)
        if dim is not None and _is_integral(dim):
            out[k] = round(v)
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def base_params(tuning: TuningConfig, seed: int) -> dict[str, Any]:
    return {
        **tuning.objective_params(),
        "eval_metric": tuning.metric,
        "tree_method": "hist",
        "seed": seed,
        "nthread": tuning.nthread or 0,
        "verbosity": 0,
    }


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    loss: float
    best_iteration: int
    best_score: float


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_iteration: int
    best_loss: float
    trials: list[TrialResult]
    seed: int
    batch_size: int = 1
    """Part of the search itself: the same seed with another batch size gives other trials."""
    runner: str = "sequential"
    """Where trials ran; does not change the result (same seed and batch size, same trials)."""
    trial_nthread: int = 0
    """XGBoost threads per trial (0 = all cores); does not change results with ``hist``."""
    distributed: dict[str, Any] = field(default_factory=dict)
    """For ``xgboost.dask`` training: worker count and chunking, which are part of the result."""

    def execution(self) -> dict[str, Any]:
        """How the search ran, for lineage (``Lineage.tuning_execution``)."""
        out = {
            "runner": self.runner,
            "batch_size": self.batch_size,
            "trial_nthread": self.trial_nthread,
        }
        return {**out, "distributed": self.distributed} if self.distributed else out


TrialCallback = Callable[[TrialResult, TrialResult, int], None]


@dataclass(frozen=True)
class TrialSpec:
    """One trial to train: its number (1-based, = hyperopt tid + 1) and typed params."""

    number: int
    params: dict[str, Any]


TrialEvaluator = Callable[[Sequence[TrialSpec]], Sequence[TrialResult]]
"""Trains a batch of trials (anywhere, in any order) and returns their results in batch order."""


def _loss(metric: str, score: float) -> float:
    """Hyperopt minimises; AUC-like metrics are maximised, so flip them."""
    return -score if metric in MAXIMISED_EVAL_METRICS else score


def make_dmatrix(
    x: pd.DataFrame, y: pd.Series | np.ndarray | None, enc: FeatureEncoding
) -> xgb.DMatrix:
    return xgb.DMatrix(
        x,
        label=None if y is None else np.asarray(y),
        feature_types=enc.feature_types,
        enable_categorical=True,
    )


def train_trial(
    dtrain: xgb.DMatrix,
    dval: xgb.DMatrix,
    tuning: TuningConfig,
    seed: int,
    spec: TrialSpec,
    nthread: int | None = None,
) -> TrialResult:
    """The objective: one early-stopped XGBoost fit, scored on validation.

    ``nthread`` caps XGBoost when trials share the cores; with ``tree_method=hist`` the trees do
    not depend on it (DESIGN.md §5), so the cap changes speed, never results.
    """
    params = base_params(tuning, seed)
    if nthread is not None:
        params["nthread"] = nthread
    booster = xgb.train(
        {**params, **spec.params},
        dtrain,
        num_boost_round=tuning.num_boost_round,
        evals=[(dval, "validation")],
        early_stopping_rounds=tuning.early_stopping_rounds,
        verbose_eval=False,
    )
    return trial_result(booster, tuning, spec)


def trial_result(booster: xgb.Booster, tuning: TuningConfig, spec: TrialSpec) -> TrialResult:
    """A trial's outcome from its early-stopped booster (in process or from ``xgboost.dask``)."""
    score = float(booster.best_score)
    return TrialResult(
        number=spec.number,
        params=spec.params,
        loss=_loss(tuning.metric, score),
        best_iteration=int(booster.best_iteration),
        best_score=score,
    )


def local_evaluator(
    dtrain: xgb.DMatrix,
    dval: xgb.DMatrix,
    tuning: TuningConfig,
    seed: int,
    plan: ExecutionPlan,
) -> TrialEvaluator:
    """Trials in this process: one after another, or on ``plan.workers`` threads (XGBoost
    releases the GIL while it trains, so threads do run in parallel)."""

    def one(spec: TrialSpec) -> TrialResult:
        return train_trial(dtrain, dval, tuning, seed, spec, plan.trial_nthread)

    def evaluate(specs: Sequence[TrialSpec]) -> list[TrialResult]:
        if plan.workers == 1 or len(specs) == 1:
            return [one(s) for s in specs]
        with ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="trial") as pool:
            return list(pool.map(one, specs))

    return evaluate


def search(
    tuning: TuningConfig,
    evaluator: TrialEvaluator,
    plan: ExecutionPlan,
    *,
    max_evals: int,
    seed: int,
    on_trial: TrialCallback | None = None,
) -> TuningResult:
    """Hyperopt TPE in batches of ``plan.batch_size`` (see ``mlsteward.training.tuning``), each
    batch
    trained by ``evaluator``.

    ``on_trial`` runs in this process after each batch, once per trial in trial-number order,
    so trial logs read the same whichever trial of a batch finished first.
    """
    space = build_search_space(tuning.search_space)
    results: list[TrialResult] = []

    def evaluate(batch: Sequence[PendingTrial]) -> list[dict[str, Any]]:
        specs = [TrialSpec(p.tid + 1, typed_params(p.params, tuning.search_space)) for p in batch]
        done = list(evaluator(specs))
        if [t.number for t in done] != [s.number for s in specs]:
            raise ValueError("evaluator returned results out of batch order")
        for trial in done:
            results.append(trial)
            if on_trial is not None:
                on_trial(trial, min(results, key=lambda t: t.loss), max_evals)
        return [ok(t.loss) for t in done]

    trials = batched_search(
        space,
        evaluate,
        max_evals=max_evals,
        batch_size=plan.batch_size,
        rstate=np.random.default_rng(seed),
    )
    best_params = typed_params(space_eval(space, trials.argmin), tuning.search_space)
    best = min(results, key=lambda t: t.loss)
    return TuningResult(
        best_params=best_params,
        best_iteration=best.best_iteration,
        best_loss=best.loss,
        trials=results,
        seed=seed,
        batch_size=plan.batch_size,
        runner=plan.runner,
        trial_nthread=plan.trial_nthread,
    )


def tune(
    dtrain: xgb.DMatrix,
    dval: xgb.DMatrix,
    tuning: TuningConfig,
    max_evals: int | None = None,
    seed: int | None = None,
    on_trial: TrialCallback | None = None,
) -> TuningResult:
    """Hyperopt TPE over the configured space with early stopping on validation, in process.

    Fixed seeds for both hyperopt (``rstate``) and XGBoost make the search repeatable: the same
    data, seed and batch size give the same trials, best params and model bytes. With the
    default config (sequential, batch size 1) this is exactly ``hyperopt.fmin``. A parallel
    config runs its batches on local threads here; the Prefect runners (Dask, Ray) are the
    training task's business and give the same result.
    """
    spec = SearchSpec.resolve(tuning, max_evals=max_evals, seed=seed)
    return tune_in_process(dtrain, dval, tuning, spec, on_trial)


def tune_in_process(
    dtrain: xgb.DMatrix,
    dval: xgb.DMatrix,
    tuning: TuningConfig,
    spec: SearchSpec,
    on_trial: TrialCallback | None = None,
) -> TuningResult:
    """``tune`` with its settings already resolved (a training run's ``SearchSpec``)."""
    local = spec.in_process()
    return search(
        tuning,
        local_evaluator(dtrain, dval, tuning, local.seed, local.plan),
        local.plan,
        max_evals=local.max_evals,
        seed=local.seed,
        on_trial=on_trial,
    )


XGBModel = xgb.XGBClassifier | xgb.XGBRegressor
"""A fitted model: a classifier (probabilities) or a regressor (numbers in the label's units)."""


def fit_final(
    x_train: pd.DataFrame,
    y_train: pd.Series,
    enc: FeatureEncoding,
    tuning: TuningConfig,
    result: TuningResult,
) -> XGBModel:
    """Refit the best trial with exactly its early-stopped number of trees.

    Training the winning configuration for ``best_iteration + 1`` rounds reproduces the best
    trial's trees without the extra rounds early stopping had to look at, so every consumer of
    the saved model (pyfunc, native, SHAP) uses the same trees with no iteration_range to forget.
    """
    model = final_classifier(enc, tuning, result)
    model.fit(x_train, y_train.to_numpy())
    return model


def final_classifier(enc: FeatureEncoding, tuning: TuningConfig, result: TuningResult) -> XGBModel:
    """The unfitted model of the best trial (a classifier, or a regressor for a regression
    objective), trees capped at its early-stopped count."""
    params = {**base_params(tuning, result.seed), **result.best_params}
    nthread = params.pop("nthread")
    for key in ("seed", "verbosity"):
        params.pop(key)
    kind = xgb.XGBRegressor if tuning.is_regression else xgb.XGBClassifier
    return kind(
        **params,
        n_estimators=result.best_iteration + 1,
        random_state=result.seed,
        n_jobs=nthread or None,
        enable_categorical=True,
        feature_types=enc.feature_types,
        verbosity=0,
    )

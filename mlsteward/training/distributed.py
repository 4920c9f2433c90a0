"""Hyperopt/XGBoost on a Dask cluster with ``xgboost.dask``, for training sets above a size.

The training rows never pass through the flow process: each parquet partition (written by
``mlsteward.training.partitioned_set``) is read and encoded on the worker that trains on it.
Validation
rows, which the gates also need, are scattered from the flow process.

Why partitions are pinned: ``xgboost.dask`` builds one local matrix per worker from the
partitions that worker holds, and the quantile sketch and the histograms it reduces across
workers depend on that grouping. Dask places partitions wherever it likes; measured here, six
runs over the same data, params and seed gave six different models. So partition i always
trains in worker slot ``i % workers``, in partition order, whatever worker Dask first put it
on: the same data, params, seed and worker count then give the same model bytes (tested). Which
physical worker holds a slot, and which rank it gets, do not matter.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
import xgboost.dask as dxgb
from dask import dataframe as dd
from distributed import Client, Future, LocalCluster

from mlsteward.config.sections.training import DistributedTraining, TuningConfig
from mlsteward.errors import ConfigError, MlstewardError
from mlsteward.features.encoding import FeatureEncoding, encode
from mlsteward.training.fitting import (
    TrialEvaluator,
    TrialSpec,
    TuningResult,
    XGBModel,
    base_params,
    final_classifier,
    trial_result,
)
from mlsteward.training.partitioned_set import TrainPartitions

WORKER_WAIT_SECONDS = 30


@contextlib.contextmanager
def dask_client(settings: DistributedTraining, address: str | None) -> Iterator[Client]:
    """A client on the cluster at ``address``, or on a LocalCluster started for the run.

    The client is the process's default while open: ``xgboost.dask`` looks the default up even
    when it is handed a client.

    Raises:
        ConfigError: the cluster has fewer workers than ``settings.workers``.
    """
    with contextlib.ExitStack() as stack:
        if address:
            client = stack.enter_context(Client(address))
            # Workers of a cluster just started may still be joining; too few after this is
            # refused by ``worker_slots`` with the counts.
            with contextlib.suppress(TimeoutError):
                client.wait_for_workers(settings.workers, timeout=WORKER_WAIT_SECONDS)
        else:
            cores = os.cpu_count() or 1
            threads = settings.threads_per_worker or max(1, cores // settings.workers)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=settings.workers,
                    threads_per_worker=threads,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.WARNING,
                )
            )
            client = stack.enter_context(Client(cluster))
        yield client


def worker_slots(client: Client, count: int) -> list[str]:
    """``count`` worker addresses in a stable order (slot j = j-th address)."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if len(workers) < count:
        raise ConfigError(
            f"distributed.workers is {count} but the Dask cluster has {len(workers)} worker(s); "
            "the worker count is part of the result, so it is not lowered silently"
        )
    return workers[:count]


def _read_partition(path: str, enc: FeatureEncoding, label: str) -> tuple[pd.DataFrame, pd.Series]:
    """Runs on a worker: one partition's encoded matrix and label."""
    frame = pd.read_parquet(path, columns=[*enc.columns, label])
    x = encode(frame, enc)
    return x, pd.Series(frame[label].to_numpy(dtype=np.float32), index=x.index, name=label)


def _matrix(
    client: Client,
    slots: Sequence[str],
    parts: Sequence[Future],
    enc: FeatureEncoding,
    label: str,
) -> dxgb.DaskDMatrix:
    """A DaskDMatrix over ``(x, y)`` futures, partition i pinned to slot ``i % len(slots)``."""
    xs, ys = [], []
    for i, part in enumerate(parts):
        where = {"workers": [slots[i % len(slots)]], "allow_other_workers": False, "pure": False}
        xs.append(client.submit(operator.getitem, part, 0, **where))
        ys.append(client.submit(operator.getitem, part, 1, **where))
    meta_x = pd.DataFrame({c: pd.Series(dtype=np.float32) for c in enc.columns})
    meta_y = pd.Series(dtype=np.float32, name=label)
    matrix = dxgb.DaskDMatrix(
        client,
        dd.from_delayed(xs, meta=meta_x, verify_meta=False),
        dd.from_delayed(ys, meta=meta_y, verify_meta=False),
        feature_types=enc.feature_types,
        enable_categorical=True,
    )
    return _regroup(matrix, slots)


def _regroup(matrix: dxgb.DaskDMatrix, slots: Sequence[str]) -> dxgb.DaskDMatrix:
    """Make the partition → worker grouping the pinned one (see the module docstring).

    ``DaskDMatrix`` records the grouping it found in ``worker_map`` and training sends each
    worker its list; a part that Dask computed elsewhere is fetched to its slot's worker.
    """
    order = getattr(matrix, "partition_order", None)
    found = getattr(matrix, "worker_map", None)
    if order is None or found is None:
        raise MlstewardError(
            f"xgboost {xgb.__version__}: DaskDMatrix has no partition_order/worker_map; "
            "distributed training cannot pin partitions to workers with this version"
        )
    futures = {f.key: f for fs in found.values() for f in fs}
    grouped: dict[str, list[Future]] = defaultdict(list)
    for key, i in sorted(order.items(), key=operator.itemgetter(1)):
        grouped[slots[i % len(slots)]].append(futures[key])
    matrix.worker_map = grouped
    return matrix


@dataclass
class DaskTraining:
    """A cluster with the training and validation matrices loaded, for a search and a refit."""

    client: Client
    dtrain: dxgb.DaskDMatrix
    dval: dxgb.DaskDMatrix
    encoding: FeatureEncoding

    def params(self, tuning: TuningConfig, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
        """XGBoost params as in process, except threads: each worker uses its own (0 would be
        passed through as "all cores of the machine" to every worker on it)."""
        params = {**base_params(tuning, seed), **extra}
        if not params.get("nthread"):
            params.pop("nthread", None)
        return params

    def evaluator(self, tuning: TuningConfig, seed: int) -> TrialEvaluator:
        """Trials one after another, each using the whole cluster (TPE still suggests in the
        configured batches, so the trials are those of any other runner's search)."""

        def one(spec: TrialSpec) -> Any:
            out = dxgb.train(
                self.client,
                self.params(tuning, seed, spec.params),
                self.dtrain,
                num_boost_round=tuning.num_boost_round,
                evals=[(self.dval, "validation")],
                early_stopping_rounds=tuning.early_stopping_rounds,
                verbose_eval=False,
            )
            return trial_result(out["booster"], tuning, spec)

        def evaluate(specs: Sequence[TrialSpec]) -> list[Any]:
            return [one(s) for s in specs]

        return evaluate

    def fit(self, tuning: TuningConfig, result: TuningResult) -> XGBModel:
        """The best trial's params for exactly its early-stopped number of rounds, as the
        model ``fit_final`` would make in process."""
        out = dxgb.train(
            self.client,
            self.params(tuning, result.seed, result.best_params),
            self.dtrain,
            num_boost_round=result.best_iteration + 1,
            verbose_eval=False,
        )
        model = final_classifier(self.encoding, tuning, result)
        model.load_model(bytearray(out["booster"].save_raw("json")))
        return model


@contextlib.contextmanager
def dask_training(
    settings: DistributedTraining,
    address: str | None,
    partitions: TrainPartitions,
    x_val: pd.DataFrame,
    y_val: pd.Series,
    enc: FeatureEncoding,
    label: str,
) -> Iterator[DaskTraining]:
    """Open the cluster, read the training partitions on their workers, scatter validation."""
    missing = [p for p in partitions.paths if not Path(p).exists()]
    if missing:
        raise MlstewardError(f"training partitions are missing: {missing[:3]}")
    with dask_client(settings, address) as client:
        slots = worker_slots(client, settings.workers)
        train_parts = [
            client.submit(
                _read_partition,
                path,
                enc,
                label,
                workers=[slots[i % len(slots)]],
                allow_other_workers=False,
                pure=False,
            )
            for i, path in enumerate(partitions.paths)
        ]
        val_parts = []
        chunks = np.array_split(np.arange(len(x_val)), min(len(slots), max(1, len(x_val))))
        for j, rows in enumerate(chunks):
            x = x_val.iloc[rows].reset_index(drop=True)
            y = pd.Series(y_val.iloc[rows].to_numpy(dtype=np.float32), name=label)
            val_parts.append(client.scatter([(x, y)], workers=[slots[j]], hash=False)[0])
        yield DaskTraining(
            client=client,
            dtrain=_matrix(client, slots, train_parts, enc, label),
            dval=_matrix(client, slots, val_parts, enc, label),
            encoding=enc,
        )

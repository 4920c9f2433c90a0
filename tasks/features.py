"""Feature-stage tasks: point-in-time training sets from Feast (ingestion and the online store
are ``tasks.ingestion``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.config.models import ModelConfig
from mlsteward.data.state import SnapshotInfo, current_snapshot
from mlsteward.errors import MlstewardError, NoSnapshotError
from mlsteward.features.retrieval import entity_frame, get_training_frame
from mlsteward.features.store import get_store
from mlsteward.integrity import sha256_file
from mlsteward.training.partitioned_set import (
    partition_root,
    release_directory,
    remove_partitions,
    staging_directory,
)
from mlsteward.training.prepared import PreparedData, prepare_partitioned
from tasks.common import run_logger


def verified_snapshot(cfg: ModelConfig) -> SnapshotInfo:
    """The current snapshot, after checking its bytes still hash to its data version."""
    snap = current_snapshot(cfg.name)
    if snap is None:
        raise NoSnapshotError(
            f"model {cfg.name!r} has no ingested data yet: run `mlsteward ingest {cfg.name}`"
        )
    path = Path(snap.path)
    if not path.exists():
        raise MlstewardError(f"snapshot {path} of model {cfg.name!r} is missing")
    actual = sha256_file(path)
    if actual != snap.digest:
        raise MlstewardError(
            f"snapshot {path} was modified after ingestion: SHA-256 {actual} != recorded "
            f"{snap.digest}; refusing to train on it"
        )
    return snap


@task(name="resolve-snapshot", cache_policy=NO_CACHE)
def resolve_snapshot(cfg: ModelConfig) -> SnapshotInfo:
    snap = verified_snapshot(cfg)
    run_logger().info(
        "training on data version %s (%s rows, %s .. %s)",
        snap.digest[:12],
        snap.rows,
        snap.min_timestamp,
        snap.max_timestamp,
    )
    return snap


@task(name="retrieve-training-set", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def retrieve_training_set(cfg: ModelConfig, snapshot: SnapshotInfo) -> pd.DataFrame:
    """Point-in-time join through Feast; retried because it is I/O against the stores."""
    entities = entity_frame(cfg, snapshot)
    frame = get_training_frame(cfg, entities)
    run_logger().info(
        "feature service %r returned %s rows x %s features%s",
        cfg.feature_service_name,
        len(frame),
        len(cfg.feature_names),
        _beside(cfg),
    )
    return frame


def _beside(cfg: ModelConfig) -> str:
    """The sensitive columns joined beside the features, as the log names them."""
    names = [c.name for c in cfg.attribute_columns]
    return f", with sensitive column(s) {names} beside them (not model inputs)" if names else ""


@task(name="retrieve-partitioned-training-set", cache_policy=NO_CACHE)
def retrieve_partitioned_training_set(cfg: ModelConfig, snapshot: SnapshotInfo) -> PreparedData:
    """The point-in-time join in chunks of ``distributed.chunk_rows`` entity rows, training
    rows staged as parquet partitions for the Dask workers (the set is above
    ``distributed.above_rows``)."""
    entities = entity_frame(cfg, snapshot)
    store = get_store()
    directory = staging_directory(partition_root(cfg))
    try:
        data = prepare_partitioned(
            cfg,
            entities,
            lambda rows: get_training_frame(cfg, rows, store=store),
            snapshot,
            directory,
        )
    except BaseException:
        release_directory(directory)
        raise
    parts = data.train_partitions
    assert parts is not None
    run_logger().info(
        "feature service %r returned %s rows x %s features%s in chunks of %s; %s training "
        "rows in %s partitions under %s, time split %s",
        cfg.feature_service_name,
        len(entities),
        len(cfg.feature_names),
        _beside(cfg),
        cfg.distributed.chunk_rows,
        parts.rows,
        len(parts.paths),
        parts.directory,
        data.split.sizes(),
    )
    return data


def release_training_set(data: PreparedData) -> None:
    """Remove the training set's staged partitions, if it has any (a plain call: it also runs
    while a failed run is being cleaned up)."""
    remove_partitions(data.train_partitions)

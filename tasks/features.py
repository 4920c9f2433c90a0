"""Feature-stage tasks: ingestion and point-in-time training sets from Feast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.data.ingestion import IngestResult, ingest
from mlsteward.data.state import SnapshotInfo, current_snapshot
from mlsteward.errors import MlstewardError, NoSnapshotError
from mlsteward.features.materialize import materialize
from mlsteward.features.repo import apply_model
from mlsteward.features.retrieval import get_training_frame
from mlsteward.features.store import get_store
from mlsteward.governance.promotion import open_audit
from mlsteward.integrity import sha256_file
from mlsteward.training.partitioned_set import (
    partition_root,
    release_directory,
    remove_partitions,
    staging_directory,
)
from mlsteward.training.prepared import PreparedData, prepare_partitioned
from tasks.common import run_logger


def entity_frame(cfg: ModelConfig, snapshot: SnapshotInfo) -> pd.DataFrame:
    """Entity rows (id, event time, label) with a row id: Feast does not keep row order."""
    cols = [cfg.source.entity, cfg.timestamp_column, cfg.label]
    frame = pd.read_parquet(snapshot.path, columns=cols)
    frame.insert(0, "row_id", np.arange(len(frame), dtype="int64"))
    return frame


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


@task(name="ingest-source", cache_policy=NO_CACHE)
def ingest_source(
    cfg: ModelConfig, source: str | None = None, actor: str = "system"
) -> IngestResult:
    """Ingest and audit the outcome: accepted data versions and refused sources alike."""
    with open_audit() as audit:
        try:
            result = ingest(cfg, source, publish=apply_model)
        except MlstewardError as exc:
            report = getattr(exc, "report", None) or {}
            audit.append(
                Action.INGESTION_REJECTED,
                model=cfg.name,
                actor=actor,
                reason=str(exc)[:2000],
                details={
                    "source": source or str(cfg.source.resolved_path()),
                    **{
                        k: report[k]
                        for k in ("total_rows", "bad_rows", "bad_share", "violations")
                        if k in report
                    },
                },
            )
            raise
        audit.append(
            Action.INGESTION_ACCEPTED,
            model=cfg.name,
            actor=actor,
            reason=f"data version {result.snapshot.digest[:12]}",
            details={
                "data_version": result.snapshot.digest,
                "source": result.snapshot.source_path,
                "rows": result.snapshot.rows,
                "bad_rows": result.report.bad_rows,
                "quarantine_path": str(result.quarantine_path) if result.quarantine_path else None,
                **(
                    {"offline_table": result.offline_table.to_dict()}
                    if result.offline_table
                    else {}
                ),
            },
        )
    log = run_logger()
    log.info(
        "ingested %s rows into %s (data version %s)",
        result.snapshot.rows,
        cfg.name,
        result.snapshot.digest[:12],
    )
    if result.offline_table:
        table = result.offline_table
        log.info(
            "offline table %s: %s (%s rows, %.2f s)",
            table.name,
            "loaded" if table.created else "reused after verifying its row count",
            table.rows,
            table.seconds,
        )
    if result.report.bad_rows:
        log.warning("%s rows quarantined in %s", result.report.bad_rows, result.quarantine_path)
    return result


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
        "feature service %r returned %s rows x %s features",
        cfg.feature_service_name,
        len(frame),
        len(cfg.feature_names),
    )
    return frame


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
        "feature service %r returned %s rows x %s features in chunks of %s; %s training rows "
        "in %s partitions under %s, time split %s",
        cfg.feature_service_name,
        len(entities),
        len(cfg.feature_names),
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


@task(name="materialize", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def materialize_online(cfg: ModelConfig) -> dict:
    return materialize(cfg)

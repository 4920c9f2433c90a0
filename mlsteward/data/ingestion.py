"""Ingestion: source file → data contract → content-addressed snapshot → Feast source.

The order matters for the "loses nothing" promise: quarantine is written first (so bad rows are
never just dropped), the snapshot is written under its own SHA-256 (so the same data always gets
the same data version, and a snapshot never changes after the fact), with the PostgreSQL offline
store it is loaded into its immutable table (``offline_tables``), Feast is pointed at it, and
only then the model's current-snapshot pointer moves. A failure at any step leaves the previous
state in force.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.settings import quarantine_dir, snapshots_dir
from mlsteward.data.contract import ContractReport, check_contract, enforce, read_source
from mlsteward.data.offline_tables import OfflineTable, load_snapshot, uses_postgres
from mlsteward.data.state import SnapshotInfo, set_current_snapshot
from mlsteward.errors import ContractViolation
from mlsteward.integrity import sha256_file


class IngestionSpec(BaseModel):
    """One ingestion run, worked out once at its start: the model, the source it reads and who
    runs it (the actor of its audit record, accepted or refused)."""

    model_config = ConfigDict(frozen=True)

    cfg: ModelConfig
    source: str | None
    """The file the request names; None reads the config's ``source.path``."""
    actor: str

    @classmethod
    def resolve(cls, model: str, *, source: str | None = None, actor: str) -> IngestionSpec:
        """An empty ``source`` means the config's, as an absent one does.

        Raises:
            ConfigError: no (valid) config for ``model``.
        """
        return cls(cfg=get_model_config(model), source=source or None, actor=actor)

    @property
    def source_label(self) -> str:
        """The source as the audit trail names it: the path asked for, or the config's."""
        return self.source or str(self.cfg.source.resolved_path())


@dataclass
class IngestResult:
    snapshot: SnapshotInfo
    report: ContractReport
    quarantine_path: Path | None
    offline_table: OfflineTable | None = None  # the snapshot's PostgreSQL table, if any

    def to_dict(self) -> dict:
        return {
            "model": self.snapshot.model,
            "data_version": self.snapshot.digest,
            "snapshot_path": self.snapshot.path,
            "rows": self.snapshot.rows,
            "time_range": [self.snapshot.min_timestamp, self.snapshot.max_timestamp],
            "quarantine_path": str(self.quarantine_path) if self.quarantine_path else None,
            "contract": self.report.to_dict(),
            "offline_table": self.offline_table.to_dict() if self.offline_table else None,
        }


class IngestionResult(BaseModel):
    """A source that passed the data contract, as the model's new data version: what the
    ingestion flow returns (``model_dump()`` is ``IngestResult.to_dict()``)."""

    model: str
    data_version: str
    snapshot_path: str
    rows: int
    time_range: list[str]
    """First and last event time of the snapshot."""
    quarantine_path: str | None
    contract: dict[str, Any]
    """The contract report: rows, bad rows and every violation."""
    offline_table: dict[str, Any] | None


def write_quarantine(cfg: ModelConfig, quarantined: pd.DataFrame, source: Path) -> Path | None:
    """Keep every rejected row with the rules it broke, as CSV a person can open."""
    if quarantined.empty:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = quarantine_dir(cfg.name) / f"{stamp}_{source.stem}.csv"
    quarantined.to_csv(path, index=False)
    return path


def write_snapshot(cfg: ModelConfig, good: pd.DataFrame) -> tuple[Path, str]:
    """Write rows in a canonical order; the file's SHA-256 is the data version.

    Sorting and a fixed writer configuration make the bytes a function of the data alone, so
    re-ingesting identical data yields the identical version (and file).
    """
    ordered = good.sort_values([cfg.timestamp_column, cfg.source.entity], kind="mergesort")
    table = pa.Table.from_pandas(ordered.reset_index(drop=True), preserve_index=False)
    directory = snapshots_dir(cfg.name)
    # Hidden while it is written: a run killed here leaves no file a reader could take for a
    # snapshot (readers and `mlsteward gc` look at `<digest>.parquet` only).
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".parquet.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
        digest = sha256_file(tmp)
        final = directory / f"{digest}.parquet"
        if final.exists():
            tmp.unlink()
            # Re-ingesting a known data version makes it young again, so `mlsteward gc`'s
            # grace period covers the moment before the current pointer moves to it.
            os.utime(final)
        else:
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final, digest


Publish = Callable[[ModelConfig, Path, dict[str, str]], object]
"""Points the feature store at a new snapshot (``features.repo.apply_model``): passed in by the
caller so the data room does not depend on the feature room above it."""


def ingest(
    cfg: ModelConfig,
    source: str | Path | None = None,
    now: datetime | None = None,
    *,
    publish: Publish,
) -> IngestResult:
    """Validate a source against the model's contract and make it the model's feature data.

    ``publish`` runs after the snapshot (and its offline table) exist and before the current
    pointer moves, so a failure there leaves the previous data version current.

    Raises:
        ContractViolation: the file is missing, empty, unparsable, lacks a required column
            (a feature, the label or a sensitive column that is not a feature), too many rows
            broke the contract, or a regression label takes one value only. Nothing reaches
            the feature store then.
    """
    path = Path(source).expanduser().resolve() if source else cfg.source.resolved_path()
    df = read_source(path, cfg)
    result = check_contract(df, cfg, source=str(path), now=now, training_source=True)
    quarantine_path = write_quarantine(cfg, result.quarantined, path)
    try:
        enforce(result)
    except ContractViolation as exc:
        if quarantine_path:
            raise ContractViolation(
                f"{exc}\nrejected rows are in {quarantine_path}", exc.report
            ) from None
        raise

    good = result.good
    snapshot_path, digest = write_snapshot(cfg, good)
    ts = good[cfg.timestamp_column]
    info = SnapshotInfo(
        model=cfg.name,
        digest=digest,
        path=str(snapshot_path),
        rows=len(good),
        min_timestamp=ts.min().isoformat(),
        max_timestamp=ts.max().isoformat(),
        ingested_at=(now or datetime.now(UTC)).isoformat(),
        source_path=str(path),
        timestamp_assigned=result.report.timestamp_assigned,
        feature_dtypes=result.report.inferred_dtypes,
    )
    # With the PostgreSQL offline store Feast reads tables, not files: the snapshot is loaded
    # (or, for a known data version, found and verified) before Feast is pointed at it.
    offline_table = load_snapshot(cfg, snapshot_path, digest=digest) if uses_postgres() else None
    publish(cfg, snapshot_path, result.report.inferred_dtypes)
    set_current_snapshot(info)
    return IngestResult(
        snapshot=info,
        report=result.report,
        quarantine_path=quarantine_path,
        offline_table=offline_table,
    )

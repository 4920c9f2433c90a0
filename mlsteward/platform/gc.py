"""Storage housekeeping: snapshots, offline tables, scratch tables and staged partitions that
nothing can ask for again.

It reads every stage's references (the registry, the current pointers, the Feast sources, the
running training runs), so it sits in the platform room above all of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteward.audit import Action
from mlsteward.config.models import load_all_model_configs
from mlsteward.config.settings import home, snapshot_root
from mlsteward.data import offline_tables
from mlsteward.data.state import current_snapshot
from mlsteward.features.repo import registered_snapshot_path
from mlsteward.features.retrieval import scratch_table_time
from mlsteward.governance.mlflow_adapter import client
from mlsteward.governance.promotion import open_audit
from mlsteward.training.partitioned_set import (
    abandoned_directories,
    partition_root,
    release_directory,
)

if TYPE_CHECKING:
    from mlsteward.config.models import ModelConfig


# -- garbage collection -------------------------------------------------------------------------
# Ingestion never deletes a snapshot, so the store only grows; ``collect_garbage`` removes the
# ones nothing can ask for again. It errs towards keeping: a reference it cannot read makes it
# raise before anything is deleted, and a file it does not recognise is never touched.

_DIGEST = re.compile(r"[0-9a-f]{64}")
_PAGE = 1000


def _digest_of(name: str | None) -> str | None:
    """The digest a snapshot file name or path stands for, or None if it is not one of ours."""
    stem = Path(name).name.removesuffix(".parquet") if name else ""
    return stem if _DIGEST.fullmatch(stem) else None


def _pages(search: Callable[..., Any], *args: Any) -> Iterator[Any]:
    """Every item of a paginated MLflow search: a reference on page two protects a file too."""
    token = None
    while True:
        page = search(*args, max_results=_PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def referenced_digests(
    configs: Mapping[str, ModelConfig] | None = None, extra_models: Iterable[str] = ()
) -> dict[str, dict[str, list[str]]]:
    """Per model, the digests something still points at, each with who points at it.

    Registered versions keep their data forever (reproduction and audits read it); the current
    pointer and the Feast source are what the next training and retrieval read; a RUNNING
    training run has resolved its snapshot and may still be reading it. Any lookup failure
    propagates: an incomplete answer would make live data look collectable.

    Args:
        configs: the configured models (default: ``load_all_model_configs()``).
        extra_models: further model names (e.g. directories in the store) whose pointer and
            running runs to check although they have no config.
    """
    configs = load_all_model_configs() if configs is None else configs
    refs: dict[str, dict[str, list[str]]] = {}

    def keep(model: str, digest: str | None, reason: str) -> None:
        if digest:
            refs.setdefault(model, {}).setdefault(digest, []).append(reason)

    c = client()
    registered = [rm.name for rm in _pages(c.search_registered_models, None)]
    for name in registered:
        for mv in _pages(c.search_model_versions, f"name = '{name}'"):
            tags = mv.tags or {}
            digest = tags.get("lineage.data_digest") or _digest_of(tags.get("lineage.data_path"))
            keep(name, digest, f"registered {name} v{mv.version}")

    for model in sorted({*configs, *registered, *extra_models}):
        snap = current_snapshot(model)
        keep(model, snap.digest if snap else None, "current snapshot")
        experiment = c.get_experiment_by_name(model)
        if experiment is None:
            continue
        running = "attributes.status = 'RUNNING'"
        for run in _pages(c.search_runs, [experiment.experiment_id], running):
            digest = run.data.tags.get("mlsteward.data_digest")
            keep(model, digest, f"running training run {run.info.run_id}")

    for model, cfg in configs.items():
        keep(model, _digest_of(registered_snapshot_path(cfg)), "feature store source")
    return refs


@dataclass
class GcResult:
    """What one collection kept, removed (or, in a dry run, would remove) and left alone."""

    root: str
    dry_run: bool
    min_age_seconds: float
    kept: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    too_young: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    dropped_tables: list[dict[str, Any]] = field(default_factory=list)
    """PostgreSQL offline-store tables of unreferenced snapshots (production profile)."""
    dropped_scratch: list[str] = field(default_factory=list)
    """Entity tables of point-in-time joins older than the grace period (killed processes)."""
    removed_staging: list[dict[str, Any]] = field(default_factory=list)
    """Training-set partitions staged for Dask by runs that are gone."""
    audit_seq: int | None = None

    @property
    def bytes_freed(self) -> int:
        return sum(r["bytes"] for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_freed": self.bytes_freed}


def _collect_staged_partitions(result: GcResult) -> None:
    """Partition directories of training runs that were killed (their lock is free) and are
    older than the grace period; a running training holds its lock however long it runs."""
    default = home() / "training_sets"
    roots = {d for d in default.iterdir() if d.is_dir()} if default.is_dir() else set()
    roots |= {partition_root(cfg) for cfg in load_all_model_configs().values()}
    for root in sorted(roots):
        for directory in abandoned_directories(root, result.min_age_seconds):
            size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
            if not result.dry_run:
                release_directory(directory)
            result.removed_staging.append(
                {"model": root.name, "path": str(directory), "bytes": size}
            )


def _collect_offline_tables(refs: dict[str, dict[str, list[str]]], result: GcResult) -> None:
    """Drop the offline-store tables of snapshots that nothing references and whose file is
    gone (removed in this pass or an earlier one). A table follows its file: a file kept as
    referenced, too young or unknown keeps its table, and ingestion writes the file before it
    loads the table, so an ingestion in flight keeps both."""
    if not offline_tables.uses_postgres():
        return
    # In a dry run nothing was deleted: the files this pass would remove count as gone.
    would_remove = {(e["model"], e["digest"]) for e in result.removed} if result.dry_run else set()
    for table in offline_tables.managed_tables():
        model, digest = table["model"], table["digest"]
        if not model or not digest or digest in refs.get(model, {}):
            continue
        # Not snapshot_path(): that creates the model's directory, and the model may be gone.
        file = snapshot_root() / model / f"{digest}.parquet"
        if file.exists() and (model, digest) not in would_remove:
            continue
        if result.dry_run or offline_tables.drop_table(table["table"], digest):
            result.dropped_tables.append(table)
    _collect_scratch_tables(result)


def _collect_scratch_tables(result: GcResult) -> None:
    """Entity tables a join never dropped because its process was killed. A join drops its
    table as it ends, so one older than the grace period is left over; tables named before
    they carried a time are left alone (their age is unknown)."""
    now = time.time()
    for name in offline_tables.scratch_tables():
        made = scratch_table_time(name)
        if made is None or now - made.timestamp() < result.min_age_seconds:
            continue
        if not result.dry_run:
            offline_tables.drop_scratch_table(name)
        result.dropped_scratch.append(name)


def collect_garbage(*, dry_run: bool, min_age_seconds: float, actor: str | None = None) -> GcResult:
    """Delete snapshots (and leftover ``*.parquet.tmp``) that nothing references.

    References are read before the store is listed, and only files older than
    ``min_age_seconds`` go: a snapshot written after the references were read, or resolved by
    a training run that has not opened its MLflow run yet, is young and survives this pass.

    Raises:
        Exception: whatever made a reference unreadable (MLflow, Feast, config); then nothing
            was deleted.
    """
    root = snapshot_root()
    model_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    refs = referenced_digests(extra_models=[d.name for d in model_dirs])
    result = GcResult(root=str(root), dry_run=dry_run, min_age_seconds=min_age_seconds)
    now = time.time()
    try:
        for directory in model_dirs:
            model, kept_here = directory.name, refs.get(directory.name, {})
            for path in sorted(p for p in directory.iterdir() if p.is_file()):
                digest = _digest_of(path.name) if path.suffix == ".parquet" else None
                if digest is None and not path.name.endswith(".parquet.tmp"):
                    result.unknown.append(str(path))
                    continue
                stat = path.stat()
                entry = {"model": model, "path": str(path), "digest": digest, "bytes": stat.st_size}
                if digest in kept_here:
                    result.kept.append({**entry, "reasons": kept_here[digest]})
                elif now - stat.st_mtime < min_age_seconds:
                    result.too_young.append({**entry, "age_seconds": round(now - stat.st_mtime)})
                else:
                    if not dry_run:
                        path.unlink(missing_ok=True)
                    result.removed.append(entry)
        _collect_offline_tables(refs, result)
        _collect_staged_partitions(result)
    finally:  # a pass that failed half-way still leaves a record of what it deleted
        cleaned = result.dropped_tables or result.dropped_scratch or result.removed_staging
        if (result.removed or cleaned) and not dry_run:
            models = {r["model"] for r in result.removed + result.dropped_tables}
            with open_audit() as audit:
                record = audit.append(
                    Action.SNAPSHOTS_COLLECTED,
                    model=models.pop() if len(models) == 1 else None,
                    actor=actor,
                    reason=f"removed {len(result.removed)} unreferenced snapshot file(s), "
                    f"{result.bytes_freed} bytes"
                    + (
                        f", dropped {len(result.dropped_tables)} offline table(s)"
                        if result.dropped_tables
                        else ""
                    )
                    + (
                        f", {len(result.dropped_scratch)} left-over join table(s)"
                        if result.dropped_scratch
                        else ""
                    )
                    + (
                        f", {len(result.removed_staging)} abandoned partition director(y/ies)"
                        if result.removed_staging
                        else ""
                    ),
                    details={
                        "snapshot_root": str(root),
                        "min_age_seconds": min_age_seconds,
                        "removed": result.removed,
                        "digests": sorted({r["digest"] for r in result.removed if r["digest"]}),
                        "dropped_tables": result.dropped_tables,
                        "dropped_scratch": result.dropped_scratch,
                        "removed_staging": result.removed_staging,
                    },
                )
            result.audit_seq = record.seq
    return result

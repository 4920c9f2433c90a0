"""Where mlsteward's Feast feature store lives: the repo config and the store built on it.

Feast's API moves between minor versions, so every call into Feast lives in this package's
modules (``store``, ``repo``, ``retrieval``, ``online``, ``materialize``) and the rest of the code
sees our own names (``ModelFeastObjects``, plain DataFrames with canonical dtypes, dicts of
numbers). Choices that matter, each measured on Feast 0.67 (see DESIGN.md §5):

* Offline store: mlsteward's ``AsofDuckDBOfflineStore`` (``features.offline_store``, loaded by
  Feast itself from the ``offline_store.type`` dotted path): Feast's duckdb store with the
  point-in-time join done as DuckDB ASOF joins, same semantics, several times faster at a
  million rows. Never the default ``file``/dask store: dask silently drops entity rows that have
  no feature row inside the TTL; duckdb keeps every row.
* Which offline store (the profile's ``feast.offline_store``): ``duckdb`` (default) reads the
  snapshot parquet files in process -- no server, fastest per query; the right choice for one
  machine, or several that share the snapshot directory (``MLSTEWARD_SNAPSHOT_ROOT``).
  ``postgres`` keeps each snapshot as an immutable table in ``<prefix>_offline``
  (``offline_tables``, loaded by ingestion) and runs Feast's PostgreSQL point-in-time join
  there: pick it when workers share a database but no file system, or the data must live with
  the other governed state (backups, access control); same training frames, row for row and
  dtype for dtype (tests compare them), but slower: 200k entity rows over 100k feature rows
  took 5.7 s against DuckDB's 0.35 s on 2 cores (Feast's SQL join plus its row-at-a-time
  result conversion), and loading that snapshot 1.2 s. Data beyond what one database serves
  well goes to Feast's ``spark`` offline store (``SparkSource`` on partitioned parquet/Delta in
  object storage): the documented path, not wired up here.
  Private stores that rebuild an old training set always read the snapshot file with DuckDB.
* Every path is absolute and built when a function is called (``feast_dir()``, the snapshot
  path), because relative ``FileSource`` paths resolve against the current directory and tests
  repoint ``MLSTEWARD_HOME`` between calls.
* ``import feast`` takes several seconds, so feast is imported inside the functions that need it;
  importing these modules (e.g. from the CLI or ingestion) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteward.config.profiles import active
from mlsteward.config.settings import feast_dir, feature_repo_dir
from mlsteward.errors import MlstewardError

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

PROJECT = "mlsteward"
"""Feast project name; ``feature_repo/feature_store.yaml`` must say the same."""

ENTITY_KEY_SERIALIZATION_VERSION = 3
"""Feast 0.67's current (and default) online-store key encoding; below 3 is deprecated."""

OFFLINE_STORE_TYPE = "mlsteward.features.offline_store.AsofDuckDBOfflineStore"
"""Feast offline store type (``offline_store.STORE_TYPE``; a literal here so importing this
module does not import feast). ``feature_repo/feature_store.yaml`` must say the same."""


class FeastAdapterError(MlstewardError):
    """Feast returned something our contract with it forbids (lost rows, missing objects)."""


def repo_config(offline_store_type: str | None = None, directory: Path | None = None) -> RepoConfig:
    """The programmatic twin of ``feature_repo/feature_store.yaml``.

    Built on each call from ``feast_dir()`` and the active profile (``mlsteward.config.profiles``: a
    SQL registry on PostgreSQL, a Redis online store, the PostgreSQL offline store), so a changed
    ``MLSTEWARD_HOME`` or profile is honoured; no YAML file is needed for programmatic use.

    Args:
        offline_store_type: another Feast offline store type than ``OFFLINE_STORE_TYPE``; only
            tests and benchmarks use it, to compare our store with Feast's stock ``duckdb``.
        directory: where registry and online store live (default ``feast_dir()``); rebuilding
            an old training set uses a throwaway one, so the live registry is never touched.
    """
    from feast import RepoConfig  # import feast takes seconds: only when a store is built

    # A private store (``directory`` given) is always local files: it must never write to the
    # shared registry or online store.
    profile = active() if directory is None else None
    directory = directory or feast_dir()
    registry: dict[str, Any] = {
        "registry_type": "file",
        "path": str(directory / "registry.db"),
        # Feast keeps a registry copy in memory; short enough that a long-lived store sees a
        # re-ingested snapshot within a minute.
        "cache_ttl_seconds": 60,
    }
    online: dict[str, Any] = {"type": "sqlite", "path": str(directory / "online.db")}
    offline: dict[str, Any] = {"type": offline_store_type or OFFLINE_STORE_TYPE}
    project = PROJECT
    if profile is not None:
        registry = profile.feast_registry or registry
        online = profile.feast_online_store or online
        if offline_store_type is None:
            offline = profile.feast_offline_store or offline
        project = profile.feast.project
    return RepoConfig(
        project=project,
        provider="local",
        registry=registry,
        offline_store=offline,
        online_store=online,
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
        repo_path=feature_repo_dir(),
    )


def get_store() -> FeatureStore:
    """A FeatureStore on ``repo_config()``; cheap, so callers make one per operation."""
    from feast import FeatureStore  # import feast takes seconds: only when a store is built

    return FeatureStore(config=repo_config())

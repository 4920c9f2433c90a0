"""The one module that talks to Feast (0.67): everything else asks it for typed results.

Feast's API moves between minor versions, so every call into it lives here and the rest of the
code sees our own names (``ModelFeastObjects``, plain DataFrames with canonical dtypes, dicts of
numbers). Choices that matter, each measured on Feast 0.67 (see DESIGN.md §5):

* Offline store: mlsteward's ``AsofDuckDBOfflineStore`` (``feast_offline_store``, the one other
  module that imports feast, loaded by Feast itself from the ``offline_store.type`` dotted path):
  Feast's duckdb store with the point-in-time join done as DuckDB ASOF joins, same semantics,
  several times faster at a million rows. Never the default ``file``/dask store: dask silently
  drops entity rows that have no feature row inside the TTL; duckdb keeps every row.
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
* Feast does not keep the entity frame's row order, so retrieval carries a row key through the
  join and restores the order (and checks the count) afterwards, in Arrow: the pandas route
  (object strings, nullable bools via Python) cost more than the join itself at a million rows.
* ``import feast`` takes several seconds, so feast is imported inside the functions that need it;
  importing this module (e.g. from the CLI or ingestion) stays cheap.
"""

from __future__ import annotations

import io
import re
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlsteward.config.models import ModelConfig
from mlsteward.config.profiles import active
from mlsteward.config.settings import feast_dir, feature_repo_dir
from mlsteward.data.offline_tables import (
    OfflineTableError,
    connect,
    require_table,
    table_name,
    uses_postgres,
)
from mlsteward.data.snapshots import CREATED_TIMESTAMP_COLUMN, snapshot_path
from mlsteward.errors import MlstewardError

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView, RepoConfig
    from feast.data_source import DataSource

PROJECT = "mlsteward"
"""Feast project name; ``feature_repo/feature_store.yaml`` must say the same."""

ENTITY_KEY_SERIALIZATION_VERSION = 3
"""Feast 0.67's current (and default) online-store key encoding; below 3 is deprecated."""

OFFLINE_STORE_TYPE = "mlsteward.features.offline_store.AsofDuckDBOfflineStore"
"""Feast offline store type (``feast_offline_store.STORE_TYPE``; a literal here so importing this
module does not import feast). ``feature_repo/feature_store.yaml`` must say the same."""

ROW_ID = "row_id"
"""Column of the caller's entity frame that identifies each row across Feast's unordered join."""

MANAGED_BY = "mlsteward"

# Feast infers the entity frame's event-time column: a column literally named
# ``event_timestamp`` wins, otherwise the single datetime column (with a print), otherwise it
# raises. We always hand Feast exactly this name, whatever the model calls its column.
_FEAST_EVENT_TIMESTAMP = "event_timestamp"
# Internal row key: a name no feature can plausibly have, so Feast's join cannot collide with it.
_ROW_KEY = "__mlsteward_row_id"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EntityDtype = Literal["int64", "string"]
OfflineKind = Literal["file", "postgres"]


class FeastAdapterError(MlstewardError):
    """Feast returned something our contract with it forbids (lost rows, missing objects)."""


@dataclass(frozen=True)
class ModelFeastObjects:
    """The four Feast objects one model needs; applied together so they never disagree."""

    entity: Entity
    source: DataSource  # FileSource (DuckDB) or PostgreSQLSource
    feature_view: FeatureView
    feature_service: FeatureService

    def as_list(self) -> list[Any]:
        return [self.entity, self.source, self.feature_view, self.feature_service]


# -- store ------------------------------------------------------------------------------------
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
    from feast import RepoConfig

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
    from feast import FeatureStore

    return FeatureStore(config=repo_config())


def snapshot_store(
    cfg: ModelConfig,
    snapshot_path: Path,
    feature_dtypes: dict[str, str],
    directory: Path,
) -> FeatureStore:
    """A private feature store in ``directory`` whose feature service reads ``snapshot_path``.

    Why: rebuilding an old version's training set must run the same point-in-time join over
    *its* snapshot, while the live registry keeps serving the current one; re-pointing the live
    source, even briefly, would change what scoring and training read meanwhile.
    """
    from feast import FeatureStore

    store = FeatureStore(config=repo_config(directory=directory))
    objects = build_objects(cfg, snapshot_path, feature_dtypes=feature_dtypes, offline="file")
    store.apply(objects.as_list())
    return store


# -- object builders --------------------------------------------------------------------------
def _tags(cfg: ModelConfig, **extra: str) -> dict[str, str]:
    """Model tags from the config, then ours (ours win so ``managed_by`` cannot be spoofed)."""
    return {**cfg.tags, "model": cfg.name, "owner": cfg.owner, "managed_by": MANAGED_BY, **extra}


def snapshot_entity_dtype(cfg: ModelConfig, snapshot_path: Path) -> EntityDtype:
    """Read the entity column's type from the parquet footer (no data pages are read).

    Raises:
        FeastAdapterError: the snapshot lacks a column Feast will need, or the entity column is
            neither an integer nor a string.
    """
    schema = pq.read_schema(snapshot_path)
    needed = [cfg.source.entity, cfg.timestamp_column, *cfg.feature_names]
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise FeastAdapterError(
            f"snapshot {snapshot_path} for model {cfg.name!r} lacks column(s) {missing}"
        )
    arrow_type = schema.field(cfg.source.entity).type
    if pa.types.is_integer(arrow_type):
        return "int64"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    raise FeastAdapterError(
        f"snapshot {snapshot_path}: entity column {cfg.source.entity!r} has type {arrow_type}; "
        "an entity key must be an integer or a string"
    )


def build_objects(
    cfg: ModelConfig,
    snapshot_path: Path,
    entity_dtype: EntityDtype | None = None,
    feature_dtypes: dict[str, str] | None = None,
    offline: OfflineKind | None = None,
) -> ModelFeastObjects:
    """Derive the model's entity, source, feature view and feature service from its config.

    Names come from ``ModelConfig`` (one place decides them). The source reads the snapshot --
    the absolute parquet path, or with the PostgreSQL offline store the snapshot's table
    (``offline_tables.table_name``, loaded by ingestion) -- and is tagged with the snapshot's
    digest (its file stem), so the registry records which data version a training set came from.
    Either way the source has the same name, time fields and tags, so the feature view, the
    feature service and everything that reads the registry see the same objects.

    Args:
        cfg: the validated model config.
        snapshot_path: the immutable snapshot parquet the source should read.
        entity_dtype: the entity key's type; read from the snapshot's schema when omitted.
        feature_dtypes: types ingestion inferred for features the config leaves untyped.
        offline: ``"file"`` (parquet, read by DuckDB) or ``"postgres"`` (the snapshot's table);
            default: what the active profile's offline store reads. Private snapshot stores
            pass ``"file"``: they are always local.
    """
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float64, Int64, String

    snapshot_path = Path(snapshot_path).expanduser().resolve()
    dtype = entity_dtype or snapshot_entity_dtype(cfg, snapshot_path)
    feast_types = {"int": Int64, "float": Float64, "bool": Bool, "category": String}
    dtypes = {f.name: f.dtype or (feature_dtypes or {}).get(f.name) for f in cfg.features}
    untyped = [name for name, t in dtypes.items() if t is None]
    if untyped:
        raise FeastAdapterError(
            f"model {cfg.name!r}: feature(s) {untyped} have no dtype; ingestion must record "
            "one before the feature view can be built"
        )
    desc = cfg.description or cfg.name

    entity = Entity(
        name=cfg.entity_name,
        join_keys=[cfg.source.entity],
        value_type=ValueType.INT64 if dtype == "int64" else ValueType.STRING,
        description=f"{cfg.source.entity} of model {cfg.name}: the key every feature row has.",
        tags=_tags(cfg),
        owner=cfg.owner,
    )
    # Snapshots hold unique (entity, event time) rows, so a created timestamp is optional:
    # used for tie-breaks when a snapshot carries one.
    created = (
        CREATED_TIMESTAMP_COLUMN
        if CREATED_TIMESTAMP_COLUMN in pq.read_schema(snapshot_path).names
        else ""
    )
    source: DataSource
    if (offline or _profile_offline_kind()) == "postgres":
        source = _postgres_source(cfg, snapshot_path, created)
    else:
        source = FileSource(
            name=cfg.data_source_name,
            path=str(snapshot_path),
            file_format=ParquetFormat(),
            timestamp_field=cfg.timestamp_column,
            created_timestamp_column=created,
            description=f"Current accepted data snapshot of model {cfg.name} (immutable parquet).",
            tags=_tags(cfg, data_digest=snapshot_path.stem),
            owner=cfg.owner,
        )
    schema = [
        Field(name=cfg.source.entity, dtype=Int64 if dtype == "int64" else String),
        *(
            Field(name=f.name, dtype=feast_types[dtypes[f.name]], description=f.description)
            for f in cfg.features
        ),
    ]
    # Feast 0.67: ttl=timedelta(0) means "no limit" (the join adds no expiry predicate), and the
    # registry stores None as 0 too -- passing None would make every `feast plan` show a diff.
    ttl = timedelta(days=cfg.feast.ttl_days) if cfg.feast.ttl_days else timedelta(0)
    feature_view = FeatureView(
        name=cfg.feature_view_name,
        entities=[entity],
        schema=schema,
        source=source,
        ttl=ttl,
        online=cfg.feast.online,
        description=f"Features of model {cfg.name}: {desc}",
        tags=_tags(cfg),
        owner=cfg.owner,
    )
    feature_service = FeatureService(
        name=cfg.feature_service_name,
        features=[feature_view],
        description=f"Everything model {cfg.name} trains and serves on; asked for by name.",
        tags=_tags(cfg),
        owner=cfg.owner,
    )
    return ModelFeastObjects(entity, source, feature_view, feature_service)


def _profile_offline_kind() -> OfflineKind:
    return "postgres" if uses_postgres() else "file"


def _postgres_source(cfg: ModelConfig, snapshot_path: Path, created: str) -> DataSource:
    """The snapshot's PostgreSQL table as a source: same name, time fields and tags as the
    parquet source, so only the offline store's reader differs."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    digest = snapshot_path.stem
    return PostgreSQLSource(
        name=cfg.data_source_name,
        table=table_name(cfg.name, digest),
        timestamp_field=cfg.timestamp_column,
        created_timestamp_column=created,
        description=(
            f"Current accepted data snapshot of model {cfg.name} (immutable PostgreSQL table "
            "loaded from the snapshot parquet)."
        ),
        tags=_tags(cfg, data_digest=digest),
        owner=cfg.owner,
    )


def _source_table(source: Any) -> str | None:
    """The table a PostgreSQL source reads, or None for any other source."""
    options = getattr(source, "_postgres_options", None)
    return getattr(options, "_table", None) or None


def apply_model(
    cfg: ModelConfig, snapshot_path: Path, feature_dtypes: dict[str, str] | None = None
) -> None:
    """Register (or update) the model's objects so Feast reads ``snapshot_path`` from now on.

    Re-applying with another snapshot replaces the source and the feature view's embedded copy
    of it in one registry commit.
    """
    store = get_store()
    store.apply(build_objects(cfg, snapshot_path, feature_dtypes=feature_dtypes).as_list())


def registered_snapshot_path(cfg: ModelConfig) -> str | None:
    """The snapshot the registered feature view reads (what retrieval uses), or None."""
    from feast.errors import FeatureViewNotFoundException

    store = get_store()
    try:
        fv = store.get_feature_view(cfg.feature_view_name)
    except (FeatureViewNotFoundException, FileNotFoundError):
        return None
    if _source_table(fv.batch_source) is not None:
        # A table source is named by its digest; the snapshot file of that digest is where the
        # table came from (and what lineage, reproduction and gc refer to).
        digest = fv.batch_source.tags.get("data_digest")
        return str(snapshot_path(cfg.name, digest)) if digest else None
    return getattr(fv.batch_source, "path", None)


def registered_tags(cfg: ModelConfig) -> dict[str, dict[str, str]]:
    """Tags of each registered object of the model, keyed by kind (for lineage and checks)."""
    store = get_store()
    return {
        "entity": dict(store.get_entity(cfg.entity_name).tags),
        "source": dict(store.get_data_source(cfg.data_source_name).tags),
        "feature_view": dict(store.get_feature_view(cfg.feature_view_name).tags),
        "feature_service": dict(store.get_feature_service(cfg.feature_service_name).tags),
    }


def repo_declarations(
    configs: dict[str, ModelConfig],
    snapshot_paths: dict[str, str | Path | None],
    feature_dtypes: dict[str, dict[str, str]] | None = None,
) -> dict[str, ModelFeastObjects]:
    """Objects for every model that has a current snapshot (the feature repo's declarations).

    Models without a snapshot are skipped: Feast cannot build a source for data that does not
    exist yet, and ``feast plan`` must still work before the first ingestion.
    """
    return {
        name: build_objects(cfg, Path(path), feature_dtypes=(feature_dtypes or {}).get(name))
        for name, cfg in sorted(configs.items())
        if (path := snapshot_paths.get(name))
    }


# -- dtypes ----------------------------------------------------------------------------------
# One dtype per config dtype, whatever Feast's path returned: offline and online retrieval return
# different numpy types for the same feature (float32 vs float64; Int64 with nulls becomes
# float64), so a model would see different inputs in training and serving. Nullable pandas dtypes
# keep "no value" as a null instead of a fake number.
_PANDAS_TARGETS = {"int": "Int64", "float": "float64", "bool": "boolean", "category": "string"}
# Arrow types that convert straight into the target pandas dtype (None: numpy's float64, NaN for
# nulls), without a detour through Python objects (nullable bools) and per-value casts.
_DIRECT_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_PANDAS_FOR_ARROW: dict[pa.DataType, Any] = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.float64(): None,
}


def _canonical_series(col: pd.Series, dtype: str | None) -> pd.Series:
    if dtype == "bool" and col.dtype == object:
        col = col.map(lambda v: v if v is None or pd.isna(v) else bool(v))
    return col.astype(_PANDAS_TARGETS[dtype or "float"])


_DTYPE_FOR_FEAST = {"Int64": "int", "Float64": "float", "Bool": "bool", "String": "category"}


def registered_feature_dtypes(store: FeatureStore, cfg: ModelConfig) -> dict[str, str]:
    """Feature types as registered: a config may leave types to ingestion's inference, and the
    feature view's schema is where the inferred types were written down."""
    view = store.get_feature_view(cfg.feature_view_name)
    registered = {f.name: _DTYPE_FOR_FEAST.get(str(f.dtype), "float") for f in view.schema}
    return {f.name: f.dtype or registered.get(f.name, "float") for f in cfg.features}


def _canonical(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """Cast feature columns of a pandas frame to the canonical dtypes (see above)."""
    out = frame.copy()
    for name, dtype in dtypes.items():
        out[name] = _canonical_series(out[name], dtype)
    return out


def _strings_from_arrow(
    col: pa.ChunkedArray, order: np.ndarray | None
) -> pd.api.extensions.ExtensionArray:
    """A string column as pandas' ``string`` dtype, rows taken in ``order``.

    Categories have few distinct values, so this converts the distinct values once and takes
    them by integer code; reordering integer codes is far cheaper than moving strings (in Arrow)
    or casting a million Python objects (``astype("string")``).
    """
    distinct = pc.unique(col).drop_null()
    codes = pc.index_in(col, value_set=distinct).fill_null(-1).to_numpy()
    if order is not None:
        codes = codes[order]
    return pd.array(distinct.to_pylist(), dtype="string").take(codes, allow_fill=True)


def _canonical_from_arrow(
    table: pa.Table, dtypes: dict[str, str], order: np.ndarray | None = None
) -> pd.DataFrame:
    """The feature columns of an Arrow table, rows taken in ``order``, with canonical dtypes.

    Same result as ``_canonical(table.to_pandas(), dtypes)`` (then reordered), several times
    faster at a million rows: columns that already have their target Arrow type (the usual case:
    snapshots are written with canonical types) convert straight into their pandas dtype and are
    reordered as arrays; anything else takes the pandas route.
    """
    columns = []
    for name, dtype in dtypes.items():
        col = table.column(name)
        if dtype == "category" and col.type in (pa.string(), pa.large_string()):
            values = _strings_from_arrow(col, order)
        else:
            if _DIRECT_ARROW_TYPES.get(dtype) == col.type:
                series = col.to_pandas(types_mapper=_PANDAS_FOR_ARROW.get)
            else:
                series = _canonical_series(col.to_pandas(), dtype)
            values = series.array if order is None else series.array.take(order)
        columns.append(pd.Series(values, name=name, copy=False))
    return pd.concat(columns, axis=1, copy=False)


# -- offline retrieval -----------------------------------------------------------------------
def get_training_frame(
    cfg: ModelConfig,
    entity_df: pd.DataFrame,
    *,
    with_label: bool = True,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time correct features for each entity row, via the model's feature service.

    Each row gets, per feature, the latest value whose event time is at or before the row's
    event time (and within the TTL, if one is set); ``ingested_at`` breaks ties. Rows with no such
    value keep their place with nulls.

    Args:
        cfg: the model.
        entity_df: columns ``row_id`` (unique int64), the entity column, the event-time column
            (tz-aware) and the label. Other columns are ignored.
        with_label: False for scoring, whose entity rows have no outcome yet: the label is
            then neither required nor returned.
        store: the feature store to ask (default: the live one, ``get_store()``).

    Returns:
        One row per input row sorted by ``row_id``, columns ``[row_id, entity, event time, label,
        *features in config order]`` (no label when ``with_label`` is False); feature names are
        plain (no view prefix), dtypes as in ``_canonical``.

    Raises:
        FeastAdapterError: a required column is missing, row ids repeat, times are naive, or
            Feast returned a different number of rows (or other row ids) than it was given.
    """
    entity, ts, label = cfg.source.entity, cfg.timestamp_column, cfg.label
    required = [ROW_ID, entity, ts, label] if with_label else [ROW_ID, entity, ts]
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise FeastAdapterError(f"entity frame for {cfg.name!r} lacks column(s) {missing}")
    row_ids = entity_df[ROW_ID]
    # Callers usually number rows 0..n-1 in order: strictly increasing ids need neither the
    # duplicate check nor a sort (both cost ~0.1 s per million rows).
    ids = row_ids.to_numpy()
    in_order = ids.dtype.kind in "iu" and bool((ids[1:] > ids[:-1]).all())
    if not in_order and row_ids.duplicated().any():
        raise FeastAdapterError(f"entity frame for {cfg.name!r}: {ROW_ID} values must be unique")
    times = entity_df[ts]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise FeastAdapterError(
            f"entity frame for {cfg.name!r}: {ts!r} must be a tz-aware datetime column, "
            f"got {times.dtype}"
        )
    if ts != _FEAST_EVENT_TIMESTAMP and _FEAST_EVENT_TIMESTAMP in cfg.feature_names:
        raise FeastAdapterError(
            f"model {cfg.name!r}: a feature named {_FEAST_EVENT_TIMESTAMP!r} clashes with the "
            "column Feast reserves for the entity frame's event time"
        )

    # Hand Feast only what the join needs, under names it cannot misread; the label and the
    # caller's own columns stay here and are re-attached by row key. The row key is each row's
    # position in row-id order, so putting Feast's (unordered) answer in that order is a scatter,
    # not a sort, and "one answer per row" is a bounds check plus "every position filled".
    n = len(entity_df)
    if in_order:
        by_row_id = position = np.arange(n, dtype=np.int64)
    else:
        by_row_id = np.argsort(ids, kind="stable")
        position = np.empty(n, dtype=np.int64)
        position[by_row_id] = np.arange(n, dtype=np.int64)
    query = pd.DataFrame(
        {
            _ROW_KEY: position,
            entity: entity_df[entity].to_numpy(),
            _FEAST_EVENT_TIMESTAMP: times.dt.tz_convert("UTC").astype("datetime64[us, UTC]"),
        }
    )
    store = store or get_store()
    service = store.get_feature_service(cfg.feature_service_name)
    # Arrow, not to_df(): checking, reordering and casting there is vectorised (the pandas route
    # cost more than the join itself at a million rows: objects for strings and nullable bools).
    if _is_postgres_store(store):
        result = _postgres_historical(store, cfg, service, query)
    else:
        result = store.get_historical_features(entity_df=query, features=service).to_arrow()

    if result.num_rows != n:
        raise FeastAdapterError(
            f"Feast returned {result.num_rows} rows for {n} entity rows of model "
            f"{cfg.name!r}; a training set must keep every row"
        )
    returned = result.column(_ROW_KEY).to_numpy(zero_copy_only=False)
    order = np.full(n, -1, dtype=np.int64)
    in_bounds = returned.dtype.kind in "iu" and (
        n == 0 or 0 <= returned.min() <= returned.max() < n
    )
    if in_bounds:
        order[returned] = np.arange(n, dtype=np.int64)
    if not in_bounds or (order < 0).any():
        raise FeastAdapterError(
            f"Feast returned {result.num_rows} rows for {n} entity rows of model "
            f"{cfg.name!r}, but not one per row id"
        )
    # Selecting columns (and take) copies, so the caller's frame is never shared or changed.
    base = entity_df[required] if in_order else entity_df[required].take(by_row_id)
    base.index = pd.RangeIndex(n)
    dtypes = registered_feature_dtypes(store, cfg)
    features = _canonical_from_arrow(result.select(cfg.feature_names), dtypes, order)
    return pd.concat([base, features], axis=1, copy=False)


# -- PostgreSQL offline store -----------------------------------------------------------------
# Feast's PostgreSQL store runs the same point-in-time join (TTL, created-timestamp tie-break)
# in SQL, but takes a pandas entity frame by creating a table and INSERTing it row by row
# (``executemany``: minutes at a million rows), with column types guessed from Arrow names. So
# the frame goes in here instead: one COPY into a table typed by us, handed to Feast as SQL
# (``SELECT * FROM <table>``), which Feast's store supports as an entity source and copies
# server-side. What comes back is Arrow typed from PostgreSQL's column types (int8 -> int64,
# float8 -> double, ...); ``_canonical_from_arrow`` then gives the DuckDB path's dtypes, and the
# row key restores order, which the PostgreSQL store does not keep either.
_ENTITY_TABLE_PREFIX = "mlsteward_entities_"


def scratch_table_name(now: datetime | None = None) -> str:
    """``mlsteward_entities_<UTC time>_<random>``: the time lets ``mlsteward gc`` drop the
    table a killed process left behind, once it is older than any join could still be."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    return f"{_ENTITY_TABLE_PREFIX}{stamp}_{uuid.uuid4().hex[:16]}"


def scratch_table_time(name: str) -> datetime | None:
    """When a scratch entity table was made, from its name (None: not one, or an older name
    without a time)."""
    match = re.fullmatch(rf"{_ENTITY_TABLE_PREFIX}(\d{{14}})_[0-9a-f]{{16}}", name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _is_postgres_store(store: FeatureStore) -> bool:
    return getattr(store.config.offline_store, "type", None) == "postgres"


def _offline_options(store: FeatureStore) -> dict[str, Any]:
    return store.config.offline_store.model_dump()


def _require_tables(store: FeatureStore, view_names: list[str]) -> None:
    """Fail with the table's name when a registered source's table is gone (see
    ``offline_tables.require_table``), instead of Feast's ``relation does not exist``."""
    for name in view_names:
        source = store.get_feature_view(name).batch_source
        table = _source_table(source)
        if table is None:
            continue
        try:
            require_table(table, source.tags.get("data_digest"), _offline_options(store))
        except OfflineTableError as exc:
            raise FeastAdapterError(f"feature view {name!r}: {exc}") from exc


@contextmanager
def _uploaded_entities(store: FeatureStore, query: pd.DataFrame) -> Iterator[str]:
    """The entity frame as a table in the offline database, for as long as the join runs."""
    import pyarrow.csv as pacsv

    name = scratch_table_name()
    table = pa.Table.from_pandas(query, preserve_index=False)
    columns = []
    for field in table.schema:
        if pa.types.is_integer(field.type):
            pg_type = "bigint"
        elif pa.types.is_timestamp(field.type):
            pg_type = "timestamptz"
            table = table.set_column(
                table.schema.get_field_index(field.name),
                field.name,
                table.column(field.name).cast(pa.timestamp("us", tz="UTC")),
            )
        elif pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            pg_type = "text"
        else:
            raise FeastAdapterError(
                f"entity column {field.name!r} has type {field.type}; an entity key must be an "
                "integer or a string"
            )
        columns.append(f'"{field.name}" {pg_type}')
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    options = _offline_options(store)
    with connect(options) as conn:
        # UNLOGGED: a scratch table needs no write-ahead log; it is dropped after the join.
        conn.execute(f'CREATE UNLOGGED TABLE "{name}" ({", ".join(columns)})')
        with conn.cursor().copy(f'COPY "{name}" FROM STDIN (FORMAT csv)') as copy:
            copy.write(buffer.getbuffer())
        conn.commit()
    try:
        yield f'SELECT * FROM "{name}"'
    finally:
        with connect(options) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def _postgres_historical(
    store: FeatureStore, cfg: ModelConfig, service: FeatureService, query: pd.DataFrame
) -> pa.Table:
    """Feast's PostgreSQL point-in-time join over ``query``, as Arrow (row order unspecified)."""
    _require_tables(store, [p.name for p in service.feature_view_projections])
    if query.empty:
        # Feast's PostgreSQL store fails on an empty entity frame (it takes the time range from
        # MIN/MAX, which are NULL); the answer is known: no rows, the feature columns typed.
        dtypes = registered_feature_dtypes(store, cfg)
        return pa.table(
            {
                _ROW_KEY: pa.array([], pa.int64()),
                **{
                    n: pa.array([], _DIRECT_ARROW_TYPES.get(t, pa.string()))
                    for n, t in dtypes.items()
                },
            }
        )
    with _uploaded_entities(store, query) as entity_sql, warnings.catch_warnings():
        # Feast reads the SQL entity frame's schema with pandas over a psycopg connection,
        # which pandas warns about on every call; the schema it needs (names) is right.
        warnings.filterwarnings("ignore", "pandas only supports SQLAlchemy", UserWarning)
        return store.get_historical_features(entity_df=entity_sql, features=service).to_arrow()


def _table_window_counts(
    store: FeatureStore, cfg: ModelConfig, table: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """Rows inside ``[start, end]`` and their distinct entities, counted in PostgreSQL."""
    entity, ts = cfg.source.entity, cfg.timestamp_column
    with connect(_offline_options(store)) as conn:
        row = conn.execute(
            f'SELECT count(*), count(DISTINCT "{entity}") FROM "{table}" '
            f'WHERE "{ts}" >= %s AND "{ts}" <= %s',
            (start, end),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


# -- online ----------------------------------------------------------------------------------
def materialize(cfg: ModelConfig, end: datetime | None = None) -> dict[str, Any]:
    """Load the latest value per entity up to ``end`` into the online store.

    The window starts at ``end - ttl`` (older values are expired anyway) or at the epoch when
    the model has no TTL. A naive ``end`` is taken as UTC, like every time in mlsteward.

    Returns:
        ``model``, ``feature_view``, ``start``/``end`` (ISO-8601 UTC), ``snapshot_path``,
        ``rows_in_window`` (snapshot rows inside the window) and ``entities`` (distinct entities
        written to the online store).

    Raises:
        FeastAdapterError: the model is not online-enabled or has never been applied.
    """
    if not cfg.feast.online:
        raise FeastAdapterError(f"model {cfg.name!r} has feast.online: false; nothing to load")
    end = end or datetime.now(UTC)
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    start = end - timedelta(days=cfg.feast.ttl_days) if cfg.feast.ttl_days else _EPOCH
    path = registered_snapshot_path(cfg)
    if path is None:
        raise FeastAdapterError(f"model {cfg.name!r} has no registered Feast source; ingest first")

    store = get_store()
    table_name = _source_table(store.get_feature_view(cfg.feature_view_name).batch_source)
    if table_name is not None:
        _require_tables(store, [cfg.feature_view_name])
    store.materialize(start_date=start, end_date=end, feature_views=[cfg.feature_view_name])

    if table_name is not None:
        rows_in_window, entity_count = _table_window_counts(store, cfg, table_name, start, end)
    else:
        table = pq.read_table(path, columns=[cfg.source.entity, cfg.timestamp_column])
        times = table.column(cfg.timestamp_column).to_pandas()
        in_window = (times >= pd.Timestamp(start)) & (times <= pd.Timestamp(end))
        entities = table.column(cfg.source.entity).to_pandas()[in_window.to_numpy()]
        rows_in_window, entity_count = int(in_window.sum()), int(entities.nunique())
    return {
        "model": cfg.name,
        "feature_view": cfg.feature_view_name,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "snapshot_path": path,
        "rows_in_window": rows_in_window,
        "entities": entity_count,
    }


def online_features(cfg: ModelConfig, entity_ids: list[Any]) -> pd.DataFrame:
    """Latest materialized features for each id, in request order, columns selected by name.

    Feast's online column order differs between processes, so columns are picked by name:
    ``[entity, *features in config order]``. Unknown ids get nulls.
    """
    store = get_store()
    reader = OnlineReader.for_model(store, cfg)
    rows = reader.read(entity_ids)
    columns: dict[str, list[Any]] = {cfg.source.entity: list(entity_ids)}
    for name in cfg.feature_names:
        columns[name] = [None if row is None else row[name] for row in rows]
    return _canonical(pd.DataFrame(columns), registered_feature_dtypes(store, cfg))


@dataclass(frozen=True)
class _ViewRead:
    view: FeatureView
    features: list[str]
    types: dict[str, Any]  # feature -> Feast ValueType, as OnlineResponse.to_dict converts


class OnlineReader:
    """A feature service's latest online values per entity id, read with ``online_read``.

    Why not ``FeatureStore.get_online_features``: for one id it costs ~180 us here, of which
    the store read is ~50 us. The rest is work that is the same on every call for a service:
    resolving its views in the registry, grouping requested features, building a response
    proto and converting it back. This resolves the service once, then calls the provider's
    ``online_read`` (Feast's own ``OnlineStore`` interface: the same SQLite or Redis read and
    the same key serialization) and converts each value with ``feast_value_type_to_python_type``
    and the feature's declared type, as ``OnlineResponse.to_dict`` does, so the values are the
    ones ``get_online_features`` gives (a test compares them): ~60 us for one id.

    Like a store's cached registry, the views are those registered when the reader was made:
    a service re-applied with other features needs a new reader. Only plain feature views keyed
    by the model's entity are read; on-demand views are refused rather than skipped.
    """

    def __init__(self, store: FeatureStore, service_name: str, entity: str) -> None:
        from feast.errors import FeatureViewNotFoundException
        from feast.infra.provider import get_provider
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

        service = store.get_feature_service(service_name)
        self.entity = entity
        self.names: list[str] = []
        self._reads: list[_ViewRead] = []
        key_types = set()
        for projection in service.feature_view_projections:
            try:
                view = store.get_feature_view(projection.name)
            except FeatureViewNotFoundException:
                raise FeastAdapterError(
                    f"feature service {service_name!r}: {projection.name!r} is not a plain "
                    "feature view (on-demand views are not read online here)"
                ) from None
            keys = {f.name: f.dtype.to_value_type() for f in view.entity_columns}
            if list(keys) != [entity]:
                raise FeastAdapterError(
                    f"feature view {view.name!r} is keyed by {sorted(keys)}, not [{entity!r}]"
                )
            key_types.add(keys[entity])
            features = [f.name for f in projection.features]
            clash = sorted(set(features) & set(self.names))
            if clash:
                raise FeastAdapterError(f"feature service {service_name!r}: {clash} appear twice")
            self.names.extend(features)
            types = {f.name: f.dtype.to_value_type() for f in projection.features}
            self._reads.append(_ViewRead(view, features, types))
        if len(key_types) > 1:
            raise FeastAdapterError(f"views of {service_name!r} type {entity!r} differently")
        self.key_type = key_types.pop() if key_types else None
        self._config = store.config
        self._provider = get_provider(store.config)
        # kept, not imported per read: ``read`` is on the prediction service's request path
        self._key = EntityKey
        self._to_protos = python_values_to_proto_values
        self._to_python = feast_value_type_to_python_type

    @classmethod
    def for_model(cls, store: FeatureStore, cfg: ModelConfig) -> OnlineReader:
        """The reader of a model's feature service, which must hold every configured feature."""
        reader = cls(store, cfg.feature_service_name, cfg.source.entity)
        absent = [name for name in cfg.feature_names if name not in reader.names]
        if absent:
            raise FeastAdapterError(
                f"feature service {cfg.feature_service_name!r} lacks {absent}: apply the model"
            )
        return reader

    def read(self, ids: list[Any]) -> list[dict[str, Any] | None]:
        """Per id, in order: every feature of the service by name (None where the store has
        no value), or None for an id no view has a row for."""
        if not ids:
            return []
        values = self._to_protos(list(ids), self.key_type)
        keys = [self._key(join_keys=[self.entity], entity_values=[v]) for v in values]
        out: list[dict[str, Any] | None] = [None] * len(ids)
        for read in self._reads:
            rows = self._provider.online_read(
                config=self._config,
                table=read.view,
                entity_keys=keys,
                requested_features=list(read.features),  # Feast's Redis store appends to it
            )
            for n, (_, found) in enumerate(rows):
                if found is None:
                    continue
                row = out[n]
                if row is None:
                    row = out[n] = dict.fromkeys(self.names)
                for name in read.features:
                    value = found.get(name)
                    if value is not None:
                        row[name] = self._to_python(value, read.types[name])
        return out

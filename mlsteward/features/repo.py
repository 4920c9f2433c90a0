"""The Feast objects declared from a model's config, applied to the registry and read back.

One model needs four Feast objects (entity, source, feature view, feature service), derived
here from ``ModelConfig`` so that adding a model needs no Python. The feature view holds every
data column: the features, then the sensitive columns that are not features. The feature
service projects the features only: it is what the model trains and serves on, so serving's
online reads never fetch a sensitive column, while training retrieval joins those columns
beside the service in the same point-in-time join (``retrieval.get_training_frame``) for the
holdout and the fairness gate. ``feature_repo/declarations.py``
builds the repo's declarations with ``repo_declarations`` (so ``feast plan`` / ``feast apply``
see the same objects), ingestion points the registry at a new snapshot with ``apply_model``, and
lineage and ``gc`` ask what is registered (``registered_snapshot_path``, ``registered_tags``).
Feast is imported inside the functions that build objects: ``import feast`` takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from mlsteward.config.models import ModelConfig
from mlsteward.data.offline_tables import table_name, uses_postgres
from mlsteward.data.snapshots import CREATED_TIMESTAMP_COLUMN, snapshot_path
from mlsteward.features.store import FeastAdapterError, get_store, repo_config

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView
    from feast.data_source import DataSource

MANAGED_BY = "mlsteward"

EntityDtype = Literal["int64", "string"]
OfflineKind = Literal["file", "postgres"]


@dataclass(frozen=True)
class ModelFeastObjects:
    """The four Feast objects one model needs; applied together so they never disagree."""

    entity: Entity
    source: DataSource  # FileSource (DuckDB) or PostgreSQLSource
    feature_view: FeatureView
    feature_service: FeatureService

    def as_list(self) -> list[Any]:
        return [self.entity, self.source, self.feature_view, self.feature_service]


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
    needed = [cfg.source.entity, cfg.timestamp_column, *cfg.data_column_names]
    missing = [c for c in needed if c not in schema.names]
    if missing:
        attributes = sorted(set(missing) & {c.name for c in cfg.attribute_columns})
        hint = (
            f"; {attributes} are sensitive columns the config added after this snapshot was "
            "ingested: ingest the data again"
            if attributes
            else ""
        )
        raise FeastAdapterError(
            f"snapshot {snapshot_path} for model {cfg.name!r} lacks column(s) {missing}{hint}"
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
        feature_dtypes: types ingestion inferred for data columns (features and sensitive
            columns that are not features) the config leaves untyped.
        offline: ``"file"`` (parquet, read by DuckDB) or ``"postgres"`` (the snapshot's table);
            default: what the active profile's offline store reads. Private snapshot stores
            pass ``"file"``: they are always local.
    """
    # import feast takes seconds: only when objects are built
    from feast import Entity, FeatureService, ValueType

    snapshot_path = Path(snapshot_path).expanduser().resolve()
    dtype = entity_dtype or snapshot_entity_dtype(cfg, snapshot_path)
    dtypes = _feature_dtypes(cfg, feature_dtypes)
    entity = Entity(
        name=cfg.entity_name,
        join_keys=[cfg.source.entity],
        value_type=ValueType.INT64 if dtype == "int64" else ValueType.STRING,
        description=f"{cfg.source.entity} of model {cfg.name}: the key every feature row has.",
        tags=_tags(cfg),
        owner=cfg.owner,
    )
    source = _source(cfg, snapshot_path, offline or _profile_offline_kind())
    feature_view = _feature_view(cfg, entity, source, dtype, dtypes)
    # A projection of the features alone (for a model without sensitive columns outside its
    # features, the same list as the whole view, so its registered service is unchanged).
    feature_service = FeatureService(
        name=cfg.feature_service_name,
        features=[feature_view[cfg.feature_names]],
        description=f"Everything model {cfg.name} trains and serves on; asked for by name.",
        tags=_tags(cfg),
        owner=cfg.owner,
    )
    return ModelFeastObjects(entity, source, feature_view, feature_service)


def _feature_dtypes(cfg: ModelConfig, inferred: dict[str, str] | None) -> dict[str, str]:
    """Each data column's config dtype, else the one ingestion inferred; none may be missing."""
    dtypes = {c.name: c.dtype or (inferred or {}).get(c.name) for c in cfg.data_columns}
    untyped = [name for name, t in dtypes.items() if t is None]
    if untyped:
        raise FeastAdapterError(
            f"model {cfg.name!r}: column(s) {untyped} have no dtype; ingestion must record "
            "one before the feature view can be built"
        )
    return {name: t for name, t in dtypes.items() if t is not None}


def _source(cfg: ModelConfig, snapshot_path: Path, offline: OfflineKind) -> DataSource:
    """The source reading the snapshot: its parquet file, or its table in PostgreSQL."""
    # import feast takes seconds: only when objects are built
    from feast import FileSource
    from feast.data_format import ParquetFormat

    # Snapshots hold unique (entity, event time) rows, so a created timestamp is optional:
    # used for tie-breaks when a snapshot carries one.
    created = (
        CREATED_TIMESTAMP_COLUMN
        if CREATED_TIMESTAMP_COLUMN in pq.read_schema(snapshot_path).names
        else ""
    )
    if offline == "postgres":
        return _postgres_source(cfg, snapshot_path, created)
    return FileSource(
        name=cfg.data_source_name,
        path=str(snapshot_path),
        file_format=ParquetFormat(),
        timestamp_field=cfg.timestamp_column,
        created_timestamp_column=created,
        description=f"Current accepted data snapshot of model {cfg.name} (immutable parquet).",
        tags=_tags(cfg, data_digest=snapshot_path.stem),
        owner=cfg.owner,
    )


def _feature_view(
    cfg: ModelConfig,
    entity: Entity,
    source: DataSource,
    entity_dtype: EntityDtype,
    dtypes: dict[str, str],
) -> FeatureView:
    """Every configured feature, then every sensitive column that is not a feature, typed,
    keyed by the entity, with the model's TTL."""
    # import feast takes seconds: only when objects are built
    from feast import FeatureView, Field
    from feast.types import Bool, Float64, Int64, String

    feast_types = {"int": Int64, "float": Float64, "bool": Bool, "category": String}
    schema = [
        Field(name=cfg.source.entity, dtype=Int64 if entity_dtype == "int64" else String),
        *(
            Field(name=f.name, dtype=feast_types[dtypes[f.name]], description=f.description)
            for f in cfg.data_columns
        ),
    ]
    # Feast 0.67: ttl=timedelta(0) means "no limit" (the join adds no expiry predicate), and the
    # registry stores None as 0 too -- passing None would make every `feast plan` show a diff.
    ttl = timedelta(days=cfg.feast.ttl_days) if cfg.feast.ttl_days else timedelta(0)
    return FeatureView(
        name=cfg.feature_view_name,
        entities=[entity],
        schema=schema,
        source=source,
        ttl=ttl,
        online=cfg.feast.online,
        description=f"Features of model {cfg.name}: {cfg.description or cfg.name}",
        tags=_tags(cfg),
        owner=cfg.owner,
    )


def _profile_offline_kind() -> OfflineKind:
    return "postgres" if uses_postgres() else "file"


def _postgres_source(cfg: ModelConfig, snapshot_path: Path, created: str) -> DataSource:
    """The snapshot's PostgreSQL table as a source: same name, time fields and tags as the
    parquet source, so only the offline store's reader differs."""
    # import feast takes seconds: only when objects are built
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


def source_table(source: Any) -> str | None:
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
    from feast.errors import FeatureViewNotFoundException  # import feast takes seconds

    store = get_store()
    try:
        fv = store.get_feature_view(cfg.feature_view_name)
    except (FeatureViewNotFoundException, FileNotFoundError):
        return None
    source = fv.batch_source
    if source is not None and source_table(source) is not None:
        # A table source is named by its digest; the snapshot file of that digest is where the
        # table came from (and what lineage, reproduction and gc refer to).
        digest = source.tags.get("data_digest")
        return str(snapshot_path(cfg.name, digest)) if digest else None
    return getattr(source, "path", None)


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
    from feast import FeatureStore  # import feast takes seconds: only when a store is built

    store = FeatureStore(config=repo_config(directory=directory))
    objects = build_objects(cfg, snapshot_path, feature_dtypes=feature_dtypes, offline="file")
    store.apply(objects.as_list())
    return store

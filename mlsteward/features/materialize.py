"""Loading the online store: the latest value per entity, read from the offline source.

Serving and online scoring read what was materialized (``online``); this module writes it and
says how much it wrote, counted on the same source Feast read (the snapshot's parquet file, or
its table with the PostgreSQL offline store).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from mlsteward.config.models import ModelConfig
from mlsteward.data.offline_tables import connect
from mlsteward.features.repo import registered_snapshot_path, source_table
from mlsteward.features.retrieval import offline_options, require_tables
from mlsteward.features.store import FeastAdapterError, get_store

if TYPE_CHECKING:
    from feast import FeatureStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MaterializeResult(BaseModel):
    """Feature values loaded into the online store: what the materialize flow returns."""

    model: str
    feature_view: str
    start: str
    end: str
    snapshot_path: str | None
    rows_in_window: int
    entities: int


class MaterializeSpec(BaseModel):
    """One materialize run, worked out once at its start: the model and the window of event
    times it loads (a retry loads the same window)."""

    model_config = ConfigDict(frozen=True)

    cfg: ModelConfig
    start: datetime
    """``end - feast.ttl_days`` (older values are expired anyway), or the epoch without a TTL."""
    end: datetime

    @classmethod
    def resolve(cls, cfg: ModelConfig, *, end: datetime | None = None) -> MaterializeSpec:
        """The window up to ``end`` (default: now); a naive ``end`` is taken as UTC, like every
        time in mlsteward.

        Raises:
            FeastAdapterError: the model is not online-enabled.
        """
        if not cfg.feast.online:
            raise FeastAdapterError(f"model {cfg.name!r} has feast.online: false; nothing to load")
        end = end or datetime.now(UTC)
        end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
        start = end - timedelta(days=cfg.feast.ttl_days) if cfg.feast.ttl_days else _EPOCH
        return cls(cfg=cfg, start=start, end=end)


def materialize(cfg: ModelConfig, end: datetime | None = None) -> dict[str, Any]:
    """Load the latest value per entity up to ``end`` into the online store
    (:meth:`MaterializeSpec.resolve` says which window; :func:`load_online` loads it)."""
    return load_online(MaterializeSpec.resolve(cfg, end=end))


def load_online(spec: MaterializeSpec) -> dict[str, Any]:
    """Load the latest value per entity inside the spec's window into the online store.

    Returns:
        ``model``, ``feature_view``, ``start``/``end`` (ISO-8601 UTC), ``snapshot_path``,
        ``rows_in_window`` (snapshot rows inside the window) and ``entities`` (distinct entities
        written to the online store).

    Raises:
        FeastAdapterError: the model has never been applied.
    """
    cfg, start, end = spec.cfg, spec.start, spec.end
    path = registered_snapshot_path(cfg)
    if path is None:
        raise FeastAdapterError(f"model {cfg.name!r} has no registered Feast source; ingest first")

    store = get_store()
    table_name = source_table(store.get_feature_view(cfg.feature_view_name).batch_source)
    if table_name is not None:
        require_tables(store, [cfg.feature_view_name])
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


def _table_window_counts(
    store: FeatureStore, cfg: ModelConfig, table: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """Rows inside ``[start, end]`` and their distinct entities, counted in PostgreSQL."""
    entity, ts = cfg.source.entity, cfg.timestamp_column
    with connect(offline_options(store)) as conn:
        row = conn.execute(
            f'SELECT count(*), count(DISTINCT "{entity}") FROM "{table}" '
            f'WHERE "{ts}" >= %s AND "{ts}" <= %s',
            (start, end),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)

"""Training retrieval: point-in-time correct features for entity rows, on DuckDB or PostgreSQL.

Feast does not keep the entity frame's row order, so retrieval carries a row key through the
join and restores the order (and checks the count) afterwards, in Arrow: the pandas route
(object strings, nullable bools via Python) cost more than the join itself at a million rows.
With the PostgreSQL offline store the entity frame goes into a scratch table first (see
``_uploaded_entities``); ``mlsteward gc`` drops the ones a killed process left behind, by the
time in their names (``scratch_table_time``).
"""

from __future__ import annotations

import io
import re
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mlsteward.config.models import ModelConfig
from mlsteward.data.offline_tables import OfflineTableError, connect, require_table
from mlsteward.data.state import SnapshotInfo
from mlsteward.features.dtypes import (
    DIRECT_ARROW_TYPES,
    canonical_from_arrow,
    registered_feature_dtypes,
)
from mlsteward.features.repo import source_table
from mlsteward.features.store import FeastAdapterError, get_store

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

ROW_ID = "row_id"
"""Column of the caller's entity frame that identifies each row across Feast's unordered join."""

# Feast infers the entity frame's event-time column: a column literally named
# ``event_timestamp`` wins, otherwise the single datetime column (with a print), otherwise it
# raises. We always hand Feast exactly this name, whatever the model calls its column.
_FEAST_EVENT_TIMESTAMP = "event_timestamp"
# Internal row key: a name no feature can plausibly have, so Feast's join cannot collide with it.
_ROW_KEY = "__mlsteward_row_id"


def entity_frame(cfg: ModelConfig, snapshot: SnapshotInfo) -> pd.DataFrame:
    """A snapshot's entity rows (id, event time, label) with a ``row_id``: the frame a training
    set is joined for (Feast does not keep row order)."""
    cols = [cfg.source.entity, cfg.timestamp_column, cfg.label]
    frame = pd.read_parquet(snapshot.path, columns=cols)
    frame.insert(0, ROW_ID, np.arange(len(frame), dtype="int64"))
    return frame


def get_training_frame(
    cfg: ModelConfig,
    entity_df: pd.DataFrame,
    *,
    with_label: bool = True,
    with_attributes: bool | None = None,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time correct features for each entity row, via the model's feature service.

    The sensitive columns that are not features come from the same feature view in the same
    join (so the same point in time), beside the service's features: the holdout and the
    fairness gate group by them; the model's encoding never reads them.

    Each row gets, per feature, the latest value whose event time is at or before the row's
    event time (and within the TTL, if one is set); ``ingested_at`` breaks ties. Rows with no such
    value keep their place with nulls.

    Args:
        cfg: the model.
        entity_df: columns ``row_id`` (unique int64), the entity column, the event-time column
            (tz-aware) and the label. Other columns are ignored.
        with_label: False for scoring, whose entity rows have no outcome yet: the label is
            then neither required nor returned.
        with_attributes: whether to add the sensitive columns that are not features (default:
            as ``with_label``: a training set has them, a scoring frame does not).
        store: the feature store to ask (default: the live one, ``get_store()``).

    Returns:
        One row per input row sorted by ``row_id``, columns ``[row_id, entity, event time, label,
        *features in config order, *sensitive columns that are not features]`` (no label when
        ``with_label`` is False, no sensitive columns when ``with_attributes`` is False);
        names are plain (no view prefix), dtypes as in ``dtypes.canonical``.

    Raises:
        FeastAdapterError: a required column is missing, row ids repeat, times are naive, or
            Feast returned a different number of rows (or other row ids) than it was given.
    """
    entity, ts, label = cfg.source.entity, cfg.timestamp_column, cfg.label
    required = [ROW_ID, entity, ts, label] if with_label else [ROW_ID, entity, ts]
    in_order = _check_entity_frame(cfg, entity_df, required)

    # Hand Feast only what the join needs, under names it cannot misread; the label and the
    # caller's own columns stay here and are re-attached by row key. The row key is each row's
    # position in row-id order, so putting Feast's (unordered) answer in that order is a scatter,
    # not a sort, and "one answer per row" is a bounds check plus "every position filled".
    n = len(entity_df)
    if in_order:
        by_row_id = position = np.arange(n, dtype=np.int64)
    else:
        by_row_id = np.argsort(entity_df[ROW_ID].to_numpy(), kind="stable")
        position = np.empty(n, dtype=np.int64)
        position[by_row_id] = np.arange(n, dtype=np.int64)
    query = pd.DataFrame(
        {
            _ROW_KEY: position,
            entity: entity_df[entity].to_numpy(),
            _FEAST_EVENT_TIMESTAMP: entity_df[ts]
            .dt.tz_convert("UTC")
            .astype("datetime64[us, UTC]"),
        }
    )
    store = store or get_store()
    attributes = with_label if with_attributes is None else with_attributes
    result = _historical(store, cfg, query, attributes)
    order = _answer_order(cfg, result, n)
    # Selecting columns (and take) copies, so the caller's frame is never shared or changed.
    base = entity_df[required] if in_order else entity_df[required].take(by_row_id)
    base.index = pd.RangeIndex(n)
    dtypes = registered_feature_dtypes(store, cfg, attributes=attributes)
    features = canonical_from_arrow(result.select(list(dtypes)), dtypes, order)
    return pd.concat([base, features], axis=1, copy=False)


def _check_entity_frame(cfg: ModelConfig, entity_df: pd.DataFrame, required: list[str]) -> bool:
    """Refuse an entity frame the join would misread; True when its row ids already increase.

    Callers usually number rows 0..n-1 in order: strictly increasing ids need neither the
    duplicate check nor a sort (both cost ~0.1 s per million rows).
    """
    ts = cfg.timestamp_column
    missing = [c for c in required if c not in entity_df.columns]
    if missing:
        raise FeastAdapterError(f"entity frame for {cfg.name!r} lacks column(s) {missing}")
    row_ids = entity_df[ROW_ID]
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
    if ts != _FEAST_EVENT_TIMESTAMP and _FEAST_EVENT_TIMESTAMP in cfg.data_column_names:
        raise FeastAdapterError(
            f"model {cfg.name!r}: a column named {_FEAST_EVENT_TIMESTAMP!r} clashes with the "
            "column Feast reserves for the entity frame's event time"
        )
    return in_order


def _requested(
    store: FeatureStore, cfg: ModelConfig, attributes: bool
) -> tuple[FeatureService | list[str], list[str]]:
    """What the join asks Feast for, and the views it reads: the model's feature service, or
    with the sensitive columns that are not features, the service's feature references plus
    those columns of the model's view (Feast takes a service or references, not both)."""
    service = store.get_feature_service(cfg.feature_service_name)
    views = [p.name for p in service.feature_view_projections]
    extra = [c.name for c in cfg.attribute_columns] if attributes else []
    if not extra:
        return service, views
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    refs += [f"{cfg.feature_view_name}:{name}" for name in extra]
    return refs, sorted({*views, cfg.feature_view_name})


def _historical(
    store: FeatureStore, cfg: ModelConfig, query: pd.DataFrame, attributes: bool
) -> pa.Table:
    """Feast's point-in-time join of ``query`` with the model's feature service (and the
    sensitive columns beside it when ``attributes``), as Arrow.

    Arrow, not to_df(): checking, reordering and casting there is vectorised (the pandas route
    cost more than the join itself at a million rows: objects for strings and nullable bools).
    """
    features, views = _requested(store, cfg, attributes)
    if _is_postgres_store(store):
        return _postgres_historical(store, cfg, features, views, query, attributes)
    return store.get_historical_features(entity_df=query, features=features).to_arrow()


def _answer_order(cfg: ModelConfig, result: pa.Table, n: int) -> np.ndarray:
    """Where each entity row's answer is in ``result``; Feast must answer every row once."""
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
    return order


# -- PostgreSQL offline store -----------------------------------------------------------------
# Feast's PostgreSQL store runs the same point-in-time join (TTL, created-timestamp tie-break)
# in SQL, but takes a pandas entity frame by creating a table and INSERTing it row by row
# (``executemany``: minutes at a million rows), with column types guessed from Arrow names. So
# the frame goes in here instead: one COPY into a table typed by us, handed to Feast as SQL
# (``SELECT * FROM <table>``), which Feast's store supports as an entity source and copies
# server-side. What comes back is Arrow typed from PostgreSQL's column types (int8 -> int64,
# float8 -> double, ...); ``canonical_from_arrow`` then gives the DuckDB path's dtypes, and the
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


def offline_options(store: FeatureStore) -> dict[str, Any]:
    """The offline store's connection options (host, database, ...), as Feast was given them."""
    return store.config.offline_store.model_dump()


def require_tables(store: FeatureStore, view_names: list[str]) -> None:
    """Fail with the table's name when a registered source's table is gone (see
    ``offline_tables.require_table``), instead of Feast's ``relation does not exist``."""
    for name in view_names:
        source = store.get_feature_view(name).batch_source
        table = source_table(source)
        if source is None or table is None:
            continue
        try:
            require_table(table, source.tags.get("data_digest"), offline_options(store))
        except OfflineTableError as exc:
            raise FeastAdapterError(f"feature view {name!r}: {exc}") from exc


@contextmanager
def _uploaded_entities(store: FeatureStore, query: pd.DataFrame) -> Iterator[str]:
    """The entity frame as a table in the offline database, for as long as the join runs."""
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
    options = offline_options(store)
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
    store: FeatureStore,
    cfg: ModelConfig,
    features: FeatureService | list[str],
    views: list[str],
    query: pd.DataFrame,
    attributes: bool,
) -> pa.Table:
    """Feast's PostgreSQL point-in-time join over ``query``, as Arrow (row order unspecified)."""
    require_tables(store, views)
    if query.empty:
        # Feast's PostgreSQL store fails on an empty entity frame (it takes the time range from
        # MIN/MAX, which are NULL); the answer is known: no rows, the feature columns typed.
        dtypes = registered_feature_dtypes(store, cfg, attributes=attributes)
        return pa.table(
            {
                _ROW_KEY: pa.array([], pa.int64()),
                **{
                    n: pa.array([], DIRECT_ARROW_TYPES.get(t, pa.string()))
                    for n, t in dtypes.items()
                },
            }
        )
    with _uploaded_entities(store, query) as entity_sql, warnings.catch_warnings():
        # Feast reads the SQL entity frame's schema with pandas over a psycopg connection,
        # which pandas warns about on every call; the schema it needs (names) is right.
        warnings.filterwarnings("ignore", "pandas only supports SQLAlchemy", UserWarning)
        return store.get_historical_features(entity_df=entity_sql, features=features).to_arrow()

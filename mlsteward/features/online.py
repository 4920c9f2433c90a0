"""Online reads: a model's latest materialized features per entity id.

Used on the request path by the prediction service and by online scoring, so this module
imports nothing of training retrieval (``retrieval``) and resolves a feature service once per
reader rather than once per read. Feast itself is imported when a reader is made: ``import
feast`` takes seconds, and importing this module must stay cheap.

An online store that goes away (Redis killed, restarted or unreachable) fails a read quickly
and by name, as :class:`OnlineStoreUnavailable`, and the next read after it is back succeeds:
the reader bounds each Redis call (a connect and a read timeout, one immediate retry on a
fresh connection for a pooled one the restart closed), and after a failure answers at once
for ``OUTAGE_COOL_DOWN_SECONDS`` before it asks the store again. Why: the prediction service
reads on its event loop, and redis-py's defaults (no timeout; three retries with back-off up
to ten seconds) held that loop ~7 s for every micro-batch while Redis was down, /healthz with
it, and for ever while Redis was frozen (measured: tests/faults/test_redis_faults.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.features.dtypes import canonical, registered_feature_dtypes
from mlsteward.features.store import FeastAdapterError, get_store

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.repo_config import RepoConfig

SOCKET_TIMEOUT_SECONDS = 0.5
"""How long one Redis connect or read may take (a read takes well under a millisecond): a
frozen Redis costs a read this long, not for ever. A connection string that sets
``socket_timeout`` or ``socket_connect_timeout`` keeps its own."""
OUTAGE_COOL_DOWN_SECONDS = 1.0
"""After a read failed for want of the store, reads fail at once this long before the store
is asked again: the recovery is seen within about this long after the store is back."""


class OnlineStoreUnavailable(FeastAdapterError):
    """The online store did not answer (refused, reset or timed out): an outage of a
    dependency, which the service answers with 503 naming it, not a bad request."""


def online_features(
    cfg: ModelConfig, entity_ids: list[Any], *, attributes: bool = False
) -> pd.DataFrame:
    """Latest materialized features for each id, in request order, columns selected by name.

    Feast's online column order differs between processes, so columns are picked by name:
    ``[entity, *features in config order]``, then with ``attributes`` the sensitive columns
    that are not features (the online store holds them; only a caller that asks reads them).
    Unknown ids get nulls.
    """
    store = get_store()
    reader = OnlineReader.for_model(store, cfg, attributes=attributes)
    rows = reader.read(entity_ids)
    dtypes = registered_feature_dtypes(store, cfg, attributes=attributes)
    columns: dict[str, list[Any]] = {cfg.source.entity: list(entity_ids)}
    for name in dtypes:
        columns[name] = [None if row is None else row[name] for row in rows]
    return canonical(pd.DataFrame(columns), dtypes)


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

    def __init__(
        self,
        store: FeatureStore,
        service_name: str,
        entity: str,
        extra: dict[str, list[str]] | None = None,
    ) -> None:
        """``extra``: more columns to read, by feature view name, beside the service's (the
        sensitive columns that are not features, which the service leaves out)."""
        # import feast takes seconds: only when a reader is made, never at import
        from feast.errors import FeatureViewNotFoundException
        from feast.infra.provider import get_provider
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

        service = store.get_feature_service(service_name)
        self.entity = entity
        self.names: list[str] = []
        self._reads: list[_ViewRead] = []
        key_types = set()
        # One read per view: extra columns of a view the service reads join that view's read.
        wanted: dict[str, list[str]] = {}
        for p in service.feature_view_projections:
            wanted.setdefault(p.name, []).extend(f.name for f in p.features)
        for view_name, names in (extra or {}).items():
            wanted.setdefault(view_name, []).extend(names)
        for view_name, features in wanted.items():
            try:
                view = store.get_feature_view(view_name)
            except FeatureViewNotFoundException:
                raise FeastAdapterError(
                    f"feature service {service_name!r}: {view_name!r} is not a plain "
                    "feature view (on-demand views are not read online here)"
                ) from None
            keys = {f.name: f.dtype.to_value_type() for f in view.entity_columns}
            if list(keys) != [entity]:
                raise FeastAdapterError(
                    f"feature view {view.name!r} is keyed by {sorted(keys)}, not [{entity!r}]"
                )
            key_types.add(keys[entity])
            clash = sorted(
                {f for f in features if features.count(f) > 1} | (set(features) & set(self.names))
            )
            if clash:
                raise FeastAdapterError(f"feature service {service_name!r}: {clash} appear twice")
            declared = {f.name: f.dtype.to_value_type() for f in view.features}
            absent = [name for name in features if name not in declared]
            if absent:
                raise FeastAdapterError(f"feature view {view.name!r} has no {absent}")
            self.names.extend(features)
            types = {name: declared[name] for name in features}
            self._reads.append(_ViewRead(view, features, types))
        if len(key_types) > 1:
            raise FeastAdapterError(f"views of {service_name!r} type {entity!r} differently")
        if not key_types:
            raise FeastAdapterError(f"feature service {service_name!r} reads no feature view")
        self.key_type = key_types.pop()
        self._config = store.config
        self._provider = get_provider(store.config)
        self._where, self._outages = _bound_online_store(self._provider, store.config)
        self._down_until = 0.0
        self._down_why = ""
        # kept, not imported per read: ``read`` is on the prediction service's request path
        self._key = EntityKey
        self._to_protos = python_values_to_proto_values
        self._to_python = feast_value_type_to_python_type

    @classmethod
    def for_model(
        cls, store: FeatureStore, cfg: ModelConfig, *, attributes: bool = False
    ) -> OnlineReader:
        """The reader of a model's feature service, which must hold every configured feature;
        with ``attributes``, also of the sensitive columns that are not features."""
        extra = [c.name for c in cfg.attribute_columns] if attributes else []
        reader = cls(
            store,
            cfg.feature_service_name,
            cfg.source.entity,
            {cfg.feature_view_name: extra} if extra else None,
        )
        absent = [name for name in [*cfg.feature_names, *extra] if name not in reader.names]
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
        if self._down_until:
            if time.monotonic() < self._down_until:
                raise OnlineStoreUnavailable(self._down_why)
            self._down_until = 0.0  # the cool-down is over: this read asks the store again
        try:
            return self._read(ids)
        except self._outages as exc:
            self._down_why = f"the online store ({self._where}) is unavailable: {exc}"
            self._down_until = time.monotonic() + OUTAGE_COOL_DOWN_SECONDS
            raise OnlineStoreUnavailable(self._down_why) from exc

    def _read(self, ids: list[Any]) -> list[dict[str, Any] | None]:
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


def _bound_online_store(
    provider: Any, config: RepoConfig
) -> tuple[str, tuple[type[Exception], ...]]:
    """What to call the online store in a message, and the errors that mean it is away.

    A Redis store's client gets timeouts and one immediate retry instead of redis-py's
    defaults (see the module's docstring): set on the client Feast's store will use, before its
    first connection. Other stores (SQLite) are read as they are."""
    online = config.online_store
    if getattr(online, "type", None) != "redis" or getattr(online, "redis_type", None) not in (
        None,
        "redis",
    ):
        return f"{getattr(online, 'type', 'online')} store", (OSError,)
    # Imported here: only a Redis online store needs redis-py (feast[redis]).
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = provider.online_store._get_client(online)  # Feast's own client for this store
    kwargs = client.get_connection_kwargs()
    for name in ("socket_timeout", "socket_connect_timeout"):
        if kwargs.get(name) is None:
            kwargs[name] = SOCKET_TIMEOUT_SECONDS
    # One retry, at once, on a fresh connection: a pooled one that a restarted Redis closed.
    # A timeout is not retried: a frozen store would only cost twice as long.
    client.set_retry(Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
    where = f"Redis at {str(online.connection_string).split(',', 1)[0]}"
    return where, (redis.ConnectionError, redis.TimeoutError, OSError)

"""Snapshots as immutable PostgreSQL tables, for Feast's PostgreSQL offline store.

Why: with ``feast.offline_store: postgres`` several machines share one offline store that no
file system has to carry, and Feast's PostgreSQL store can only read tables (``PostgreSQLSource``),
not parquet. So ingestion loads each accepted snapshot into the profile's ``<prefix>_offline``
database, once, under a name made of the model and the snapshot's digest. The table is then the
same data version as the file: same rows, same column types, and never changed afterwards.

* **Idempotent**: the name is a function of (model, digest), so re-ingesting identical data finds
  the table and reuses it after checking its row count (and the digest recorded in its comment)
  against the snapshot; a table with the right name but the wrong content is an error, never
  silently reused. A per-table advisory lock makes two concurrent loaders of one digest load it
  once.
* **Fast**: one ``COPY ... FROM STDIN (FORMAT csv)`` fed with CSV that Arrow writes batch by batch
  (no Python object per value, no row-by-row ``INSERT``); the table, its index and its comment
  appear in one transaction, so a half-loaded table is never visible.
* **Immutable**: a statement-level trigger refuses ``INSERT``/``UPDATE``/``DELETE``/``TRUNCATE``
  on it; the data version a registered model names cannot drift under it.
* **Types as in the snapshot**: integers keep their width, floats their precision, strings are
  ``text``, times ``timestamptz`` (naive snapshot times are UTC, as everywhere in mlsteward).

The private stores that rebuild an old training set (``features.repo.snapshot_store``) keep
reading snapshot files with DuckDB; nothing here is involved in them.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlsteward.config.profiles import active
from mlsteward.data.snapshots import CREATED_TIMESTAMP_COLUMN
from mlsteward.errors import MlstewardError

if TYPE_CHECKING:
    import psycopg

    from mlsteward.config.models import ModelConfig
    from mlsteward.config.profiles import Profile

MAX_IDENTIFIER = 63
"""PostgreSQL truncates longer identifiers silently; names are built to fit instead."""

DIGEST_CHARS = 32
"""Hex digits of the snapshot digest in a table name: 128 bits, so two data versions of one model
never share a table, while the name (with the model's) stays within ``MAX_IDENTIFIER``."""

_IMMUTABLE_FUNCTION = "mlsteward_refuse_snapshot_change"
_BATCH_ROWS = 65_536
# Arrow type -> PostgreSQL type. Widths are kept so a value reads back as the snapshot's type.
_INT_TYPES = {8: "smallint", 16: "smallint", 32: "integer", 64: "bigint"}


class OfflineTableError(MlstewardError):
    """A snapshot's PostgreSQL table is missing, differs from its snapshot, or cannot be made."""


@dataclass(frozen=True)
class OfflineTable:
    """Where one snapshot lives in the offline database, and what loading it did."""

    name: str
    rows: int
    created: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.name,
            "rows": self.rows,
            "created": self.created,
            "seconds": round(self.seconds, 3),
        }


def table_name(model: str, digest: str) -> str:
    """``<model>__<first 32 hex digits of the digest>``, shortened to fit PostgreSQL's limit.

    Model names are lower_snake_case (config validation), so the name needs no quoting in the
    SQL Feast writes. A model name too long to fit keeps a prefix plus a hash of the full name,
    so two long names sharing a prefix still get different tables.
    """
    suffix = f"__{digest[:DIGEST_CHARS]}"
    room = MAX_IDENTIFIER - len(suffix)
    if len(model) > room:
        model = f"{model[: room - 9]}_{hashlib.sha256(model.encode()).hexdigest()[:8]}"
    return f"{model}{suffix}"


def uses_postgres(profile: Profile | None = None) -> bool:
    """True when the (active) profile keeps the offline store in PostgreSQL."""
    return (profile or active()).feast.offline_store == "postgres"


def connection_options(profile: Profile | None = None) -> dict[str, Any]:
    """The profile's Feast offline-store settings (host, port, user, database, db_schema,
    sslmode), the same ones ``features.store.repo_config`` hands Feast."""
    profile = profile or active()
    options = profile.feast_offline_store
    if options is None:
        raise OfflineTableError("the active profile does not keep the offline store in PostgreSQL")
    return dict(options)


def connect(options: Mapping[str, Any]) -> psycopg.Connection:
    """A connection to the offline database as Feast makes it (same database, search path).

    ``options`` are Feast's PostgreSQL offline-store settings, from the profile or from a
    ``RepoConfig`` (``config.offline_store.model_dump()``): the tables must be where Feast's
    queries look for them.
    """
    import psycopg

    schema = str(options.get("db_schema") or options.get("user") or "public").strip()
    search_path = schema if schema == "public" else f"{schema},public"
    kwargs = {
        "host": options.get("host"),
        "port": int(options.get("port") or 5432),
        "user": options.get("user"),
        "password": options.get("password") or None,
        "dbname": options.get("database"),
        "sslmode": options.get("sslmode"),
        "sslkey": options.get("sslkey_path"),
        "sslcert": options.get("sslcert_path"),
        "sslrootcert": options.get("sslrootcert_path"),
        "options": f"-c search_path={search_path}",
        "connect_timeout": 10,
    }
    try:
        params: dict[str, Any] = {k: v for k, v in kwargs.items() if v is not None}
        return psycopg.connect(**params)
    except psycopg.OperationalError as exc:
        raise OfflineTableError(
            f"offline database {options.get('database')!r} at {options.get('host')} refused or "
            f"did not answer: {exc}"
        ) from exc


def _pg_type(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_signed_integer(t):
        return _INT_TYPES[t.bit_width]
    if pa.types.is_unsigned_integer(t):
        return "integer" if t.bit_width < 32 else "bigint" if t.bit_width == 32 else "numeric"
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return "real"
    if pa.types.is_float64(t):
        return "double precision"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_timestamp(t):
        return "timestamptz"
    if pa.types.is_date(t):
        return "date"
    raise OfflineTableError(
        f"snapshot column {field.name!r} has type {field.type}, which has no PostgreSQL "
        "offline-store mapping (expected integers, floats, booleans, strings or times)"
    )


def _csv_ready(field: pa.Field) -> pa.DataType:
    """The type a column is written to CSV as: values of the dictionary, times in UTC."""
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    return pa.float32() if pa.types.is_float16(t) else t


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (_quote(name),)).fetchone()
    return bool(row and row[0])


def _comment(model: str, digest: str, rows: int) -> str:
    return json.dumps({"managed_by": "mlsteward", "model": model, "digest": digest, "rows": rows})


def _recorded_digest(conn: psycopg.Connection, name: str) -> str | None:
    """The data version ``load_snapshot`` wrote into the table's comment (None: none)."""
    row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (_quote(name),))
    raw = (row.fetchone() or [None])[0]
    try:
        return json.loads(raw).get("digest") if raw else None
    except (ValueError, AttributeError):
        return None


def verify(conn: psycopg.Connection, name: str, digest: str, rows: int) -> None:
    """Check that table ``name`` is the snapshot ``digest`` with ``rows`` rows.

    Raises:
        OfflineTableError: the table is missing, records another digest, or holds another
            number of rows than the snapshot.
    """
    if not _table_exists(conn, name):
        raise OfflineTableError(
            f"offline table {name!r} (snapshot {digest}) does not exist in the offline database"
        )
    recorded = _recorded_digest(conn, name)
    if recorded != digest:
        raise OfflineTableError(
            f"offline table {name!r} records data version {recorded!r}, not {digest}; it was "
            "not made by mlsteward from this snapshot and is not reused"
        )
    count = conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()
    have = int(count[0]) if count else -1
    if have != rows:
        raise OfflineTableError(
            f"offline table {name!r} holds {have} rows but snapshot {digest} has {rows}; "
            "refusing to read a data version that differs from its snapshot"
        )


def _csv_batches(path: Path, schema: pa.Schema) -> Iterator[bytes]:
    target = pa.schema([pa.field(f.name, _csv_ready(f)) for f in schema])
    options = pacsv.WriteOptions(include_header=False)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
        buffer = io.BytesIO()
        pacsv.write_csv(pa.Table.from_batches([batch]).cast(target), buffer, options)
        yield buffer.getvalue()


def load_snapshot(
    cfg: ModelConfig,
    snapshot_path: Path,
    *,
    digest: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> OfflineTable:
    """Make the snapshot available to Feast's PostgreSQL store as ``table_name(model, digest)``.

    Args:
        cfg: the model the snapshot belongs to (its entity and event-time columns are indexed
            for the point-in-time join).
        snapshot_path: the immutable snapshot parquet (named ``<digest>.parquet``).
        digest: the snapshot's data version (default: the file's stem, as ingestion names it).
        options: Feast offline-store settings (default: the active profile's).

    Returns:
        The table's name and rows, and whether this call created it (False: reused).

    Raises:
        OfflineTableError: the database is unreachable, a column has a type PostgreSQL cannot
            hold, a table of that name exists with other content, or the snapshot has rows on
            which Feast's PostgreSQL join would answer differently from the DuckDB one
            (``_check_pit_keys``); nothing is left behind then.
    """
    started = time.perf_counter()
    snapshot_path = Path(snapshot_path)
    digest = digest or snapshot_path.stem
    name = table_name(cfg.name, digest)
    parquet = pq.ParquetFile(snapshot_path)
    rows = parquet.metadata.num_rows
    schema = parquet.schema_arrow
    columns = ", ".join(f"{_quote(f.name)} {_pg_type(f)}" for f in schema)
    created = CREATED_TIMESTAMP_COLUMN if CREATED_TIMESTAMP_COLUMN in schema.names else None

    with connect(options or connection_options()) as conn, conn.transaction():
        # One loader per table: a concurrent ingestion of the same digest waits here, then
        # finds the finished table and verifies it.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mlsteward:{name}",))
        if _table_exists(conn, name):
            verify(conn, name, digest, rows)
            return OfflineTable(name, rows, False, time.perf_counter() - started)
        conn.execute(
            f"""CREATE OR REPLACE FUNCTION {_IMMUTABLE_FUNCTION}() RETURNS trigger
                LANGUAGE plpgsql AS $$ BEGIN
                  RAISE EXCEPTION 'table % holds an immutable mlsteward snapshot', TG_TABLE_NAME;
                END $$"""
        )
        quoted = _quote(name)
        conn.execute(f"CREATE TABLE {quoted} ({columns})")
        column_list = ", ".join(_quote(f.name) for f in schema)
        with conn.cursor().copy(f"COPY {quoted} ({column_list}) FROM STDIN (FORMAT csv)") as copy:
            for chunk in _csv_batches(snapshot_path, schema):
                copy.write(chunk)
        entity, ts = cfg.source.entity, cfg.timestamp_column
        index = _quote(f"{name[: MAX_IDENTIFIER - 4]}_pit")
        conn.execute(f"CREATE INDEX {index} ON {quoted} ({_quote(entity)}, {_quote(ts)})")
        _check_pit_keys(conn, name, [entity, ts], created, snapshot_path)
        conn.execute(
            f"CREATE TRIGGER mlsteward_immutable BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {quoted} FOR EACH STATEMENT EXECUTE FUNCTION {_IMMUTABLE_FUNCTION}()"
        )
        comment = _comment(cfg.name, digest, rows)
        conn.execute(f"COMMENT ON TABLE {quoted} IS {_literal(comment)}")
        conn.execute(f"ANALYZE {quoted}")
        verify(conn, name, digest, rows)
    return OfflineTable(name, rows, True, time.perf_counter() - started)


def _schema_tables(
    options: Mapping[str, Any] | None, condition: str
) -> list[tuple[str, str | None]]:
    """(name, comment) of the tables in the offline schema Feast reads that meet ``condition``
    (SQL over ``pg_class c``), by name."""
    with connect(options or connection_options()) as conn:
        return conn.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind = 'r' AND n.nspname = current_schema() AND {condition} "
            "ORDER BY c.relname",
            (),
        ).fetchall()


def managed_tables(options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The snapshot tables mlsteward loaded into the offline schema Feast reads (recognised by
    the JSON comment ``load_snapshot`` puts on them; other tables are never listed)."""
    tables = []
    for name, raw in _schema_tables(
        options, "obj_description(c.oid, 'pg_class') LIKE '%%mlsteward%%'"
    ):
        try:
            meta = json.loads(raw or "")
        except ValueError:
            continue
        if isinstance(meta, dict) and meta.get("managed_by") == "mlsteward":
            tables.append(
                {"table": name, "model": meta.get("model"), "digest": meta.get("digest"),
                 "rows": meta.get("rows")}
            )  # fmt: skip
    return tables


def scratch_tables(options: Mapping[str, Any] | None = None) -> list[str]:
    """Entity tables uploaded for a point-in-time join (``features.retrieval``) still in the offline
    schema: a join drops its own, so these belong to joins running now or to killed ones."""
    found = _schema_tables(options, "c.relname LIKE 'mlsteward\\_entities\\_%%'")
    return [name for name, _ in found]


def drop_scratch_table(name: str, options: Mapping[str, Any] | None = None) -> None:
    with connect(options or connection_options()) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {_quote(name)}")


def drop_table(name: str, digest: str, options: Mapping[str, Any] | None = None) -> bool:
    """Drop snapshot table ``name`` if it still records ``digest``; False when it was gone or
    had been replaced. Holds the loader's lock, so a load of the same snapshot waits for the
    drop and then makes the table again rather than finding it half-dropped."""
    with connect(options or connection_options()) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"mlsteward:{name}",))
        if not _table_exists(conn, name):
            return False
        if _recorded_digest(conn, name) != digest:
            return False
        conn.execute(f"DROP TABLE {_quote(name)}")
    return True


def _check_pit_keys(
    conn: psycopg.Connection, name: str, keys: list[str], created: str | None, snapshot: Path
) -> None:
    """Refuse rows on which Feast's PostgreSQL join differs from the DuckDB one.

    Measured on Feast 0.67: rows that tie on entity, event time *and* created timestamp come
    back as one entity row per tied feature row (the training set grows, and
    ``get_training_frame`` would fail on the count), where DuckDB picks one; and a feature row
    with a null created timestamp is skipped in favour of an older one, where DuckDB takes it
    (nulls last only among equal times). Ingestion's snapshots have neither (unique entity and
    event time), so this only stops hand-made or foreign data, with the reason.
    """
    quoted = _quote(name)
    tie_keys = [*keys, *([created] if created else [])]
    group = ", ".join(_quote(k) for k in tie_keys)
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {quoted} GROUP BY {group} "
        f"HAVING count(*) > 1) AS ties"
    ).fetchone()
    if row and row[0]:
        raise OfflineTableError(
            f"snapshot {snapshot}: {row[0]} group(s) of rows share {', '.join(tie_keys)}; "
            "Feast's PostgreSQL offline store would return such an entity row once per tied "
            "feature row, so it cannot be loaded (make the rows unique, or give them distinct "
            "created timestamps)"
        )
    if created:
        nulls = conn.execute(f"SELECT count(*) FROM {quoted} WHERE {_quote(created)} IS NULL")
        count = (nulls.fetchone() or [0])[0]
        if count:
            raise OfflineTableError(
                f"snapshot {snapshot}: {count} row(s) have no {created!r}; Feast's PostgreSQL "
                "offline store skips such rows in its point-in-time join (the DuckDB store does "
                "not), so it cannot be loaded"
            )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def require_table(name: str, digest: str | None, options: Mapping[str, Any]) -> None:
    """Raise a clear error when the table a registered source reads is gone.

    Without this, Feast's query fails deep inside with ``relation ... does not exist``; the
    message here names the table, the data version and the fix.

    Raises:
        OfflineTableError: the table does not exist.
    """
    with connect(options) as conn:
        if not _table_exists(conn, name):
            raise OfflineTableError(
                f"offline table {name!r} of the registered snapshot {digest or '(unknown)'} is "
                f"missing from database {options.get('database')!r}; re-ingest the data to "
                "load it again"
            )

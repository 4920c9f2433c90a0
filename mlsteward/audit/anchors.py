"""Where signed checkpoints of the audit trail are kept: a place outside the audit store.

A checkpoint only helps if whoever can rewrite the audit database cannot also rewrite the
checkpoints, so the anchor is a second place (``settings.audit_anchor_url()``):

* ``file:///abs/path/checkpoints.jsonl``: one JSON line per checkpoint, appended under an
  exclusive ``flock`` (lines of concurrent writers never interleave) and fsync'd before
  ``append`` returns. The local default lives outside ``MLSTEWARD_HOME`` (under
  ``$XDG_STATE_HOME``), so wiping or copying the home does not take the checkpoints along.
* ``postgresql://…/db``: a table ``audit_checkpoints`` in a database other than the audit
  trail's (the production profile's ``<prefix>_anchor``), created if missing, with triggers
  that refuse UPDATE, DELETE and TRUNCATE. Grant the audit trail's writers INSERT and SELECT
  only.

An anchor keeps checkpoints of several audit stores apart by the checkpoint's ``store`` id.
Reading the newest one is a few milliseconds either way: the file is read from its end, the
table through an index on (store, seq). Nothing here takes an audit store's locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from mlsteward.audit.records import AuditError

TABLE = "audit_checkpoints"
_TAIL_BYTES = 64 * 1024


class Anchored(Protocol):
    """What an anchor stores: a checkpoint as its plain fields (see ``checkpoints``)."""

    def to_dict(self) -> dict[str, Any]: ...


class Anchor(Protocol):
    """A place outside the audit store that keeps signed checkpoints."""

    def describe(self) -> str:
        """The anchor as messages name it (no password)."""
        ...

    def append(self, checkpoint: Anchored) -> None:
        """Store one checkpoint durably before returning."""
        ...

    def newest(self, store: str, key_id: str | None = None) -> dict[str, Any] | None:
        """The fields of the newest checkpoint (highest seq) of ``store``, optionally only
        among those signed with ``key_id``; None when there is none."""
        ...

    def close(self) -> None: ...


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _line(checkpoint: Anchored) -> bytes:
    text = json.dumps(checkpoint.to_dict(), sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def _parse(line: bytes) -> dict[str, Any] | None:
    """One stored line as fields, or None for a line that is not a checkpoint (a torn write)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
        return None
    return data


def _pick(
    candidates: Iterator[dict[str, Any]], store: str, key_id: str | None
) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for data in candidates:
        if data.get("store") != store or (key_id is not None and data.get("key_id") != key_id):
            continue
        if best is None or data["seq"] >= best["seq"]:
            best = data
    return best


class FileAnchor:
    """Checkpoints as JSON lines in an append-only file (see the module doc)."""

    def __init__(self, path: Path) -> None:
        if not path.is_absolute():
            raise AuditError(
                f"the audit anchor file {path} must be an absolute path "
                "(MLSTEWARD_AUDIT_ANCHOR=file:///abs/path/checkpoints.jsonl)"
            )
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def append(self, checkpoint: Anchored) -> None:
        line = _line(checkpoint)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size:
                    line = self._after_torn_line(size) + line
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)  # releases the flock
            if created:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit checkpoint to {self.path}: {exc.strerror or exc}"
            ) from exc

    def _after_torn_line(self, size: int) -> bytes:
        """A newline first when a crash left the last line unfinished, so the new line
        stays parseable."""
        with self.path.open("rb") as fh:
            fh.seek(size - 1)
            return b"" if fh.read(1) == b"\n" else b"\n"

    def newest(self, store: str, key_id: str | None = None) -> dict[str, Any] | None:
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - _TAIL_BYTES)
                fh.seek(start)
                tail = fh.read()
                lines = tail.split(b"\n")
                if start:
                    lines = lines[1:]  # the first one is cut
                found = _pick(_parsed(lines), store, key_id)
                if found is not None or not start:
                    return found
                fh.seek(0)  # not in the tail: the whole file, line by line
                return _pick(_parsed(fh), store, key_id)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(
                f"cannot read the audit checkpoints in {self.path}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        return None


def _parsed(lines: Any) -> Iterator[dict[str, Any]]:
    for line in lines:
        data = _parse(line) if line.strip() else None
        if data is not None:
            yield data


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_COLUMNS = ("format", "store", "seq", "head_hash", "records", "ts", "key_id", "signature")
_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id BIGSERIAL PRIMARY KEY,
        format TEXT NOT NULL,
        store TEXT NOT NULL,
        seq BIGINT NOT NULL,
        head_hash TEXT NOT NULL,
        records BIGINT NOT NULL,
        ts TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        written_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_store_seq ON {TABLE} (store, seq, id)",
    f"""CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit checkpoints are append-only (% on %)', TG_OP, TG_TABLE_NAME;
        END $$""",
)
_TRIGGERS = {
    f"{TABLE}_no_update_delete": (
        f"CREATE TRIGGER {TABLE}_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE} "
        f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only()"
    ),
    f"{TABLE}_no_truncate": (
        f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_append_only()"
    ),
}
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE store = %s"
_INSERT = f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * 8)})"

_CONNECTIONS: dict[tuple[str, int], Any] = {}
"""One connection per anchor URL and process: a checkpoint after each promotion should not
pay a new connection (and the schema check) each time."""
_CONNECTIONS_LOCK = threading.Lock()


class PostgresAnchor:
    """Checkpoints as rows of ``audit_checkpoints`` in another database (see the module doc)."""

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise AuditError(f"not a PostgreSQL anchor URL: {_redact(url)}")
        self.url = f"postgresql://{rest}"
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{TABLE} in {_redact(self.url)}"

    def _conn(self) -> Any:
        import psycopg  # start-up time: only a PostgreSQL anchor needs the driver

        from mlsteward.audit.reconnecting import is_alive  # imports psycopg, as above

        key = (self.url, os.getpid())
        with _CONNECTIONS_LOCK:
            conn = _CONNECTIONS.get(key)
            if conn is not None and is_alive(conn):
                return conn
            if conn is not None:  # the server restarted or ended the session: a new one
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            try:
                conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=10,
                    application_name="mlsteward-audit-anchor",
                )
            except psycopg.Error as exc:
                raise AuditError(
                    f"cannot connect to the audit anchor {_redact(self.url)}: "
                    f"{' '.join(str(exc).split())}"
                ) from exc
            try:
                _ensure_schema(conn)
            except psycopg.Error as exc:
                conn.close()
                raise AuditError(
                    f"cannot create {TABLE} in {_redact(self.url)}: {' '.join(str(exc).split())}"
                ) from exc
            _CONNECTIONS[key] = conn
            return conn

    def append(self, checkpoint: Anchored) -> None:
        import psycopg

        data = checkpoint.to_dict()
        with self._lock:
            try:
                self._conn().execute(_INSERT, tuple(data[c] for c in _COLUMNS))
            except psycopg.Error as exc:
                raise AuditError(
                    f"cannot write the audit checkpoint to {self.describe()}: {exc}"
                ) from exc

    def newest(self, store: str, key_id: str | None = None) -> dict[str, Any] | None:
        import psycopg

        sql, params = _SELECT, [store]
        if key_id is not None:
            sql += " AND key_id = %s"
            params.append(key_id)
        with self._lock:
            try:
                row = (
                    self._conn().execute(f"{sql} ORDER BY seq DESC, id DESC LIMIT 1", params)
                ).fetchone()
            except psycopg.Error as exc:
                raise AuditError(
                    f"cannot read the audit checkpoints in {self.describe()}: {exc}"
                ) from exc
        return dict(zip(_COLUMNS, row, strict=True)) if row else None

    def close(self) -> None:
        return None  # the connection is kept for the process (see _CONNECTIONS)


def _ensure_schema(conn: Any) -> None:
    ready = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = ANY(%s)",
        (TABLE, list(_TRIGGERS)),
    ).fetchone()[0]
    if ready == len(_TRIGGERS):
        return
    with conn.transaction():  # one creator at a time: DDL races on pg_type otherwise
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (TABLE,))
        for statement in _SCHEMA:
            conn.execute(statement)
        existing = {
            row[0]
            for row in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s)", (TABLE,)
            )
        }
        for name, statement in _TRIGGERS.items():
            if name not in existing:
                conn.execute(statement)


def open_anchor(url: str) -> Anchor:
    """The anchor at ``url`` (``file:///abs/path.jsonl`` or ``postgresql://…/db``)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise AuditError(f"the audit anchor {url} names a host; use file:///abs/path.jsonl")
        return FileAnchor(Path(unquote(parts.path)))
    if scheme in ("postgresql", "postgres"):
        return PostgresAnchor(url)
    raise AuditError(
        f"unsupported audit anchor {_redact(url)!r}: set MLSTEWARD_AUDIT_ANCHOR to "
        "file:///abs/path/checkpoints.jsonl or postgresql://user@host/other_db"
    )


def same_place(anchor: Anchor, store_location: Mapping[str, str]) -> bool:
    """True when the anchor sits where the audit trail's writers also write: the audit
    trail's own PostgreSQL database, or the SQLite file's directory."""
    if isinstance(anchor, PostgresAnchor) and store_location.get("kind") == "postgresql":
        a = urlsplit(anchor.url)
        where = f"{a.hostname}:{a.port or 5432}{a.path.rstrip('/')}"
        return where == store_location.get("database")
    if isinstance(anchor, FileAnchor) and store_location.get("kind") == "sqlite":
        return anchor.path.parent == Path(store_location.get("path", "")).parent
    return False

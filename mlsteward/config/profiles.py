"""Deployment profiles: where state lives, switched by configuration, never by code.

``MLSTEWARD_PROFILE`` picks one: ``local`` (the default: SQLite, DuckDB and files under
``MLSTEWARD_HOME``, one machine), ``production`` (shared engines: PostgreSQL for Prefect, MLflow,
the Feast registry and the audit trail; Redis for Feast's online store; an object store behind
the MLflow server), or the path of a profile file. Named profiles are
``config/profiles/<name>.yaml``; ``${VAR}`` and ``${VAR:-default}`` in them are read from the
environment when the profile is loaded, so one file serves every environment and secrets stay
out of it.

What wins: a variable naming one location (``MLFLOW_TRACKING_URI``, ``MLSTEWARD_AUDIT_URL``,
``PREFECT_SERVER_DATABASE_CONNECTION_URL``, ...) over the profile, the profile over the local
defaults. Every flow, the service and the CLI ask ``mlsteward.config.settings`` and
``features.store.repo_config()``, which ask here: the same code runs on either profile.

One PostgreSQL server holds one database per user (``<prefix>_prefect``, ``_mlflow``,
``_mlflow_auth``, ``_feast``, ``_audit``, ``_offline``, ``_anchor`` for the audit trail's signed
checkpoints, apart from the trail they vouch for): they have their own migrations and locks,
and can be backed up, moved or dropped one at a time. ``provision`` creates what is missing (and
``pg_trgm``, which Prefect's server needs); ``drop`` is for tests and teardown of throwaway
environments.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator

from mlsteward.config.base import StrictModel
from mlsteward.config.lineage import LineageConfig
from mlsteward.config.paths import config_dir
from mlsteward.errors import ConfigError

PROFILE_VAR = "MLSTEWARD_PROFILE"
DEFAULT_PROFILE = "local"
PURPOSES = ("prefect", "mlflow", "mlflow_auth", "feast", "audit", "offline", "anchor")
# A default holds no "$": a nested ${...} inside it is expanded first (innermost outwards).
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")
_VAR_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


class PostgresSettings(StrictModel):
    """One PostgreSQL server; each user gets its own database named ``<prefix>_<purpose>``."""

    url: str = Field(description="Server URL without a database: postgresql://user[:pw]@host:port")
    database_prefix: str = Field(default="mlsteward", description="Databases are <prefix>_<use>.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(f"expected postgresql://user@host:port, got {masked(v)!r}")
        if parts.path not in ("", "/"):
            raise ValueError(
                f"{masked(v)!r} names a database ({parts.path.lstrip('/')!r}); give the server "
                "only: each user gets its own database, <database_prefix>_<use>"
            )
        return v

    @field_validator("database_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _DB_NAME.match(v):
            raise ValueError(
                f"database_prefix {v!r}: lower-case letters, digits and _, starting with a letter"
            )
        return v

    def database(self, purpose: str) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown database use {purpose!r}; one of {PURPOSES}")
        return f"{self.database_prefix}_{purpose}"

    def database_url(self, purpose: str, driver: str | None = None) -> str:
        """``postgresql[+driver]://user@host:port/<prefix>_<purpose>`` (query string kept)."""
        return self._url_for(self.database(purpose), driver)

    def maintenance_url(self) -> str:
        """The server's ``postgres`` database, from which databases are created and dropped."""
        return self._url_for("postgres", None)

    def _url_for(self, database: str, driver: str | None) -> str:
        parts = urlsplit(self.url)
        scheme = "postgresql" + (f"+{driver}" if driver else "")
        query = f"?{parts.query}" if parts.query else ""
        return f"{scheme}://{parts.netloc}/{database}{query}"

    def connection(self) -> dict[str, object]:
        """Host, port, user, password and sslmode, for clients that take them apart (Feast's
        stores). Feast's PostgreSQL config defaults ``sslmode`` to ``require``, unlike libpq
        (``prefer``), which every other client of the same server uses: on a server without
        TLS, Feast alone could not connect. So: the URL's ``?sslmode=``, else libpq's default."""
        parts = urlsplit(self.url)
        sslmode = (parse_qs(parts.query).get("sslmode") or ["prefer"])[0]
        return {
            "host": parts.hostname,
            "port": parts.port or 5432,
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password or ""),
            "sslmode": sslmode,
        }


class FeastSettings(StrictModel):
    """Feast's project and where its point-in-time joins run."""

    project: str = Field(
        default="mlsteward", description="Feast project; Redis keys and registry rows carry it."
    )
    offline_store: Literal["duckdb", "postgres"] = Field(
        default="duckdb",
        description="duckdb: snapshot files on shared storage; postgres: snapshots as tables.",
    )

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_]{1,60}$", v):
            raise ValueError(f"Feast project {v!r}: letters, digits and _ only")
        return v


class MlflowSettings(StrictModel):
    """Where clients reach MLflow, and where its server keeps artifacts."""

    tracking_uri: str | None = Field(
        default=None,
        description="Where clients talk to MLflow (the server: http://host:port); None: the "
        "backend store directly.",
    )
    artifacts_destination: str | None = Field(
        default=None,
        description="Where the MLflow server keeps artifacts it proxies: a path, file://, "
        "s3://bucket/prefix (MLFLOW_S3_ENDPOINT_URL for MinIO); None: MLSTEWARD_HOME/artifacts.",
    )


class Profile(StrictModel):
    """A validated profile; the properties are what the rest of the code asks for."""

    name: str = Field(description="The profile's name; a file without one is named by its stem.")
    description: str = Field(default="", description="What the profile is for.")
    postgres: PostgresSettings | None = None
    redis_url: str | None = Field(default=None, description="redis://[:password@]host:port/db")
    feast: FeastSettings = FeastSettings()
    mlflow: MlflowSettings = MlflowSettings()
    lineage: LineageConfig = LineageConfig()

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        if v is not None and (
            urlsplit(v).scheme not in ("redis", "rediss") or not urlsplit(v).hostname
        ):
            raise ValueError(f"expected redis://host:port/db, got {masked(v)!r}")
        return v

    # -- what the rest of the code asks for -------------------------------------------------
    def require_postgres(self, what: str) -> PostgresSettings:
        if self.postgres is None:
            raise ConfigError(f"profile {self.name!r} has no postgres section, needed for {what}")
        return self.postgres

    @property
    def prefect_database_url(self) -> str | None:
        return self.postgres.database_url("prefect", "asyncpg") if self.postgres else None

    @property
    def mlflow_backend_store_uri(self) -> str | None:
        return self.postgres.database_url("mlflow", "psycopg") if self.postgres else None

    @property
    def mlflow_auth_database_uri(self) -> str | None:
        """The MLflow server's users and permissions (its basic-auth app), apart from the
        backend store: each has its own migrations."""
        return self.postgres.database_url("mlflow_auth", "psycopg") if self.postgres else None

    @property
    def audit_url(self) -> str | None:
        return self.postgres.database_url("audit") if self.postgres else None

    @property
    def audit_anchor_url(self) -> str | None:
        """Signed checkpoints of the audit trail, in a database other than the trail's own."""
        return self.postgres.database_url("anchor") if self.postgres else None

    @property
    def feast_registry(self) -> dict[str, object] | None:
        """Feast's SQL registry: every apply is a transaction, safe with concurrent writers
        (the file registry rewrites one file and the last writer wins)."""
        if self.postgres is None:
            return None
        return {
            "registry_type": "sql",
            "path": self.postgres.database_url("feast", "psycopg"),
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        }

    @property
    def feast_online_store(self) -> dict[str, object] | None:
        if self.redis_url is None:
            return None
        return {"type": "redis", "connection_string": redis_connection_string(self.redis_url)}

    @property
    def feast_offline_store(self) -> dict[str, object] | None:
        """None: the DuckDB store over snapshot files (the default)."""
        if self.feast.offline_store != "postgres":
            return None
        pg = self.require_postgres("the PostgreSQL offline store")
        return {
            "type": "postgres",
            **pg.connection(),
            "database": pg.database("offline"),
            "db_schema": "public",
        }


LOCAL = Profile(name="local", description="One machine: SQLite, DuckDB and files.")


def redis_connection_string(url: str) -> str:
    """Feast's Redis ``connection_string`` (``host:port,db=N,password=…,ssl=true``) from a URL."""
    parts = urlsplit(url)
    out = f"{parts.hostname}:{parts.port or 6379}"
    db = parts.path.strip("/")
    if db:
        if not db.isdigit():
            raise ConfigError(f"Redis URL {masked(url)!r}: the database must be a number")
        out += f",db={db}"
    if parts.password:
        out += f",password={unquote(parts.password)}"
    if parts.scheme == "rediss":
        out += ",ssl=true"
    return out


def masked(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _expand(text: str, source: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from the environment; an unset ``${VAR}`` is an error
    naming the variable, not a literal left in a URL."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"{source}: ${{{m.group(1)}}} is not set and has no default")

    while True:
        expanded = _VAR.sub(sub, text)
        if expanded == text:
            return expanded
        text = expanded


def profile_path(name: str) -> Path:
    """A name is looked up in ``config/profiles/``; anything with a slash or ``.yaml`` is a path."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name).expanduser().resolve()
    return config_dir() / "profiles" / f"{name}.yaml"


@dataclass(frozen=True)
class _Key:
    path: str
    mtime_ns: int
    env: tuple[tuple[str, str | None], ...]


@lru_cache(maxsize=16)
def _load(key: _Key) -> Profile:
    path = Path(key.path)
    raw = yaml.safe_load(_expand(path.read_text(), str(path))) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile is a mapping of settings")
    raw.setdefault("name", path.stem)
    try:
        return Profile.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in err.errors()
        )
        raise ConfigError(f"profile {path}: {problems}") from None


def load_profile(name: str) -> Profile:
    """Load (and cache, until the file or a variable it reads changes) a profile."""
    if name == DEFAULT_PROFILE and not profile_path(name).exists():
        return LOCAL
    path = profile_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in profile_path("x").parent.glob("*.yaml"))
        raise ConfigError(
            f"{PROFILE_VAR}={name!r}: no profile file {path}"
            + (f" (known profiles: {', '.join(known)})" if known else "")
        )
    text = path.read_text()
    env = tuple((n, os.environ.get(n)) for n in sorted(set(_VAR_NAME.findall(text))))
    return _load(_Key(str(path), path.stat().st_mtime_ns, env))


def active() -> Profile:
    """The profile ``MLSTEWARD_PROFILE`` names (``local`` when unset)."""
    return load_profile(os.environ.get(PROFILE_VAR, "").strip() or DEFAULT_PROFILE)

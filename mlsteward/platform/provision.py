"""Create (and, for throwaway environments, drop) what a profile's engines need.

``make up PROFILE=production`` runs ``provision`` before starting anything: each database the
profile names is created if missing, ``pg_trgm`` is enabled in Prefect's (its server's search
needs it and creating an extension needs more rights than running it), Redis is asked to answer,
and a local artifact destination is created. Nothing that exists is touched, so running it again
is harmless. ``drop`` removes the databases and the Feast project's Redis keys: tests and
short-lived environments clean up with it; nothing calls it on a shared environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlsteward.config.profiles import PURPOSES, Profile
from mlsteward.errors import MlstewardError


class ProvisionError(MlstewardError):
    """An engine of the profile is unreachable or refused; the message says which and why."""


def _connect(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        host = urlsplit(url).hostname
        raise ProvisionError(f"PostgreSQL at {host} refused or did not answer: {exc}") from exc


def provision(profile: Profile) -> dict[str, list[str]]:
    """Create what is missing; returns what was created and what already existed."""
    done: dict[str, list[str]] = {"created": [], "existing": []}
    if profile.postgres is not None:
        pg = profile.postgres
        with _connect(pg.maintenance_url()) as conn:
            for purpose in PURPOSES:
                name = pg.database(purpose)
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if exists:
                    done["existing"].append(f"database {name}")
                    continue
                conn.execute(f'CREATE DATABASE "{name}"')
                done["created"].append(f"database {name}")
        with _connect(pg.database_url("prefect")) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    if profile.redis_url is not None:
        _redis(profile.redis_url)  # answers, or a ProvisionError naming the host
        done["existing"].append("redis")
    dest = profile.mlflow.artifacts_destination or ""
    if dest and ("://" not in dest or dest.startswith("file://")):
        path = Path(dest.removeprefix("file://"))
        if not path.exists():
            path.mkdir(parents=True)
            done["created"].append(f"artifact store {path}")
    return done


def drop(profile: Profile) -> list[str]:
    """Drop the profile's databases and delete its Feast project's Redis keys."""
    dropped: list[str] = []
    if profile.postgres is not None:
        pg = profile.postgres
        with _connect(pg.maintenance_url()) as conn:
            for purpose in PURPOSES:
                name = pg.database(purpose)
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(f"database {name}")
    if profile.redis_url is not None:
        client = _redis(profile.redis_url)
        # Feast's Redis keys end with the project name (feast.infra.online_stores.helpers).
        keys = list(client.scan_iter(match=b"*" + profile.feast.project.encode()))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        dropped.append(f"{len(keys)} redis key(s) of Feast project {profile.feast.project}")
    return dropped


def _redis(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ProvisionError(f"Redis at {urlsplit(url).hostname} did not answer: {exc}") from exc
    return client

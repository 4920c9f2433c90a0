"""The production profile on this machine's real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psycopg
import redis

from flows.ingestion import ingestion_flow, materialize_flow
from mlsteward.config.models import get_model_config
from mlsteward.config.profiles import Profile
from mlsteward.features.online import online_features
from mlsteward.features.store import repo_config
from tests.support.stack import read_like_get_online_features

MODEL = "heart_disease"


def _online(ids: list[int]) -> pd.DataFrame:
    return online_features(get_model_config(MODEL), ids)


def _reader_matches_get_online_features(ids: list[int]) -> None:
    """The serving lookup reads what Feast's own ``get_online_features`` returns from whichever
    online store the profile configures."""
    cfg = get_model_config(MODEL)
    read_like_get_online_features(cfg.feature_service_name, cfg.source.entity, ids)


def test_redis_online_store_returns_what_sqlite_returns(
    small_cohort_path: Path, switch_to_production: Callable[[], Profile]
) -> None:
    cohort = pd.read_parquet(small_cohort_path)
    entity = get_model_config(MODEL).source.entity
    ids = [*sorted(set(cohort[entity].tolist()))[::7], 987_654_321]  # and one unknown id

    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    materialize_flow(model=MODEL)
    assert repo_config().online_store.type == "sqlite"
    local = _online(ids)
    _reader_matches_get_online_features(ids)

    profile = switch_to_production()
    config = repo_config()
    assert (config.online_store.type, config.registry.registry_type) == ("redis", "sql")
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    report = materialize_flow(model=MODEL)
    assert report.entities == cohort[entity].nunique()
    remote = _online(ids)
    _reader_matches_get_online_features(ids)

    pd.testing.assert_frame_equal(remote, local)
    assert remote.iloc[-1].drop(entity).isna().all()  # the unknown id: no values, no error
    # The values really came from Redis and the registry from PostgreSQL.
    keys = redis.Redis.from_url(profile.redis_url).scan_iter(
        match=b"*" + profile.feast.project.encode()
    )
    assert sum(1 for _ in keys) == cohort[entity].nunique()
    assert profile.postgres is not None
    with psycopg.connect(profile.postgres.database_url("feast")) as conn:
        views = conn.execute(
            "SELECT feature_view_name FROM feature_views WHERE project_id = %s",
            (profile.feast.project,),
        ).fetchall()
    assert views == [(f"{MODEL}__features",)]


def test_provision_creates_what_is_missing_once_and_drop_removes_it(
    production_profile: Profile,
) -> None:
    from mlsteward.config.profiles import PURPOSES
    from mlsteward.platform.provision import drop, provision

    profile = production_profile
    pg = profile.postgres
    assert pg is not None
    wanted = {pg.database(p) for p in PURPOSES}
    with psycopg.connect(pg.maintenance_url()) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert wanted <= have
    with psycopg.connect(pg.database_url("prefect")) as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()
    again = provision(profile)  # a second run changes nothing
    assert again["created"] == [] and len(again["existing"]) == len(PURPOSES) + 1
    client = redis.Redis.from_url(profile.redis_url)
    client.set(b"\x01entity" + profile.feast.project.encode(), b"v")
    other = profile.feast.project.encode() + b":not-a-feast-key"
    client.set(other, b"v")
    assert drop(profile)
    # drop removed it all; keys of other projects stay.
    with psycopg.connect(pg.maintenance_url()) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert not wanted & have
    assert not list(client.scan_iter(match=b"*" + profile.feast.project.encode()))
    assert client.get(other) == b"v"
    client.delete(other)
    assert drop(profile)  # dropping what is gone is harmless


def test_the_platforms_first_credentials_go_to_the_audit_database(
    production_profile: Profile, mlsteward_home: Path
) -> None:
    """``up`` on the production profile puts its principals and the admin token's hash in the
    audit trail's PostgreSQL database (one backup holds who did what and who they are); only
    the secret files stay under the home."""
    from mlsteward.identity import authenticate, clear_cache
    from mlsteward.platform.credentials import ensure_credentials

    clear_cache()
    try:
        creds = ensure_credentials(mlsteward_home)
        token = creds.admin_token.path.read_text().strip()
        assert authenticate(token).identity == "user:admin"
    finally:
        clear_cache()
    assert production_profile.postgres is not None
    with psycopg.connect(production_profile.postgres.database_url("audit")) as conn:
        principals = conn.execute(
            "SELECT identity, roles FROM mlsteward_principals ORDER BY identity"
        ).fetchall()
        tokens = conn.execute("SELECT identity FROM mlsteward_tokens").fetchall()
    assert principals == [
        ("service:ci", '["ci"]'),
        ("service:worker", '["viewer"]'),
        ("user:admin", '["admin"]'),
    ]
    assert sorted(tokens) == [("service:worker",), ("user:admin",)]
    assert not (mlsteward_home / "identity").exists()  # no SQLite store beside it
    assert sorted(p.name for p in (mlsteward_home / "secrets").iterdir()) == [
        "admin.token",
        "mlflow-flask.secret",
        "mlflow-governance.password",
        "webhook.secret",
        "worker.token",
    ]
    # the governance signing key the platform's processes sign with, private to its owner
    assert creds.signing_key is not None
    assert creds.signing_key.private.stat().st_mode & 0o777 == 0o600

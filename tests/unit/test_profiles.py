"""Profiles switch where state lives by configuration only; bad profiles fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsteward.config import profiles, settings
from mlsteward.config.profiles import PostgresSettings, Profile, redis_connection_string
from mlsteward.errors import ConfigError


@pytest.fixture
def production(mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    for var in ("MLSTEWARD_AUDIT_URL", "MLFLOW_BACKEND_STORE_URI", "MLSTEWARD_ARTIFACT_ROOT",
                "PREFECT_SERVER_DATABASE_CONNECTION_URL", "MLSTEWARD_MLFLOW_URL",
                "MLSTEWARD_MLFLOW_PORT"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLSTEWARD_PROFILE", "production")
    monkeypatch.setenv("MLSTEWARD_POSTGRES_URL", "postgresql://app:s%40cret@db.internal:6543")
    monkeypatch.setenv("MLSTEWARD_DB_PREFIX", "acme")
    return profiles.active()


def test_local_is_the_default_and_keeps_everything_under_home(mlsteward_home: Path) -> None:
    assert profiles.active().name == "local"
    assert settings.mlflow_tracking_uri() == f"sqlite:///{mlsteward_home / 'mlflow' / 'mlflow.db'}"
    assert settings.audit_url().startswith(f"sqlite:///{mlsteward_home}")
    assert settings.prefect_database_url() is None
    assert settings.mlflow_artifact_root().startswith("file://")


def test_production_puts_each_use_in_its_own_database(production: Profile) -> None:
    base = "app:s%40cret@db.internal:6543"
    assert settings.mlflow_backend_store_uri() == f"postgresql+psycopg://{base}/acme_mlflow"
    assert settings.prefect_database_url() == f"postgresql+asyncpg://{base}/acme_prefect"
    assert settings.audit_url() == f"postgresql://{base}/acme_audit"
    assert production.feast_registry is not None
    assert production.feast_registry["path"] == f"postgresql+psycopg://{base}/acme_feast"
    assert production.feast_online_store == {
        "type": "redis",
        "connection_string": "127.0.0.1:6379,db=0",
    }
    # Clients go through the MLflow server, which proxies artifacts.
    assert settings.mlflow_tracking_uri() == "http://127.0.0.1:5000"
    assert settings.mlflow_artifact_root() == "mlflow-artifacts:"
    # The password is decoded for drivers that take it apart, and masked when shown.
    assert production.require_postgres("x").connection()["password"] == "s@cret"
    assert "s%40cret" not in str(settings.locations())


def test_a_variable_naming_one_location_beats_the_profile(
    production: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", "sqlite:////tmp/elsewhere.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal")
    assert settings.audit_url() == "sqlite:////tmp/elsewhere.db"
    assert settings.mlflow_tracking_uri() == "http://mlflow.internal"
    assert settings.mlflow_backend_store_uri().endswith("/acme_mlflow")


def test_nested_defaults_follow_the_platform_port(
    production: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_MLFLOW_PORT", "5311")
    assert settings.mlflow_tracking_uri() == "http://127.0.0.1:5311"
    monkeypatch.setenv("MLSTEWARD_MLFLOW_URL", "https://mlflow.internal")
    assert settings.mlflow_tracking_uri() == "https://mlflow.internal"


def test_a_changed_variable_is_seen_without_a_restart(
    production: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_DB_PREFIX", "other")
    assert settings.audit_url().endswith("/other_audit")


def test_unknown_profile_names_the_file_and_the_known_ones(
    mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_PROFILE", "prod")
    with pytest.raises(ConfigError, match=r"prod\.yaml.*known profiles: local, production"):
        settings.audit_url()


def test_profile_file_errors_name_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("postgres:\n  url: postgresql://h:5432/mydb\nredis_url: http://x\n")
    monkeypatch.setenv("MLSTEWARD_PROFILE", str(bad))
    with pytest.raises(ConfigError) as err:
        profiles.active()
    assert "postgres.url" in str(err.value) and "names a database ('mydb')" in str(err.value)
    assert "redis_url" in str(err.value)

    bad.write_text("postgres:\n  url: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigError, match=r"\$\{NOT_SET_ANYWHERE\} is not set"):
        profiles.active()

    bad.write_text("postgres:\n  url: postgresql://h:5432\n  prefix: x\n")
    with pytest.raises(ConfigError, match=r"postgres\.prefix: Extra inputs are not permitted"):
        profiles.active()


def test_redis_urls_become_feast_connection_strings() -> None:
    assert redis_connection_string("redis://cache:6380/2") == "cache:6380,db=2"
    assert redis_connection_string("rediss://:pw@cache") == "cache:6379,password=pw,ssl=true"
    with pytest.raises(ConfigError, match="must be a number"):
        redis_connection_string("redis://cache/x")


def test_database_names_are_checked() -> None:
    with pytest.raises(ValueError, match="database_prefix 'Bad-Name'"):
        PostgresSettings(url="postgresql://h", database_prefix="Bad-Name")
    pg = PostgresSettings(url="postgresql://h:5432?sslmode=require", database_prefix="p")
    assert (
        pg.database_url("audit", "psycopg") == "postgresql+psycopg://h:5432/p_audit?sslmode=require"
    )
    with pytest.raises(ValueError, match="unknown database use"):
        pg.database("cache")

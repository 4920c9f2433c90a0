"""The PostgreSQL offline store on this machine's real PostgreSQL, against the DuckDB store.

Each test computes an answer with the local profile (DuckDB over the snapshot file), then the
same snapshot through a throwaway production profile with ``MLSTEWARD_OFFLINE_STORE=postgres``
(the snapshot loaded into ``<prefix>_offline``, Feast's PostgreSQL store doing the join), and
compares: values, dtypes and row order must be identical.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.profiles import Profile
from mlsteward.data import offline_tables
from mlsteward.data.ingestion import ingest
from mlsteward.features.materialize import materialize
from mlsteward.features.online import online_features
from mlsteward.features.repo import (
    apply_model,
    build_objects,
    registered_snapshot_path,
    source_table,
)
from mlsteward.features.retrieval import get_training_frame, scratch_table_name
from mlsteward.features.store import FeastAdapterError, get_store
from tests.integration.test_feast import (
    T0,
    day,
    feature_row,
    random_query,
    random_snapshot_rows,
    toy_config,
    write_snapshot,
)

MODEL = "heart_disease"
POSTGRES = {"MLSTEWARD_OFFLINE_STORE": "postgres"}


@pytest.fixture
def production_env() -> dict[str, str]:
    """Every production profile here reads the offline store from PostgreSQL."""
    return POSTGRES


def entity_rows(query: pd.DataFrame) -> pd.DataFrame:
    """test_feast's random Feast query as the entity frame a training flow passes in."""
    return pd.DataFrame(
        {
            "row_id": query["row_key"].to_numpy(),
            "pid": query["pid"].to_numpy(),
            "visit_time": query["event_timestamp"].to_numpy(),
            "outcome": (query["row_key"] % 2).to_numpy(),
        }
    ).astype({"visit_time": "datetime64[us, UTC]"})


def offline_conn(profile: Any) -> psycopg.Connection:
    return psycopg.connect(profile.postgres.database_url("offline"), autocommit=True)


def load_and_apply(cfg: ModelConfig, snapshot: Path) -> offline_tables.OfflineTable:
    table = offline_tables.load_snapshot(cfg, snapshot)
    apply_model(cfg, snapshot)
    return table


@pytest.mark.parametrize("ttl_days", [None, 2.0])
def test_postgres_training_frame_equals_the_duckdb_one(
    ttl_days: float | None, switch_to_production: Callable[[], Profile]
) -> None:
    rng = np.random.default_rng(11)
    cfg = toy_config(ttl_days=ttl_days)
    rows = random_snapshot_rows(rng, entities=6, per_entity=8)
    snapshot = write_snapshot(cfg, rows)
    # Shuffled row ids in shuffled order: the result must come back sorted by row id.
    entity_df = entity_rows(random_query(rng, rows, entities=6, n=200, ttl_days=ttl_days))
    entity_df = entity_df.sample(frac=1.0, random_state=3).reset_index(drop=True)

    apply_model(cfg, snapshot)
    duck = get_training_frame(cfg, entity_df)
    duck_empty = get_training_frame(cfg, entity_df.iloc[:0])

    profile = switch_to_production()
    table = load_and_apply(cfg, snapshot)
    store = get_store()
    assert store.config.offline_store.type == "postgres"
    source = store.get_data_source(cfg.data_source_name)
    assert type(source).__name__ == "PostgreSQLSource"
    assert source_table(source) == table.name
    assert source.created_timestamp_column == "ingested_at"
    assert source.tags == build_objects(cfg, snapshot, offline="file").source.tags
    assert registered_snapshot_path(cfg) == str(snapshot)

    pg = get_training_frame(cfg, entity_df)
    pg_empty = get_training_frame(cfg, entity_df.iloc[:0])

    with offline_conn(profile) as conn:  # the scratch entity table was dropped
        left = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'mlsteward_entities_%'"
        ).fetchone()
    assert left == (0,)

    pd.testing.assert_frame_equal(pg, duck)  # values, nulls, dtypes and row order
    pd.testing.assert_frame_equal(pg_empty, duck_empty)  # Feast's store alone fails on this
    assert pg["row_id"].is_monotonic_increasing and len(pg) == len(entity_df)
    # Entities with no feature row inside the TTL were kept, with nulls...
    no_value = pg["age"].isna()
    assert no_value.any() and (~no_value).any()
    assert pg.loc[pg["pid"].isin([0, 7]), "age"].isna().all()
    # ...and where the winning event time is tied, the later-ingested row won.
    latest: dict[tuple[int, pd.Timestamp], pd.Timestamp] = {}
    copies: dict[tuple[int, pd.Timestamp], int] = {}
    for r in rows:
        key = (r["pid"], r["visit_time"])
        copies[key] = copies.get(key, 0) + 1
        latest[key] = max(latest.get(key, r["ingested_at"]), r["ingested_at"])
    by_age = {r["age"]: r for r in rows}
    winners = [by_age[int(a)] for a in pg["age"].dropna()]
    tied = [w for w in winners if copies[(w["pid"], w["visit_time"])] > 1]
    assert tied and all(w["ingested_at"] == latest[(w["pid"], w["visit_time"])] for w in tied)


def test_materialize_from_postgres_gives_the_same_online_features(
    switch_to_production: Callable[[], Profile],
) -> None:
    cfg = toy_config(ttl_days=30)
    rows = [
        feature_row(1, at=1, age=40),
        feature_row(1, at=3, age=41),
        feature_row(2, at=1, age=60, ingested=100),
        feature_row(2, at=1, age=62, ingested=101),  # same time, later ingested: wins
        feature_row(3, at=5, age=71),  # after the window's end: not materialized
    ]
    snapshot = write_snapshot(cfg, rows)
    end: datetime = day(4).to_pydatetime()
    ids = [3, 1, 99, 2]

    apply_model(cfg, snapshot)
    local_report = materialize(cfg, end=end)
    local = online_features(cfg, ids)

    switch_to_production()
    table = load_and_apply(cfg, snapshot)
    source = get_store().get_data_source(cfg.data_source_name)
    assert source_table(source) == table.name  # Feast reads the table
    report = materialize(cfg, end=end)
    remote = online_features(cfg, ids)

    assert (report["rows_in_window"], report["entities"]) == (4, 2)
    assert {k: v for k, v in report.items()} == local_report
    pd.testing.assert_frame_equal(remote, local)
    assert remote["age"].tolist()[1] == 41 and remote["age"].tolist()[3] == 62
    assert remote.iloc[0].drop("pid").isna().all() and remote.iloc[2].drop("pid").isna().all()


def test_string_entity_keys_give_the_same_frames_offline_and_online(
    switch_to_production: Callable[[], Profile],
) -> None:
    cfg = toy_config()
    rows = [
        feature_row(1, at=1, age=40),
        feature_row(1, at=3, age=41),
        feature_row(2, at=1, age=60),
    ]
    snapshot = write_snapshot(cfg, rows, str_ids=True)
    entity_df = entity_rows(
        pd.DataFrame(
            {"row_key": [5, 1, 3], "pid": [1, 2, 9], "event_timestamp": [day(2), day(0), day(4)]}
        )
    )
    entity_df["pid"] = "p" + entity_df["pid"].astype(str)

    apply_model(cfg, snapshot)
    duck = get_training_frame(cfg, entity_df)
    materialize(cfg)
    local = online_features(cfg, ["p1", "p2", "p9"])

    switch_to_production()
    load_and_apply(cfg, snapshot)
    pg = get_training_frame(cfg, entity_df)
    materialize(cfg)
    remote = online_features(cfg, ["p1", "p2", "p9"])

    pd.testing.assert_frame_equal(pg, duck)
    # sorted by row id: p2 before its first row, unknown p9 (nulls, kept), p1 at day 2
    assert pg["row_id"].tolist() == [1, 3, 5] and pg["pid"].tolist() == ["p2", "p9", "p1"]
    assert pg["age"].isna().tolist() == [True, True, False] and pg["age"].iloc[2] == 40
    pd.testing.assert_frame_equal(remote, local)
    assert remote["age"].tolist()[:2] == [41, 60] and pd.isna(remote["age"].iloc[2])


def test_ingesting_the_same_data_reuses_its_verified_immutable_table(
    small_cohort_path: Path, switch_to_production: Callable[[], Profile]
) -> None:
    from tasks.features import entity_frame

    cfg = get_model_config(MODEL)
    local = ingest(cfg, small_cohort_path, publish=apply_model)
    assert local.offline_table is None  # the DuckDB path loads nothing
    duck = get_training_frame(cfg, entity_frame(cfg, local.snapshot))

    profile = switch_to_production()
    first = ingest(cfg, small_cohort_path, publish=apply_model)
    again = ingest(cfg, small_cohort_path, publish=apply_model)
    assert first.snapshot.digest == again.snapshot.digest == local.snapshot.digest
    assert first.offline_table is not None and again.offline_table is not None
    assert first.offline_table.created and not again.offline_table.created
    name = first.offline_table.name
    assert (
        name == again.offline_table.name == offline_tables.table_name(MODEL, local.snapshot.digest)
    )
    assert first.offline_table.rows == first.snapshot.rows

    with offline_conn(profile) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{name}"').fetchone() == (first.snapshot.rows,)
        # Column types are the snapshot's: int64 -> bigint, float64 -> double, times tz-aware.
        types = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position",
            (name,),
        ).fetchall()
        expected = {
            "int64": "bigint",
            "double": "double precision",
            "bool": "boolean",
            "string": "text",
            "large_string": "text",
            "timestamp[us, tz=UTC]": "timestamp with time zone",
            "timestamp[ns, tz=UTC]": "timestamp with time zone",
        }
        schema = pq.read_schema(first.snapshot.path)
        assert types == [(f.name, expected[str(f.type)]) for f in schema]
        assert {"bigint", "double precision", "text"} <= {t for _, t in types}
        # Immutable: nothing can change the data version under a registered model.
        with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
            conn.execute(f'DELETE FROM "{name}"')

    pg = get_training_frame(cfg, entity_frame(cfg, first.snapshot))
    pd.testing.assert_frame_equal(pg, duck)  # real data: categories, bools, ints, floats

    # A table of that name whose rows differ from the snapshot is refused, not reused.
    with offline_conn(profile) as conn:
        conn.execute(f'ALTER TABLE "{name}" DISABLE TRIGGER mlsteward_immutable')
        conn.execute(f'DELETE FROM "{name}" WHERE ctid = (SELECT min(ctid) FROM "{name}")')
    with pytest.raises(
        offline_tables.OfflineTableError, match=f"{name}.*holds {first.snapshot.rows - 1} rows"
    ):
        ingest(cfg, small_cohort_path, publish=apply_model)


def test_a_missing_table_is_an_error_naming_it(production_profile: Profile) -> None:
    cfg = toy_config()
    snapshot = write_snapshot(cfg, [feature_row(1, at=1, age=40)])
    entity_df = entity_rows(
        pd.DataFrame({"row_key": [0], "pid": [1], "event_timestamp": [T0 + pd.Timedelta(days=2)]})
    )
    table = load_and_apply(cfg, snapshot)
    assert get_training_frame(cfg, entity_df)["age"].tolist() == [40]
    with offline_conn(production_profile) as conn:
        conn.execute(f'DROP TABLE "{table.name}"')

    pattern = f"offline table '{table.name}' of the registered snapshot {snapshot.stem}"
    with pytest.raises(FeastAdapterError, match=pattern):
        get_training_frame(cfg, entity_df)
    with pytest.raises(FeastAdapterError, match=pattern):
        materialize(cfg)


@pytest.mark.parametrize("problem", ["tie", "null created"])
def test_rows_the_postgres_join_would_answer_differently_are_refused(
    problem: str, production_profile: Profile
) -> None:
    """Measured: Feast's PostgreSQL join returns tied rows twice and skips null created times."""
    cfg = toy_config()
    rows = [feature_row(1, at=1, age=40), feature_row(2, at=1, age=50)]
    if problem == "tie":  # same entity, event time and created time
        rows.append(feature_row(2, at=1, age=51))
        message = r"1 group\(s\) of rows share pid, visit_time, ingested_at"
    else:
        rows.append({**feature_row(1, at=2, age=41), "ingested_at": None})
        message = r"1 row\(s\) have no 'ingested_at'"
    snapshot = write_snapshot(cfg, rows)
    with pytest.raises(offline_tables.OfflineTableError, match=message):
        offline_tables.load_snapshot(cfg, snapshot)
    with offline_conn(production_profile) as conn:  # rolled back: nothing half-made is left
        exists = conn.execute(
            "SELECT to_regclass(%s)", (offline_tables.table_name(cfg.name, snapshot.stem),)
        ).fetchone()
    assert exists == (None,)


def test_table_names_fit_postgres_and_keep_long_models_apart() -> None:
    digest = "ab" * 32
    assert offline_tables.table_name("toy", digest) == f"toy__{digest[:32]}"
    long_a, long_b = "m" * 40 + "_a", "m" * 40 + "_b"
    names = {offline_tables.table_name(m, digest) for m in (long_a, long_b)}
    assert len(names) == 2 and all(len(n) <= offline_tables.MAX_IDENTIFIER for n in names)


def test_training_flow_runs_on_the_postgres_offline_store(
    small_cohort_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    production_profile: Profile,
) -> None:
    from mlflow.tracking import MlflowClient

    from flows.ingestion import ingestion_flow, materialize_flow
    from flows.reproduce import reproduce_flow
    from flows.training import training_flow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # one location beats the profile
    ingested = ingestion_flow(model=MODEL, source=str(small_cohort_path))
    assert ingested.offline_table["created"]
    report = materialize_flow(model=MODEL)
    assert report.entities > 0
    trained = training_flow(model=MODEL, max_evals=2)

    mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(MODEL, trained.version)
    assert mv.tags["lineage.data_digest"] == ingested.data_version
    assert int(mv.tags["lineage.training_rows"]) == ingested.rows
    source = get_store().get_data_source(get_model_config(MODEL).data_source_name)
    assert source_table(source) == ingested.offline_table["table"]

    # Rebuilding the version reads the snapshot file with DuckDB in a private store: the
    # same training set (digest) as the PostgreSQL join produced for training.
    rebuilt = reproduce_flow(model=MODEL, version=trained.version)
    step = next(s for s in rebuilt.steps if s.name == "training_set")
    assert step.status == "same", step


def test_gc_drops_the_tables_of_collected_snapshots_only(
    small_cohort_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    production_profile: Profile,
) -> None:
    """A snapshot table follows its file: dropped once the file is collected, never while
    something references the snapshot; tables mlsteward did not make are left alone."""
    import os
    import time

    from mlsteward.audit import Action, audit_store
    from mlsteward.platform.gc import collect_garbage

    cfg = get_model_config(MODEL)
    later = tmp_path / "later.parquet"
    pd.read_parquet(small_cohort_path).iloc[50:].to_parquet(later, index=False)
    # gc asks the registry what versions reference; no MLflow server runs in this test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    old = ingest(cfg, small_cohort_path, publish=apply_model)
    current = ingest(cfg, later, publish=apply_model)  # the current pointer moves to this one
    assert old.offline_table and current.offline_table
    old_file = Path(old.snapshot.path)
    past = time.time() - 7200
    os.utime(old_file, (past, past))
    # Entity tables of point-in-time joins: one a killed process left two hours ago, one
    # of a join running now, one named before names carried a time.
    from datetime import UTC, timedelta

    left_over = scratch_table_name(datetime.now(UTC) - timedelta(hours=2))
    running = scratch_table_name()
    undated = "mlsteward_entities_" + "ab" * 16
    with offline_conn(production_profile) as conn:
        conn.execute("CREATE TABLE someone_elses (x int)")
        conn.execute("COMMENT ON TABLE someone_elses IS 'mlsteward is mentioned here'")
        for name in (left_over, running, undated):
            conn.execute(f'CREATE TABLE "{name}" (x int)')

    def tables() -> set[str]:
        return {t["table"] for t in offline_tables.managed_tables()}

    assert tables() == {old.offline_table.name, current.offline_table.name}
    dry = collect_garbage(dry_run=True, min_age_seconds=3600)
    assert [t["table"] for t in dry.dropped_tables] == [old.offline_table.name]
    assert dry.dropped_scratch == [left_over]
    assert old_file.exists() and old.offline_table.name in tables()
    assert left_over in offline_tables.scratch_tables()

    result = collect_garbage(dry_run=False, min_age_seconds=3600)
    assert [r["digest"] for r in result.removed] == [old.snapshot.digest]
    assert result.dropped_tables == [
        {
            "table": old.offline_table.name,
            "model": MODEL,
            "digest": old.snapshot.digest,
            "rows": old.snapshot.rows,
        }
    ]
    assert not old_file.exists()
    assert tables() == {current.offline_table.name}
    assert result.dropped_scratch == [left_over]
    assert offline_tables.scratch_tables() == sorted([running, undated])
    with offline_conn(production_profile) as conn:
        assert conn.execute("SELECT to_regclass('someone_elses') IS NOT NULL").fetchone()[0]
    store = audit_store()
    try:
        record = store.query(action=Action.SNAPSHOTS_COLLECTED)[-1]
    finally:
        store.close()
    assert record.details["dropped_tables"][0]["table"] == old.offline_table.name
    assert "dropped 1 offline table(s), 1 left-over join table(s)" in record.reason
    assert record.details["dropped_scratch"] == [left_over]
    # Nothing left to do: a second pass drops nothing (the current snapshot stays).
    assert collect_garbage(dry_run=False, min_age_seconds=3600).dropped_tables == []

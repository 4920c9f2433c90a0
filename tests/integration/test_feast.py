"""Feast adapter against real Feast 0.67 (duckdb offline, SQLite online) in per-test temp dirs.

Each test writes a tiny snapshot in ingestion's format, applies it, and checks what a training
or serving caller would rely on: point-in-time values, no lost rows, re-pointing the source,
online values by name, TTL expiry, and that ``feature_repo/`` declares exactly what the adapter
applies (``feast plan`` in a subprocess shows no changes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mlsteward.config.models import ModelConfig
from mlsteward.config.settings import feast_dir, snapshots_dir
from mlsteward.data.state import SnapshotInfo, set_current_snapshot
from mlsteward.features import offline_store as feast_offline_store
from mlsteward.features.dtypes import canonical, canonical_from_arrow
from mlsteward.features.materialize import materialize
from mlsteward.features.online import OnlineReader, online_features
from mlsteward.features.repo import (
    apply_model,
    build_objects,
    registered_snapshot_path,
    registered_tags,
    snapshot_entity_dtype,
)
from mlsteward.features.retrieval import get_training_frame
from mlsteward.features.store import (
    ENTITY_KEY_SERIALIZATION_VERSION,
    OFFLINE_STORE_TYPE,
    PROJECT,
    FeastAdapterError,
    get_store,
    repo_config,
)
from tests.support.stack import read_like_get_online_features

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = pd.Timestamp("2024-01-01", tz="UTC")
FEATURES = ["age", "bp", "smoker", "sex"]


def day(d: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=d)


def toy_config(ttl_days: float | None = None, name: str = "toy") -> ModelConfig:
    """A tiny model: integer entity ``pid``, event time ``visit_time`` (not Feast's default)."""
    return ModelConfig.model_validate(
        {
            "name": name,
            "description": "Toy model for Feast tests",
            "owner": "tests",
            "task": "binary_classification",
            "source": {"path": "unused.parquet", "entity": "pid", "timestamp": "visit_time"},
            "label": "outcome",
            "features": [
                {"name": "age", "dtype": "int"},
                {"name": "bp", "dtype": "float"},
                {"name": "smoker", "dtype": "bool"},
                {"name": "sex", "dtype": "category", "categories": ["F", "M"]},
            ],
            "feast": {"ttl_days": ttl_days},
        }
    )


def feature_row(pid: int, at: float, age: int, ingested: float = 100.0) -> dict[str, Any]:
    """One snapshot row; the other features are derived from ``age`` so one number checks all."""
    return {
        "pid": pid,
        "visit_time": day(at),
        "ingested_at": day(ingested),
        "age": age,
        "bp": age + 0.5,
        "smoker": age % 2 == 0,
        "sex": "M" if age % 2 == 0 else "F",
        "outcome": age % 2,
    }


def write_snapshot(cfg: ModelConfig, rows: list[dict[str, Any]], str_ids: bool = False) -> Path:
    """Write rows the way ingestion does: canonical dtypes, µs UTC times, named by SHA-256."""
    df = pd.DataFrame(rows)
    for col in (cfg.timestamp_column, "ingested_at"):
        df[col] = pd.to_datetime(df[col], utc=True).astype("datetime64[us, UTC]")
    df = df.astype({"age": "int64", "bp": "float64", "smoker": "bool", "outcome": "int64"})
    df["pid"] = df["pid"].map(lambda p: f"p{p}") if str_ids else df["pid"].astype("int64")
    df["sex"] = df["sex"].astype(str)
    directory = snapshots_dir(cfg.name)
    tmp = directory / "snapshot.parquet.tmp"
    df.to_parquet(tmp, index=False)
    final = directory / f"{hashlib.sha256(tmp.read_bytes()).hexdigest()}.parquet"
    tmp.replace(final)
    return final


def entity_frame(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    """(row_id, pid, day) triples -> the entity frame a training flow passes in."""
    return pd.DataFrame(
        {
            "row_id": pd.Series([r[0] for r in rows], dtype="int64"),
            "pid": pd.Series([r[1] for r in rows], dtype="int64"),
            "visit_time": pd.Series([day(r[2]) for r in rows]).astype("datetime64[us, UTC]"),
            "outcome": pd.Series([r[0] % 2 for r in rows], dtype="int64"),
        }
    )


def ages(frame: pd.DataFrame) -> dict[int, Any]:
    """row_id -> age (None for a null), the one number that identifies a feature row."""
    return {
        int(r): (None if pd.isna(a) else int(a))
        for r, a in zip(frame["row_id"], frame["age"], strict=True)
    }


def test_point_in_time_values_never_come_from_the_future() -> None:
    cfg = toy_config()
    snapshot = write_snapshot(
        cfg,
        [
            feature_row(1, at=1, age=40),
            feature_row(1, at=3, age=41),
            # same entity and event time twice: the later ingested_at must win
            feature_row(2, at=1, age=60, ingested=100),
            feature_row(2, at=1, age=62, ingested=101),
        ],
    )
    apply_model(cfg, snapshot)

    frame = get_training_frame(
        cfg,
        entity_frame(
            [
                (10, 1, 0.5),  # before any feature row of pid 1 -> nulls, row kept
                (11, 1, 2),  # between t1 and t3 -> the t1 value, never the t3 one
                (12, 1, 3),  # exactly at t3 -> the t3 value (event time <= row time)
                (13, 1, 9),  # after t3 -> the t3 value
                (14, 2, 5),  # tie on event time -> the later ingested row
            ]
        ),
    )

    assert ages(frame) == {10: None, 11: 40, 12: 41, 13: 41, 14: 62}
    early = frame.set_index("row_id").loc[10]
    assert all(pd.isna(early[f]) for f in FEATURES), early
    at_t2 = frame.set_index("row_id").loc[11]
    assert (at_t2["bp"], at_t2["smoker"], at_t2["sex"]) == (40.5, True, "M")


def test_training_frame_keeps_every_row_in_row_id_order() -> None:
    cfg = toy_config()
    snapshot = write_snapshot(cfg, [feature_row(pid, at=1, age=30 + pid) for pid in range(1, 6)])
    apply_model(cfg, snapshot)

    # shuffled row ids; pids 7 and 8 have no feature rows; (pid 3, day 2) appears twice
    triples = [(907, 3, 2), (15, 7, 2), (402, 1, 2), (3, 8, 0), (88, 3, 2), (51, 5, 1)]
    triples += [(1000 + i, 1 + i % 5, 2 + i % 3) for i in range(40)]
    entity_df = entity_frame(triples).sample(frac=1.0, random_state=7)
    entity_df["other_time"] = day(50)  # a second datetime column must not confuse Feast
    entity_df = entity_df.reset_index(drop=True)

    frame = get_training_frame(cfg, entity_df)

    assert len(frame) == len(entity_df)
    assert list(frame.columns) == ["row_id", "pid", "visit_time", "outcome", *FEATURES]
    assert frame["row_id"].tolist() == sorted(r[0] for r in triples)
    expected = entity_df.set_index("row_id").loc[frame["row_id"]]
    assert frame["pid"].tolist() == expected["pid"].tolist()
    assert frame["outcome"].tolist() == expected["outcome"].tolist()
    assert (frame["visit_time"].to_numpy() == expected["visit_time"].to_numpy()).all()
    got = ages(frame)
    assert got[15] is None and got[3] is None  # no feature rows: nulls, not dropped
    assert got[907] == got[88] == 33
    assert all(got[1000 + i] == 31 + i % 5 for i in range(40))
    assert str(frame["age"].dtype) == "Int64" and str(frame["bp"].dtype) == "float64"


def test_training_frame_rejects_frames_it_cannot_keep_in_order() -> None:
    cfg = toy_config()
    apply_model(cfg, write_snapshot(cfg, [feature_row(1, at=1, age=40)]))
    dupes = entity_frame([(1, 1, 2), (1, 1, 3)])
    with pytest.raises(FeastAdapterError, match="row_id values must be unique"):
        get_training_frame(cfg, dupes)
    with pytest.raises(FeastAdapterError, match=r"lacks column\(s\) \['outcome'\]"):
        get_training_frame(cfg, dupes.drop(columns="outcome"))
    naive = entity_frame([(1, 1, 2)])
    naive["visit_time"] = naive["visit_time"].dt.tz_localize(None)
    with pytest.raises(FeastAdapterError, match="tz-aware"):
        get_training_frame(cfg, naive)


def test_scoring_frames_need_no_label_and_get_none_back() -> None:
    cfg = toy_config()
    snapshot = write_snapshot(cfg, [feature_row(1, at=1, age=40), feature_row(1, at=3, age=41)])
    apply_model(cfg, snapshot)
    unlabelled = entity_frame([(0, 1, 2), (1, 1, 5), (2, 9, 5)]).drop(columns="outcome")

    frame = get_training_frame(cfg, unlabelled, with_label=False)

    assert list(frame.columns) == ["row_id", "pid", "visit_time", *FEATURES]
    assert ages(frame) == {0: 40, 1: 41, 2: None}  # pid 9 is unknown: nulls, row kept
    labelled = get_training_frame(cfg, entity_frame([(0, 1, 2)]), with_label=False)
    assert "outcome" not in labelled.columns and ages(labelled) == {0: 40}
    # training still refuses an entity frame without the label
    with pytest.raises(FeastAdapterError, match=r"lacks column\(s\) \['outcome'\]"):
        get_training_frame(cfg, unlabelled)


def test_string_entity_keys_work_offline_and_online() -> None:
    cfg = toy_config()
    snapshot = write_snapshot(
        cfg, [feature_row(1, at=1, age=40), feature_row(2, at=1, age=60)], str_ids=True
    )
    assert snapshot_entity_dtype(cfg, snapshot) == "string"
    apply_model(cfg, snapshot)

    entity_df = entity_frame([(1, 1, 2), (2, 2, 0), (3, 3, 2)])
    entity_df["pid"] = "p" + entity_df["pid"].astype(str)
    assert ages(get_training_frame(cfg, entity_df)) == {1: 40, 2: None, 3: None}

    materialize(cfg)
    online = online_features(cfg, ["p2", "p9"])
    assert online["pid"].tolist() == ["p2", "p9"]
    assert online["age"].iloc[0] == 60 and pd.isna(online["age"].iloc[1])


def test_build_objects_names_missing_snapshot_columns() -> None:
    cfg = toy_config()
    rows = [{k: v for k, v in feature_row(1, at=1, age=40).items() if k != "bp"}]
    path = snapshots_dir(cfg.name) / "no_bp.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    with pytest.raises(FeastAdapterError, match=r"\[.bp.\]"):
        build_objects(cfg, path)


def test_snapshot_without_created_timestamp_needs_no_tie_break_column() -> None:
    cfg = toy_config()
    rows = [{k: v for k, v in feature_row(1, at=1, age=40).items() if k != "ingested_at"}]
    path = snapshots_dir(cfg.name) / "no_ingested_at.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    objs = build_objects(cfg, path)
    assert objs.source.created_timestamp_column == ""


def test_reapply_points_the_source_at_the_new_snapshot() -> None:
    cfg = toy_config()
    assert registered_snapshot_path(cfg) is None
    first = write_snapshot(cfg, [feature_row(1, at=1, age=40)])
    second = write_snapshot(cfg, [feature_row(1, at=1, age=50), feature_row(2, at=1, age=70)])
    entity_df = entity_frame([(1, 1, 2), (2, 2, 2)])

    apply_model(cfg, first)
    assert registered_snapshot_path(cfg) == str(first)
    assert ages(get_training_frame(cfg, entity_df)) == {1: 40, 2: None}

    apply_model(cfg, second)
    assert registered_snapshot_path(cfg) == str(second)
    assert ages(get_training_frame(cfg, entity_df)) == {1: 50, 2: 70}

    tags = registered_tags(cfg)
    assert tags["source"]["data_digest"] == second.stem
    for kind_tags in tags.values():
        assert kind_tags["model"] == "toy"
        assert kind_tags["owner"] == "tests"
        assert kind_tags["managed_by"] == "mlsteward"


def test_materialize_then_online_features_by_name() -> None:
    cfg = toy_config()
    snapshot = write_snapshot(
        cfg,
        [feature_row(1, at=1, age=40), feature_row(1, at=3, age=41), feature_row(2, at=1, age=60)],
    )
    apply_model(cfg, snapshot)

    partial = materialize(cfg, end=day(2).to_pydatetime())
    assert (partial["rows_in_window"], partial["entities"]) == (2, 2)
    assert online_features(cfg, [1])["age"].tolist() == [40]

    report = materialize(cfg)
    assert report["rows_in_window"] == 3 and report["entities"] == 2
    assert report["snapshot_path"] == str(snapshot)
    assert datetime.fromisoformat(report["end"]) <= datetime.now(UTC)

    online = online_features(cfg, [2, 99, 1])
    assert list(online.columns) == ["pid", *FEATURES]
    assert online["pid"].tolist() == [2, 99, 1]
    row = {int(r.pid): r for r in online.itertuples()}
    assert (row[1].age, row[1].bp, row[1].smoker, row[1].sex) == (41, 41.5, False, "F")
    assert (row[2].age, row[2].sex) == (60, "M")
    assert all(pd.isna(getattr(row[99], f)) for f in FEATURES)


def test_ttl_hides_values_older_than_the_limit() -> None:
    cfg = toy_config(ttl_days=2)
    snapshot = write_snapshot(
        cfg,
        [feature_row(1, at=1, age=40), feature_row(2, at=1, age=60), feature_row(2, at=5, age=61)],
    )
    apply_model(cfg, snapshot)

    frame = get_training_frame(
        cfg,
        entity_frame(
            [
                (1, 1, 2),  # 1 day old: inside the TTL
                (2, 1, 3),  # exactly 2 days old: still inside (expiry is inclusive)
                (3, 1, 4),  # 3 days old: expired -> null, row kept
                (4, 2, 4.5),  # pid 2's t1 value is 3.5 days old -> null
                (5, 2, 6),  # pid 2's t5 value is fresh
            ]
        ),
    )
    assert ages(frame) == {1: 40, 2: 40, 3: None, 4: None, 5: 61}

    no_ttl = toy_config()
    apply_model(no_ttl, snapshot)
    forever = get_training_frame(no_ttl, entity_frame([(3, 1, 400)]))
    assert ages(forever) == {3: 40}


def test_repo_config_matches_feature_store_yaml(mlsteward_home: Path) -> None:
    text = (REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    declared = yaml.safe_load(os.path.expandvars(text))  # what Feast 0.67 does with the file
    config = repo_config()

    assert declared["project"] == config.project == PROJECT
    assert (
        declared["offline_store"]["type"]
        == config.offline_store.type
        == OFFLINE_STORE_TYPE
        == feast_offline_store.STORE_TYPE
    )
    assert isinstance(config.offline_store, feast_offline_store.AsofDuckDBOfflineStoreConfig)
    assert declared["online_store"]["type"] == config.online_store.type == "sqlite"
    registry_path = Path(declared["registry"]["path"])
    assert registry_path == Path(config.registry.path) == feast_dir() / "registry.db"
    assert Path(declared["online_store"]["path"]) == Path(config.online_store.path)
    assert registry_path.is_absolute() and registry_path.is_relative_to(mlsteward_home.resolve())
    assert (
        declared["entity_key_serialization_version"]
        == config.entity_key_serialization_version
        == ENTITY_KEY_SERIALIZATION_VERSION
    )


def test_feature_repo_declares_what_the_adapter_applies(tmp_path: Path) -> None:
    """`feast plan` from a copy of feature_repo/ agrees with apply_model: no changes at all."""
    cfg = toy_config()
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    (models / "toy.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    pending = toy_config(name="pending")  # no snapshot yet: the repo must skip it
    (models / "pending.yaml").write_text(yaml.safe_dump(pending.model_dump(mode="json")))

    snapshot = write_snapshot(cfg, [feature_row(1, at=1, age=40)])
    set_current_snapshot(
        SnapshotInfo(
            model="toy",
            digest=snapshot.stem,
            path=str(snapshot),
            rows=1,
            min_timestamp=day(1).isoformat(),
            max_timestamp=day(1).isoformat(),
            ingested_at=day(100).isoformat(),
            source_path="test",
        )
    )
    apply_model(cfg, snapshot)

    repo = tmp_path / "feature_repo"
    shutil.copytree(
        REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__", "data")
    )
    env = {**os.environ, "MLSTEWARD_CONFIG_DIR": str(tmp_path / "config")}
    feast = Path(sys.executable).with_name("feast")
    done = subprocess.run(
        [str(feast), "plan"], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes to registry" in done.stdout, done.stdout
    assert "Deleted" not in done.stdout and "pending" not in done.stdout


# -- the ASOF offline store against Feast's stock duckdb store ---------------------------------
ROW_KEY = "row_key"


def random_snapshot_rows(rng: np.random.Generator, entities: int, per_entity: int) -> list[dict]:
    """Feature rows with unique ages (so the winning row is identifiable), ties and null values.

    Per entity: ``per_entity`` distinct event times on a half-day grid, then three of those times
    again with a different ``ingested_at`` (a tie the created timestamp must break: originals
    are ingested on whole days, repeats on half days, so no two rows tie on both). About one row
    in ten has a null ``bp``: a null value must not be confused with "no row".
    """
    rows, age = [], 20
    for pid in range(1, entities + 1):
        days = rng.choice(np.arange(0.0, 30.0, 0.5), size=per_entity, replace=False)
        for d in days:
            rows.append(feature_row(pid, at=float(d), age=age, ingested=100 + rng.integers(0, 5)))
            age += 1
        for d in rng.choice(days, size=3, replace=False):
            ingested = 100.5 + rng.integers(-3, 4)
            rows.append(feature_row(pid, at=float(d), age=age, ingested=float(ingested)))
            age += 1
    for row in rows:
        if rng.random() < 0.1:
            row["bp"] = None
    return rows


def random_query(
    rng: np.random.Generator, rows: list[dict], entities: int, n: int, ttl_days: float | None
) -> pd.DataFrame:
    """Entity rows Feast sees: unknown entities, exact feature times, TTL edges, duplicates."""
    pids = rng.integers(0, entities + 2, size=n)  # 0 and entities + 1 have no feature rows
    days = rng.uniform(-2.0, 35.0, size=n)
    exact = rng.random(n) < 0.3
    picks = rng.integers(0, len(rows), size=n)
    edge = (ttl_days or 0) * (rng.random(n) < 0.5)
    for i in np.flatnonzero(exact):  # exactly at a feature row's time, or exactly TTL later
        pids[i] = rows[picks[i]]["pid"]
        days[i] = (rows[picks[i]]["visit_time"] - T0) / pd.Timedelta(days=1) + edge[i]
    frame = pd.DataFrame(
        {
            ROW_KEY: rng.permutation(n).astype("int64"),
            "pid": pids.astype("int64"),
            "event_timestamp": pd.Series([day(d) for d in days]).astype("datetime64[us, UTC]"),
        }
    )
    dupes = frame.sample(n=n // 20, random_state=1).assign(**{ROW_KEY: np.arange(n, n + n // 20)})
    return pd.concat([frame, dupes], ignore_index=True)


def retrieve(store: Any, query: pd.DataFrame, features: Any, full: bool = False) -> Any:
    """One historical retrieval, sorted by row key; a copy goes in (Feast may modify it)."""
    job = store.get_historical_features(
        entity_df=query.copy(), features=features, full_feature_names=full
    )
    return job, job.to_df().sort_values(ROW_KEY).reset_index(drop=True)


def stores() -> tuple[Any, Any]:
    from feast import FeatureStore

    stock = FeatureStore(config=repo_config(offline_store_type="duckdb"))
    return get_store(), stock


def assert_same_as_stock(asof: tuple[Any, pd.DataFrame], stock: tuple[Any, pd.DataFrame]) -> None:
    """Both paths really ran, and every value (nulls included) agrees row by row."""
    (asof_job, got), (stock_job, expected) = asof, stock
    assert isinstance(asof_job, feast_offline_store.AsofRetrievalJob)
    assert type(stock_job).__name__ == "IbisRetrievalJob"
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert asof_job.to_arrow().schema.equals(stock_job.to_arrow().schema)


@pytest.mark.parametrize("ttl_days", [None, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_asof_store_matches_the_stock_store(ttl_days: float | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = toy_config(ttl_days=ttl_days)
    rows = random_snapshot_rows(rng, entities=8, per_entity=12)
    apply_model(cfg, write_snapshot(cfg, rows))
    query = random_query(rng, rows, entities=8, n=400, ttl_days=ttl_days)

    asof, stock = stores()
    service = asof.get_feature_service(cfg.feature_service_name)
    got = retrieve(asof, query, service)
    expected = retrieve(stock, query, stock.get_feature_service(cfg.feature_service_name))
    assert_same_as_stock(got, expected)

    frame = got[1]
    assert frame["age"].isna().any() and frame["age"].notna().any()  # both paths exercised
    assert (frame["age"].notna() & frame["bp"].isna()).any()  # a null value on a matched row
    # Independently of the stock store: where the winning row's time is tied, it is the
    # later-ingested one.
    latest: dict[tuple[int, pd.Timestamp], pd.Timestamp] = {}
    copies: Counter[tuple[int, pd.Timestamp]] = Counter()
    for r in rows:
        key = (r["pid"], r["visit_time"])
        copies[key] += 1
        latest[key] = max(latest.get(key, r["ingested_at"]), r["ingested_at"])
    by_age = {r["age"]: r for r in rows}
    winners = [by_age[int(a)] for a in frame["age"].dropna()]
    tie_winners = [w for w in winners if copies[(w["pid"], w["visit_time"])] > 1]
    assert tie_winners, "no entity row was answered from a tied event time"
    assert all(w["ingested_at"] == latest[(w["pid"], w["visit_time"])] for w in tie_winners)

    refs = [f"{cfg.feature_view_name}:{f}" for f in ("sex", "age")]  # not schema order
    full_got = retrieve(asof, query, refs, full=True)
    assert_same_as_stock(full_got, retrieve(stock, query, refs, full=True))
    assert list(full_got[1].columns)[-2:] == [
        f"{cfg.feature_view_name}__{f}" for f in ("sex", "age")
    ]


def test_asof_store_joins_several_views_and_aliases_like_the_stock_store() -> None:
    from feast import FeatureService, FeatureView, Field
    from feast.types import Int64, String

    rng = np.random.default_rng(5)
    cfg = toy_config(ttl_days=2)
    rows = random_snapshot_rows(rng, entities=6, per_entity=10)
    objs = build_objects(cfg, write_snapshot(cfg, rows))
    forever = FeatureView(
        name="toy__forever",
        entities=[objs.entity],
        schema=[
            Field(name=n, dtype=t) for n, t in (("pid", Int64), ("age", Int64), ("sex", String))
        ],
        source=objs.source,
        ttl=None,
    )
    service = FeatureService(
        name="toy_both", features=[objs.feature_view.with_name("recent")[["age", "bp"]], forever]
    )
    asof, stock = stores()
    asof.apply([*objs.as_list(), forever, service])
    query = random_query(rng, rows, entities=6, n=300, ttl_days=2)

    got = retrieve(asof, query, asof.get_feature_service("toy_both"), full=True)
    assert_same_as_stock(got, retrieve(stock, query, stock.get_feature_service("toy_both"), True))
    columns = list(got[1].columns)
    assert columns[-4:] == ["recent__age", "recent__bp", "toy__forever__age", "toy__forever__sex"]
    frame = got[1]
    assert (frame["recent__age"].isna() & frame["toy__forever__age"].notna()).any()  # TTL only


def test_asof_store_hands_what_it_does_not_cover_to_the_stock_join() -> None:
    cfg = toy_config()
    rows = [feature_row(1, at=1, age=40, ingested=1.5), feature_row(1, at=1, age=41, ingested=150)]
    apply_model(cfg, write_snapshot(cfg, rows))
    store = get_store()
    service = store.get_feature_service(cfg.feature_service_name)
    query = pd.DataFrame(
        {ROW_KEY: [1, 2], "pid": [1, 1], "event_timestamp": [day(2), day(200)]}
    ).astype({"event_timestamp": "datetime64[us, UTC]"})

    job = store.get_historical_features(entity_df=query.copy(), features=service)
    assert isinstance(job, feast_offline_store.AsofRetrievalJob)
    assert "ASOF LEFT JOIN" in job.to_sql()
    # A created-time cutoff is not one ASOF join: the stock implementation answers, correctly.
    cutoff = store.get_historical_features(
        entity_df=query.copy(), features=service, filter_by_created_timestamp=True
    )
    assert not isinstance(cutoff, feast_offline_store.AsofRetrievalJob)
    by_key = cutoff.to_df().set_index(ROW_KEY)["age"]
    assert (by_key[1], by_key[2]) == (40, 41)


def test_asof_store_takes_a_ttl_the_stock_store_cannot_type() -> None:
    """ttl_days 1.5 is 1 day + 12 h: ibis raises on such an interval; the ASOF store applies it."""
    cfg = toy_config(ttl_days=1.5)
    apply_model(cfg, write_snapshot(cfg, [feature_row(1, at=1, age=40)]))
    frame = get_training_frame(cfg, entity_frame([(1, 1, 2.5), (2, 1, 2.5 + 1e-6), (3, 1, 1)]))
    assert ages(frame) == {1: 40, 2: None, 3: 40}


def test_canonical_from_arrow_equals_the_pandas_route() -> None:
    cfg = toy_config()
    table = pa.table(
        {
            "age": pa.array([1, None, 3], type=pa.int64()),
            "bp": pa.array([1.5, None, 2.0], type=pa.float64()),
            "smoker": pa.array([True, None, False]),
            "sex": pa.array(["F", None, "M"]),
        }
    )
    other_types = table.cast(
        pa.schema(
            [
                ("age", pa.int32()),
                ("bp", pa.float32()),
                ("smoker", pa.bool_()),
                ("sex", pa.large_string()),
            ]
        )
    )
    order = np.array([2, 0, 1])
    dtypes = {f.name: f.dtype for f in cfg.features}
    for t in (table, other_types, table.slice(0, 0)):
        expected = canonical(t.to_pandas(), dtypes)
        got = canonical_from_arrow(t, dtypes)
        pd.testing.assert_frame_equal(got, expected)
        assert [str(d) for d in got.dtypes] == ["Int64", "float64", "boolean", "string"]
        if len(t):
            reordered = canonical_from_arrow(t, dtypes, order)
            expected = expected.take(order).reset_index(drop=True)
            pd.testing.assert_frame_equal(reordered, expected)


@pytest.mark.parametrize("str_ids", [False, True])
def test_online_reader_gives_what_get_online_features_gives(str_ids: bool) -> None:
    """The serving lookup skips ``get_online_features``' per-call work, not its values: same
    values and types for known, unknown, repeated and partly null ids."""
    cfg = toy_config()
    rows = [
        feature_row(1, at=1, age=40),
        feature_row(1, at=3, age=41),
        feature_row(2, at=1, age=60),
    ]
    rows.append({**feature_row(3, at=1, age=70), "bp": None})
    apply_model(cfg, write_snapshot(cfg, rows, str_ids=str_ids))
    materialize(cfg)

    ids: list[Any] = [2, 99, 1, 3, 2]
    if str_ids:
        ids = [f"p{i}" for i in ids]
    got = read_like_get_online_features(cfg.feature_service_name, "pid", ids)
    reader = OnlineReader(get_store(), cfg.feature_service_name, "pid")
    assert reader.names == FEATURES and reader.key_type.name == ("STRING" if str_ids else "INT64")
    assert got[1] is None  # unknown id
    assert got[0] == {"age": 60, "bp": 60.5, "smoker": True, "sex": "M"}
    assert got[2] is not None and got[2]["age"] == 41  # the latest row
    assert got[3] == {"age": 70, "bp": None, "smoker": True, "sex": "M"}
    assert reader.read([]) == []


def test_online_reader_refuses_what_it_cannot_read() -> None:
    cfg = toy_config()
    apply_model(cfg, write_snapshot(cfg, [feature_row(1, at=1, age=40)]))
    store = get_store()
    with pytest.raises(FeastAdapterError, match=r"keyed by \['pid'\], not \['x'\]"):
        OnlineReader(store, cfg.feature_service_name, "x")
    # a config that asks for a feature the applied service does not serve is named, not guessed
    wider = cfg.model_copy(
        update={"features": [*cfg.features, cfg.features[1].model_copy(update={"name": "hr"})]}
    )
    with pytest.raises(FeastAdapterError, match=r"lacks \['hr'\]"):
        OnlineReader.for_model(store, wider)

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlsteward import feast_adapter
from mlsteward.config import ModelConfig
from mlsteward.settings import feast_dir, snapshots_dir
from mlsteward.state import SnapshotInfo, set_current_snapshot

pytestmark = pytest.mark.integration

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
    feast_adapter.apply_model(cfg, snapshot)

    frame = feast_adapter.get_training_frame(
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
    feast_adapter.apply_model(cfg, snapshot)

    # shuffled row ids; pids 7 and 8 have no feature rows; (pid 3, day 2) appears twice
    triples = [(907, 3, 2), (15, 7, 2), (402, 1, 2), (3, 8, 0), (88, 3, 2), (51, 5, 1)]
    triples += [(1000 + i, 1 + i % 5, 2 + i % 3) for i in range(40)]
    entity_df = entity_frame(triples).sample(frac=1.0, random_state=7)
    entity_df["other_time"] = day(50)  # a second datetime column must not confuse Feast
    entity_df = entity_df.reset_index(drop=True)

    frame = feast_adapter.get_training_frame(cfg, entity_df)

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
    feast_adapter.apply_model(cfg, write_snapshot(cfg, [feature_row(1, at=1, age=40)]))
    dupes = entity_frame([(1, 1, 2), (1, 1, 3)])
    with pytest.raises(feast_adapter.FeastAdapterError, match="row_id values must be unique"):
        feast_adapter.get_training_frame(cfg, dupes)
    with pytest.raises(feast_adapter.FeastAdapterError, match=r"lacks column\(s\) \['outcome'\]"):
        feast_adapter.get_training_frame(cfg, dupes.drop(columns="outcome"))
    naive = entity_frame([(1, 1, 2)])
    naive["visit_time"] = naive["visit_time"].dt.tz_localize(None)
    with pytest.raises(feast_adapter.FeastAdapterError, match="tz-aware"):
        feast_adapter.get_training_frame(cfg, naive)


def test_string_entity_keys_work_offline_and_online() -> None:
    cfg = toy_config()
    snapshot = write_snapshot(
        cfg, [feature_row(1, at=1, age=40), feature_row(2, at=1, age=60)], str_ids=True
    )
    assert feast_adapter.snapshot_entity_dtype(cfg, snapshot) == "string"
    feast_adapter.apply_model(cfg, snapshot)

    entity_df = entity_frame([(1, 1, 2), (2, 2, 0), (3, 3, 2)])
    entity_df["pid"] = "p" + entity_df["pid"].astype(str)
    assert ages(feast_adapter.get_training_frame(cfg, entity_df)) == {1: 40, 2: None, 3: None}

    feast_adapter.materialize(cfg)
    online = feast_adapter.online_features(cfg, ["p2", "p9"])
    assert online["pid"].tolist() == ["p2", "p9"]
    assert online["age"].iloc[0] == 60 and pd.isna(online["age"].iloc[1])


def test_build_objects_names_missing_snapshot_columns() -> None:
    cfg = toy_config()
    rows = [{k: v for k, v in feature_row(1, at=1, age=40).items() if k != "bp"}]
    path = snapshots_dir(cfg.name) / "no_bp.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    with pytest.raises(feast_adapter.FeastAdapterError, match=r"\[.bp.\]"):
        feast_adapter.build_objects(cfg, path)


def test_snapshot_without_created_timestamp_needs_no_tie_break_column() -> None:
    cfg = toy_config()
    rows = [{k: v for k, v in feature_row(1, at=1, age=40).items() if k != "ingested_at"}]
    path = snapshots_dir(cfg.name) / "no_ingested_at.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    objs = feast_adapter.build_objects(cfg, path)
    assert objs.source.created_timestamp_column == ""


def test_reapply_points_the_source_at_the_new_snapshot() -> None:
    cfg = toy_config()
    assert feast_adapter.registered_snapshot_path(cfg) is None
    first = write_snapshot(cfg, [feature_row(1, at=1, age=40)])
    second = write_snapshot(cfg, [feature_row(1, at=1, age=50), feature_row(2, at=1, age=70)])
    entity_df = entity_frame([(1, 1, 2), (2, 2, 2)])

    feast_adapter.apply_model(cfg, first)
    assert feast_adapter.registered_snapshot_path(cfg) == str(first)
    assert ages(feast_adapter.get_training_frame(cfg, entity_df)) == {1: 40, 2: None}

    feast_adapter.apply_model(cfg, second)
    assert feast_adapter.registered_snapshot_path(cfg) == str(second)
    assert ages(feast_adapter.get_training_frame(cfg, entity_df)) == {1: 50, 2: 70}

    tags = feast_adapter.registered_tags(cfg)
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
    feast_adapter.apply_model(cfg, snapshot)

    partial = feast_adapter.materialize(cfg, end=day(2).to_pydatetime())
    assert (partial["rows_in_window"], partial["entities"]) == (2, 2)
    assert feast_adapter.online_features(cfg, [1])["age"].tolist() == [40]

    report = feast_adapter.materialize(cfg)
    assert report["rows_in_window"] == 3 and report["entities"] == 2
    assert report["snapshot_path"] == str(snapshot)
    assert datetime.fromisoformat(report["end"]) <= datetime.now(UTC)

    online = feast_adapter.online_features(cfg, [2, 99, 1])
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
    feast_adapter.apply_model(cfg, snapshot)

    frame = feast_adapter.get_training_frame(
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
    feast_adapter.apply_model(no_ttl, snapshot)
    forever = feast_adapter.get_training_frame(no_ttl, entity_frame([(3, 1, 400)]))
    assert ages(forever) == {3: 40}


def test_repo_config_matches_feature_store_yaml(mlsteward_home: Path) -> None:
    text = (REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    declared = yaml.safe_load(os.path.expandvars(text))  # what Feast 0.67 does with the file
    config = feast_adapter.repo_config()

    assert declared["project"] == config.project == feast_adapter.PROJECT
    assert declared["offline_store"]["type"] == config.offline_store.type == "duckdb"
    assert declared["online_store"]["type"] == config.online_store.type == "sqlite"
    registry_path = Path(declared["registry"]["path"])
    assert registry_path == Path(config.registry.path) == feast_dir() / "registry.db"
    assert Path(declared["online_store"]["path"]) == Path(config.online_store.path)
    assert registry_path.is_absolute() and registry_path.is_relative_to(mlsteward_home.resolve())
    assert (
        declared["entity_key_serialization_version"]
        == config.entity_key_serialization_version
        == feast_adapter.ENTITY_KEY_SERIALIZATION_VERSION
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
    feast_adapter.apply_model(cfg, snapshot)

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

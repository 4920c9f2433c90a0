"""Sensitive columns that are not model inputs, from the source file to the holdout.

Real Feast (DuckDB offline, SQLite online) under the test's own home, real XGBoost: the columns
pass the contract with their own rules, are carried by the snapshot and the feature view,
come back from the point-in-time join beside the features, and never reach the model, which
is proved by training again on the same rows with the columns shuffled: the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import yaml
from pandas.testing import assert_frame_equal

from mlsteward.config.models import ModelConfig
from mlsteward.config.profiles import Profile
from mlsteward.data.ingestion import IngestResult, ingest
from mlsteward.data.state import current_snapshot
from mlsteward.errors import ContractViolation
from mlsteward.features.materialize import materialize
from mlsteward.features.online import OnlineReader, online_features
from mlsteward.features.repo import apply_model
from mlsteward.features.retrieval import entity_frame, get_training_frame
from mlsteward.features.store import FeastAdapterError, get_store
from mlsteward.training.build import fit_evaluate, tune_prepared
from mlsteward.training.prepared import FittedModel, PreparedData, prepare, prepare_partitioned
from mlsteward.training.recipe import feature_service_definition
from mlsteward.training.spec import TrainingSpec
from tests.support.attribute_cohort import (
    ATTRIBUTES,
    FEATURES,
    REGIONS,
    Task,
    cohort,
    config,
    config_doc,
    permuted,
)

TASKS: list[Task] = ["classification", "regression"]


def ingest_frame(cfg: ModelConfig, frame: pd.DataFrame, path: Path) -> IngestResult:
    frame.to_csv(path, index=False)
    return ingest(cfg, path, publish=apply_model)


def training_set(cfg: ModelConfig) -> tuple[pd.DataFrame, PreparedData]:
    snap = current_snapshot(cfg.name)
    assert snap is not None
    frame = get_training_frame(cfg, entity_frame(cfg, snap))
    return frame, prepare(cfg, frame, snap)


def fit(cfg: ModelConfig, data: PreparedData) -> FittedModel:
    spec = TrainingSpec.resolve(cfg, seed=5, require_runner=False)
    return fit_evaluate(spec, data, tune_prepared(spec, data))


@pytest.mark.parametrize("task", TASKS)
def test_sensitive_columns_reach_the_training_set_and_never_the_model(
    task: Task, tmp_path: Path
) -> None:
    source = cohort(task)
    cfg = config(task, tmp_path / "members.csv")
    ingested = ingest_frame(cfg, source, tmp_path / "members.csv")

    # The contract checked and typed them, and recorded the inferred type.
    assert ingested.report.bad_rows == 0
    assert ingested.report.inferred_dtypes["region"] == "category"
    assert ingested.report.inferred_dtypes["age_years"] == "int"
    assert ingested.snapshot.feature_dtypes["age_years"] == "int"

    # The snapshot carries them, in the source's values.
    snapshot = pd.read_parquet(ingested.snapshot.path)
    assert set(ATTRIBUTES) <= set(snapshot.columns)
    by_key = source.set_index(["member_id", "seen_at"])
    snap_by_key = snapshot.set_index(["member_id", "seen_at"]).loc[by_key.index]
    assert (snap_by_key["region"].to_numpy() == by_key["region"].to_numpy()).all()
    assert snapshot["age_years"].dtype == "int64"
    label = cfg.label
    assert snapshot[label].dtype == ("float64" if task == "regression" else "int64")

    # The feature view holds them; the feature service (what serving reads) does not.
    store = get_store()
    view = store.get_feature_view(cfg.feature_view_name)
    assert [f.name for f in view.features] == [*FEATURES, *ATTRIBUTES]
    service = store.get_feature_service(cfg.feature_service_name)
    served = [f.name for p in service.feature_view_projections for f in p.features]
    assert served == FEATURES
    assert OnlineReader.for_model(store, cfg).names == FEATURES

    # The point-in-time training set has them beside the features, row for row.
    frame, data = training_set(cfg)
    assert list(frame.columns) == ["row_id", "member_id", "seen_at", label, *FEATURES, *ATTRIBUTES]
    assert len(frame) == len(source)
    joined = frame.set_index(["member_id", "seen_at"]).loc[by_key.index]
    assert (joined["region"].to_numpy() == by_key["region"].to_numpy()).all()
    assert (joined["age_years"].to_numpy() == by_key["age_years"].to_numpy()).all()
    assert str(frame["age_years"].dtype) == "Int64" and str(frame["region"].dtype) == "string"
    # A scoring frame (no label) is the features only, as before.
    scoring = get_training_frame(cfg, frame[["row_id", "member_id", "seen_at"]], with_label=False)
    assert list(scoring.columns) == ["row_id", "member_id", "seen_at", *FEATURES]

    # They are in the holdout the gates read (the test split), and nowhere in the model.
    assert set(ATTRIBUTES) <= set(data.split.test.columns)
    assert data.encoding.columns == FEATURES
    assert list(data.x_train.columns) == FEATURES
    fitted = fit(cfg, data)
    assert fitted.model.get_booster().feature_names == FEATURES

    # Shuffled sensitive columns, same everything else: another training set, the same model.
    ingest_frame(cfg, permuted(source), tmp_path / "permuted.csv")
    frame_p, data_p = training_set(cfg)
    assert (frame_p["region"] != frame["region"]).any()
    assert data_p.training_set_digest != data.training_set_digest
    fitted_p = fit(cfg, data_p)
    pd.testing.assert_series_equal(fitted_p.test_prediction, fitted.test_prediction)
    raw = fitted.model.get_booster().save_raw("ubj")
    assert fitted_p.model.get_booster().save_raw("ubj") == raw


def test_the_online_store_gives_sensitive_columns_only_when_asked(tmp_path: Path) -> None:
    source = cohort("classification", n=300)
    cfg = config("classification", tmp_path / "members.csv")
    ingest_frame(cfg, source, tmp_path / "members.csv")
    materialize(cfg)
    ids = [0, 5, 999_999]
    plain = online_features(cfg, ids)
    assert list(plain.columns) == ["member_id", *FEATURES]
    asked = online_features(cfg, ids, attributes=True)
    assert list(asked.columns) == ["member_id", *FEATURES, *ATTRIBUTES]
    pd.testing.assert_frame_equal(asked[plain.columns], plain)
    latest = source.sort_values("seen_at").groupby("member_id").last()
    assert asked["region"].tolist()[:2] == latest.loc[[0, 5], "region"].tolist()
    assert asked["age_years"].tolist()[:2] == latest.loc[[0, 5], "age_years"].tolist()
    assert asked.iloc[2][ATTRIBUTES].isna().all()  # an unknown id
    assert str(asked["age_years"].dtype) == "Int64"


def test_a_bad_sensitive_value_is_quarantined_naming_the_column_and_rule(tmp_path: Path) -> None:
    source = cohort("regression", n=400)
    source["region"] = source["region"].astype(object)
    source.loc[3, "region"] = "atlantis"
    source.loc[7, "age_years"] = 130
    source["age_years"] = source["age_years"].astype(object)
    source.loc[9, "age_years"] = "old"
    cfg = config("regression", tmp_path / "members.csv")
    ingested = ingest_frame(cfg, source, tmp_path / "members.csv")

    assert dict(ingested.report.violations) == {
        ("allowed_category", "region"): 1,
        ("range", "age_years"): 1,
        ("dtype", "age_years"): 1,
    }
    assert ingested.quarantine_path is not None
    quarantined = pd.read_csv(ingested.quarantine_path)
    assert quarantined["_row_number"].tolist() == [4, 8, 10]
    assert quarantined["_violations"].tolist() == [
        "allowed_category:region",
        "range:age_years",
        "dtype:age_years",
    ]
    assert ingested.snapshot.rows == len(source) - 3


def test_a_source_without_a_sensitive_column_is_refused_and_scoring_input_is_not(
    tmp_path: Path,
) -> None:
    cfg = config("classification", tmp_path / "members.csv")
    source = cohort("classification", n=200).drop(columns="region")
    source.to_csv(tmp_path / "members.csv", index=False)
    with pytest.raises(ContractViolation, match=r"missing required column\(s\) \['region'\]"):
        ingest(cfg, tmp_path / "members.csv", publish=apply_model)
    assert current_snapshot(cfg.name) is None

    from mlsteward.data.contract import check_contract

    scoring = check_contract(source.drop(columns=cfg.label), cfg, require_label=False)
    assert scoring.report.bad_rows == 0 and "region" not in scoring.good.columns
    assert scoring.good["age_years"].dtype == "int64"  # checked because it is there


def test_a_snapshot_from_before_a_sensitive_column_was_added_names_the_fix(
    tmp_path: Path,
) -> None:
    doc = config_doc("classification", tmp_path / "members.csv")
    older = ModelConfig.model_validate({**doc, "sensitive_attributes": []})
    ingested = ingest_frame(older, cohort("classification", n=200), tmp_path / "members.csv")
    with pytest.raises(FeastAdapterError, match=r"lacks column\(s\) \['region', 'age_years'\]"):
        apply_model(
            config("classification", tmp_path / "members.csv"), Path(ingested.snapshot.path)
        )


def test_the_recipe_lists_the_sensitive_columns_and_leaves_other_definitions_alone(
    tmp_path: Path,
) -> None:
    cfg = config("regression", tmp_path / "members.csv")
    dtypes = {"plan": "category", "age_years": "int"}
    definition = feature_service_definition(cfg, dtypes, "int64")
    assert definition["features"] == [["income", "float"], ["visits", "int"], ["plan", "category"]]
    assert definition["attributes"] == [["region", "category"], ["age_years", "int"]]
    without = ModelConfig.model_validate(
        {**config_doc("regression", tmp_path / "members.csv"), "sensitive_attributes": ["visits"]}
    )
    assert "attributes" not in feature_service_definition(without, dtypes, "int64")


@pytest.mark.parametrize("task", TASKS)
def test_training_flow_keeps_them_in_the_holdout_for_the_fairness_gate(
    task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingestion import ingestion_flow
    from flows.reproduce import reproduce_flow
    from flows.training import training_flow
    from mlsteward.governance.registry import get_version, load_verified
    from mlsteward.governance.validation import load_holdout, score_holdout

    csv = tmp_path / "members.csv"
    cohort(task).to_csv(csv, index=False)
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    (models / "members.yaml").write_text(yaml.safe_dump(config_doc(task, csv)))
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))

    ingestion_flow(model="members")
    trained = training_flow(model="members", max_evals=2)
    info = get_version("members", trained.version)
    holdout = load_holdout(info)
    assert set(ATTRIBUTES) <= set(holdout.columns)
    assert holdout["region"].notna().all()
    assert ("prediction_proba" in holdout.columns) is (task == "classification")
    verified = load_verified(info)
    assert verified.model.get_booster().feature_names == FEATURES
    # The fairness gate grouped the holdout by both: regions as they are, ages in buckets.
    fairness = score_holdout(config(task, csv), verified, holdout).fairness
    assert set(fairness) == set(ATTRIBUTES)
    assert {g["group"] for g in fairness["region"].groups} == set(REGIONS)
    assert {g["group"] for g in fairness["age_years"].groups} == {"<40", "40-60", ">=60"}

    # A rebuild joins them again from the recorded snapshot: same definition, same training
    # set, same model bytes.
    rebuilt = reproduce_flow(model="members", version=trained.version)
    steps = {step.name: step for step in rebuilt.steps}
    assert steps["feature_service"].status == "same"
    assert steps["feature_service"].recorded["attributes"] == [
        ["region", "category"],
        ["age_years", "int"],
    ]
    assert rebuilt.result == "identical", rebuilt


def test_a_partitioned_training_set_carries_them_and_dask_trains_without_them(
    tmp_path: Path,
) -> None:
    doc = config_doc("classification", tmp_path / "members.csv")
    doc["distributed"] = {"above_rows": 500, "chunk_rows": 400, "workers": 2}
    cfg = ModelConfig.model_validate(doc)
    ingest_frame(cfg, cohort("classification"), tmp_path / "members.csv")
    snap = current_snapshot(cfg.name)
    assert snap is not None
    entities = entity_frame(cfg, snap)
    store = get_store()
    whole = prepare(cfg, get_training_frame(cfg, entities, store=store), snap)
    parted = prepare_partitioned(
        cfg, entities, lambda rows: get_training_frame(cfg, rows, store=store), snap, tmp_path
    )
    assert parted.train_partitions is not None and len(parted.train_partitions.paths) == 3
    assert_frame_equal(parted.split.validation, whole.split.validation)
    assert_frame_equal(parted.split.test, whole.split.test)
    assert set(ATTRIBUTES) <= set(parted.split.test.columns)
    staged = pd.concat(pd.read_parquet(p) for p in parted.train_partitions.paths)
    assert set(ATTRIBUTES) <= set(staged.columns)
    assert parted.encoding == whole.encoding and parted.encoding.columns == FEATURES

    fitted = fit(cfg, parted)
    assert fitted.model.get_booster().feature_names == FEATURES


@pytest.fixture
def production_env() -> dict[str, str]:
    """The production profile here reads the offline store from PostgreSQL."""
    return {"MLSTEWARD_OFFLINE_STORE": "postgres"}


def test_the_postgres_offline_store_carries_them_as_the_duckdb_one_does(
    tmp_path: Path, switch_to_production: Callable[[], Profile]
) -> None:
    source = cohort("regression", n=600)
    cfg = config("regression", tmp_path / "members.csv")
    ingest_frame(cfg, source, tmp_path / "members.csv")
    duck, _ = training_set(cfg)
    snap = current_snapshot(cfg.name)
    assert snap is not None
    duck_empty = get_training_frame(cfg, entity_frame(cfg, snap).iloc[:0])

    profile = switch_to_production()
    ingested = ingest_frame(cfg, source, tmp_path / "members.csv")
    assert ingested.offline_table is not None and ingested.offline_table.created
    with psycopg.connect(profile.postgres.database_url("offline")) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s",
                (ingested.offline_table.name,),
            ).fetchall()
        )
    assert (types["region"], types["age_years"], types[cfg.label]) == (
        "text",
        "bigint",
        "double precision",
    )
    pg, _ = training_set(cfg)
    assert_frame_equal(pg, duck)  # values, dtypes and row order, the sensitive columns too
    assert set(ATTRIBUTES) <= set(pg.columns)
    assert_frame_equal(get_training_frame(cfg, entity_frame(cfg, snap).iloc[:0]), duck_empty)

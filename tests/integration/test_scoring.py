"""Batch scoring and late labels on the real stack: verified champion, Feast, prediction log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.ingestion import ingestion_flow, materialize_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from mlsteward import prediction_log
from mlsteward.audit import Action, audit_store
from mlsteward.cli import app
from mlsteward.synthetic import generate_batch

MODEL = "heart_disease"
runner = CliRunner()


def cli(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def champion(small_cohort_path: Path) -> str:
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    out = training_flow(model=MODEL, max_evals=1)
    assert out["governance"]["decision"] == "promoted", out["governance"]
    return out["version"]


@pytest.fixture
def batch(tmp_path: Path) -> pd.DataFrame:
    return generate_batch(n_rows=400, seed=11)


def test_score_file_then_late_labels(champion: str, batch: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "batch.parquet"
    batch.drop(columns=["heart_disease"]).to_parquet(source, index=False)
    code, out = cli("score", MODEL, "--source", str(source))
    assert code == 0, out
    assert out["rows"] == 400 and out["version"] == champion
    scored = pd.read_parquet(out["scored_path"])
    assert {"prediction_proba", "prediction", "shap_1_feature", "shap_3_value"} <= set(scored)
    assert scored["prediction_proba"].between(0, 1).all()
    logged = prediction_log.read(MODEL)
    assert len(logged) == 400 and set(logged["model_version"].astype(str)) == {champion}
    store = audit_store()
    try:
        assert store.last(model=MODEL, action=Action.BATCH_SCORED).details["rows"] == 400
    finally:
        store.close()

    outcomes = tmp_path / "outcomes.csv"
    batch[["patient_id", "event_timestamp", "heart_disease"]].to_csv(outcomes, index=False)
    code, out = cli("labels", MODEL, str(outcomes))
    assert code == 0, out
    assert out["matched"] == 400 and out["unmatched"] == 0
    joined = prediction_log.read_with_labels(MODEL)
    assert joined["label"].notna().sum() == 400
    truth = batch.assign(event_timestamp=batch["event_timestamp"].astype("datetime64[us, UTC]"))
    joined = joined.assign(event_timestamp=joined["event_timestamp"].astype("datetime64[us, UTC]"))
    merged = joined.merge(truth, on=["patient_id", "event_timestamp"], suffixes=("", "_true"))
    assert len(merged) == 400
    assert (merged["label"] == merged["heart_disease"]).all()


def test_bad_input_is_refused_and_logs_nothing(
    champion: str, batch: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "no_bmi.csv"
    batch.drop(columns=["bmi"]).to_csv(source, index=False)
    code, out = cli("score", MODEL, "--source", str(source))
    assert code == 1 and "bmi" in out["error"]
    assert prediction_log.read(MODEL).empty

    outcomes = tmp_path / "bad_labels.csv"
    bad = batch[["patient_id", "event_timestamp", "heart_disease"]].head(5).copy()
    bad.loc[2, "heart_disease"] = 7
    bad.to_csv(outcomes, index=False)
    code, out = cli("labels", MODEL, str(outcomes))
    assert code == 1 and "row(s) 3" in out["error"] and "nothing was attached" in out["error"]


def test_online_scoring_covers_every_entity(champion: str, small_cohort_path: Path) -> None:
    materialize_flow(model=MODEL)
    out = scoring_flow(model=MODEL)
    entities = pd.read_parquet(small_cohort_path)["patient_id"].nunique()
    assert out["rows"] == entities and out["source"] == "online store"
    assert len(prediction_log.read(MODEL)) == entities


def test_scoring_without_a_champion_says_so(small_cohort_path: Path) -> None:
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    code, out = cli("score", MODEL)
    assert code == 1 and "no champion yet" in out["error"]

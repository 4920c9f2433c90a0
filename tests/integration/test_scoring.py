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
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.data.state import current_snapshot
from mlsteward.data.synthetic import generate_batch
from mlsteward.monitoring import prediction_log

MODEL = "heart_disease"
runner = CliRunner()


def cli(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def champion(small_cohort_path: Path) -> str:
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    out = training_flow(model=MODEL, max_evals=1)
    assert out.governance.decision == "promoted", out.governance
    return out.version


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
    assert out.rows == entities and out.source == "online store"
    assert len(prediction_log.read(MODEL)) == entities


def test_scoring_without_a_champion_says_so(small_cohort_path: Path) -> None:
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    code, out = cli("score", MODEL)
    assert code == 1 and "no champion yet" in out["error"]


# -- offline store: an entity list or a time frame --------------------------------------------
def snapshot_rows() -> pd.DataFrame:
    """The rows of the current snapshot (entity, event time, features, label)."""
    snap = current_snapshot(MODEL)
    assert snap is not None
    return pd.read_parquet(snap.path)


def batch_scored_records() -> int:
    store = audit_store()
    try:
        return len(store.query(model=MODEL, action=Action.BATCH_SCORED))
    finally:
        store.close()


def keys(frame: pd.DataFrame) -> set[tuple[int, pd.Timestamp]]:
    """(entity, event time) pairs, times normalised to µs UTC."""
    times = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return set(zip(frame["patient_id"].astype("int64"), times, strict=True))


def test_entity_file_scores_like_the_same_rows_from_a_file(champion: str, tmp_path: Path) -> None:
    rows = snapshot_rows().iloc[::131].head(30)
    entities = tmp_path / "entities.csv"
    rows[["patient_id", "event_timestamp"]].to_csv(entities, index=False)
    source = tmp_path / "same_rows.parquet"
    rows.drop(columns="heart_disease").to_parquet(source, index=False)

    code, offline = cli("score", MODEL, "--entities", str(entities))
    assert code == 0, offline
    from_file = scoring_flow(model=MODEL, source=str(source))

    assert offline["rows"] == from_file.rows == 30
    assert offline["source"] == f"offline-store:{MODEL} entities={entities.resolve()}"
    a = pd.read_parquet(offline["scored_path"])
    b = pd.read_parquet(from_file.scored_path)
    assert keys(a) == keys(b) == keys(rows)
    merged = a.merge(b, on=["patient_id", "event_timestamp"], suffixes=("_offline", "_file"))
    assert len(merged) == 30
    gap = (merged["prediction_proba_offline"] - merged["prediction_proba_file"]).abs().max()
    assert gap <= 1e-9, gap
    assert (merged["shap_1_feature_offline"] == merged["shap_1_feature_file"]).all()
    assert len(prediction_log.read(MODEL)) == 60
    store = audit_store()
    try:
        record = store.query(model=MODEL, action=Action.BATCH_SCORED)[0]
    finally:
        store.close()
    assert record.details["source"] == offline["source"] and record.details["rows"] == 30


def test_time_frame_scores_exactly_the_snapshot_rows_inside_it(champion: str) -> None:
    rows = snapshot_rows()
    times = rows["event_timestamp"]
    start, end = times.iloc[1000], times.iloc[1040]
    inside = rows[(times >= start) & (times < end)]
    assert 30 <= len(inside) <= 41

    # naive start (taken as UTC), aware end
    naive_start = start.tz_convert(None).isoformat()
    code, out = cli("score", MODEL, "--start", naive_start, "--end", end.isoformat())
    assert code == 0, out
    assert out["rows"] == len(inside)
    assert out["source"] == f"offline-store:{MODEL} {start.isoformat()}..{end.isoformat()}"
    assert keys(pd.read_parquet(out["scored_path"])) == keys(inside)
    logged = prediction_log.read(MODEL)
    assert len(logged) == len(inside) and keys(logged) == keys(inside)

    # start alone: everything from start on
    tail_start = times.iloc[-12]
    out = scoring_flow(model=MODEL, start=tail_start.isoformat())
    assert keys(pd.read_parquet(out.scored_path)) == keys(rows[times >= tail_start])

    snap = current_snapshot(MODEL)
    assert snap is not None
    code, out = cli("score", MODEL, "--start", "2031-01-01", "--end", "2031-02-01")
    assert code == 1
    assert "2031-01-01T00:00:00+00:00..2031-02-01T00:00:00+00:00" in out["error"]
    assert snap.min_timestamp in out["error"] and snap.max_timestamp in out["error"]
    code, out = cli("score", MODEL, "--start", "2025-02-01", "--end", "2025-01-01")
    assert code == 1 and "start must be before end" in out["error"]
    code, out = cli("score", MODEL, "--end", "last tuesday")
    assert code == 1 and "end 'last tuesday' is not an ISO-8601 timestamp" in out["error"]
    assert batch_scored_records() == 2


def test_entity_file_without_event_times_is_refused_and_logs_nothing(
    champion: str, tmp_path: Path
) -> None:
    rows = snapshot_rows().head(5)
    no_time = tmp_path / "ids_only.csv"
    rows[["patient_id"]].to_csv(no_time, index=False)
    code, out = cli("score", MODEL, "--entities", str(no_time))
    assert code == 1
    assert "missing column(s) ['event_timestamp']" in out["error"] and str(no_time) in out["error"]

    bad_times = tmp_path / "bad_times.csv"
    frame = rows[["patient_id", "event_timestamp"]].astype(str)
    frame.iloc[1, 1] = "not a time"
    frame.iloc[3, 1] = ""
    frame.to_csv(bad_times, index=False)
    code, out = cli("score", MODEL, "--entities", str(bad_times))
    assert code == 1
    assert "unparsable 'event_timestamp' in row(s) 2, 4" in out["error"]
    assert "nothing was scored" in out["error"]

    assert prediction_log.read(MODEL).empty
    assert batch_scored_records() == 0


def test_entities_unknown_to_the_store_break_the_contract(champion: str, tmp_path: Path) -> None:
    from mlsteward.config.models import get_model_config
    from mlsteward.config.settings import quarantine_dir

    cfg = get_model_config(MODEL)
    rows = snapshot_rows()
    known = rows.iloc[::80].head(48)[["patient_id", "event_timestamp"]]
    # a patient before their first visit (no feature row yet) and a patient never seen
    first = rows.groupby("patient_id")["event_timestamp"].min()
    pid = int(first.index[first > rows["event_timestamp"].min()][0])
    unknown = pd.DataFrame(
        {
            "patient_id": [pid, 99_999_999],
            "event_timestamp": [first[pid] - pd.Timedelta(days=1), rows["event_timestamp"].iloc[0]],
        }
    )
    listed = pd.concat([known.iloc[:4], unknown.iloc[:1], known.iloc[4:28], unknown.iloc[1:]])
    listed = pd.concat([listed, known.iloc[28:]]).reset_index(drop=True)
    entities = tmp_path / "with_unknown.csv"
    listed.to_csv(entities, index=False)
    before = set(quarantine_dir(MODEL).glob("*.csv"))

    code, out = cli("score", MODEL, "--entities", str(entities))

    # 2 of 50 rows (4%) are under the 5% limit: they are quarantined, the rest is scored
    assert code == 0, out
    assert out["rows"] == 48 and keys(pd.read_parquet(out["scored_path"])) == keys(known)
    new = set(quarantine_dir(MODEL).glob("*.csv")) - before
    assert [p.name.endswith("_with_unknown.csv") for p in new] == [True]
    quarantined = pd.read_csv(new.pop())
    assert quarantined["_row_number"].tolist() == [5, 30]
    assert quarantined["patient_id"].tolist() == [pid, 99_999_999]
    every_feature = ";".join(f"not_null:{f}" for f in cfg.feature_names)
    assert quarantined["_violations"].tolist() == [every_feature] * 2

    # only unknown rows: over the limit, the contract fails naming every feature column
    only_unknown = tmp_path / "only_unknown.csv"
    unknown.to_csv(only_unknown, index=False)
    code, out = cli("score", MODEL, "--entities", str(only_unknown))
    assert code == 1 and "data contract failed" in out["error"]
    for name in cfg.feature_names:
        assert f"rule not_null on column {name!r}: 2 row(s)" in out["error"]
    assert len(prediction_log.read(MODEL)) == 48 and batch_scored_records() == 1


def test_one_input_mode_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "x.csv")
    code, out = cli("score", MODEL, "--source", path, "--entities", path)
    assert code == 1 and "got source and entities" in out["error"]
    code, out = cli("score", MODEL, "--entities", path, "--start", "2025-01-01")
    assert code == 1 and "got entities and start/end" in out["error"]
    code, out = cli("score", MODEL, "--source", path, "--end", "2025-01-01")
    assert code == 1 and "got source and start/end" in out["error"]
    assert prediction_log.read(MODEL).empty

"""The drift flow on the real stack without a Prefect server: Evidently on the champion's
reference, the decision, and retraining as a subflow within the cooldown rules."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.drift import drift_flow
from flows.ingestion import ingestion_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.data.synthetic import Shift, generate_batch
from mlsteward.errors import ContractViolation
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.outcomes import ingest_labels
from mlsteward.training.metrics import evaluate
from tests.support.governance import MODEL, write_config

SHIFTED = ["bmi", "cholesterol"]


@pytest.fixture
def champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_cohort_path: Path) -> Path:
    config = tmp_path / "config"
    # one trial per retraining too: the subflows that drift triggers stay quick
    write_config(
        config, drift={"key_features": ["bmi"], "cooldown_hours": 24}, tuning={"max_evals": 1}
    )
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(config))
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    out = training_flow(model=MODEL, max_evals=1)
    assert out.governance.decision == "promoted"
    return tmp_path


def batch_file(directory: Path, name: str, shift: Shift | None = None) -> Path:
    path = directory / f"{name}.parquet"
    generate_batch(n_rows=2_000, seed=21, shift=shift).to_parquet(path, index=False)
    return path


def actions() -> list[str]:
    store = audit_store()
    try:
        return [r.action for r in store.query(model=MODEL)]
    finally:
        store.close()


def test_unshifted_batch_does_not_retrain(champion: Path) -> None:
    out = drift_flow(model=MODEL, current=str(batch_file(champion, "normal")))
    assert out.decision.retrain is False, out.decision
    assert "bmi" not in out.drifted_columns
    assert out.retrain is None
    assert Path(out.report_path).exists()
    assert Action.RETRAIN_TRIGGERED not in actions()
    # the ~600-row holdout is below drift.min_reference_rows: the features were compared with
    # the champion's training window, read from its recorded snapshot; the output with the holdout
    assert out.reference["source"] == "training window", out.reference
    assert out.reference["rows"] == out.rows["reference"] > 4 * out.rows["output_reference"]

    # the same HTML is logged against the champion version's run in MLflow
    champion_run = registry.version_by_alias(MODEL, registry.CHAMPION).run_id
    assert out.report_uri.startswith(f"runs:/{champion_run}/drift/v1/")
    logged = Path(mlflow.artifacts.download_artifacts(out.report_uri, dst_path=str(champion)))
    assert logged.read_bytes() == Path(out.report_path).read_bytes()
    # and linked from a Prefect markdown artifact listing every column's verdict
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["heart-disease-drift"]))
        )
    # the harness is shared by the session: pick this run's version of the artifact
    [artifact] = [a for a in artifacts if Path(out.report_path).as_uri() in str(a.data)]
    assert artifact.data.count("| ok |") == len(out.columns) - len(out.drifted_columns)


def test_shifted_batch_retrains_once_then_cooldown_suppresses(champion: Path) -> None:
    # The same seed without the shift gives the same rows except the shifted columns, so the
    # shift must add exactly those to whatever the small test reference flags by chance.
    quiet = drift_flow(model=MODEL, current=str(batch_file(champion, "normal")))
    assert quiet.decision.retrain is False, quiet.decision
    shift = Shift(covariate={c: 1.5 for c in SHIFTED})
    source = batch_file(champion, "shifted", shift)
    out = drift_flow(model=MODEL, current=str(source))
    added = set(out.drifted_columns) - set(quiet.drifted_columns)
    assert added == set(SHIFTED), (out.drifted_columns, quiet.drifted_columns)
    assert out.decision.retrain is True
    # the on-call hears of each shifted feature once, however often the check repeats
    fired = {
        a["subject"]
        for a in out.alerts
        if a["rule"] == "feature_drift" and a["transition"] == "fired"
    }
    assert set(SHIFTED) <= fired, out.alerts
    assert out.retrain.triggered and out.retrain.mode == "subflow"
    assert len(registry.list_versions(MODEL)) == 2  # the retraining run registered v2

    again = drift_flow(model=MODEL, current=str(source))
    assert again.decision.retrain is True
    assert again.retrain.triggered is False and "cooldown" in again.retrain.reason
    assert not [a for a in again.alerts if a["transition"] == "fired" and a["subject"] in SHIFTED]
    assert len(registry.list_versions(MODEL)) == 2
    seen = actions()
    assert seen.count(Action.RETRAIN_TRIGGERED) == 1
    assert seen.count(Action.RETRAIN_SUPPRESSED) == 1


def test_bad_current_data_is_refused_without_a_report(champion: Path) -> None:
    path = champion / "broken.csv"
    generate_batch(n_rows=200, seed=3).drop(columns=["bmi"]).to_csv(path, index=False)
    with pytest.raises(ContractViolation, match="bmi"):
        drift_flow(model=MODEL, current=str(path))
    assert Action.DRIFT_CHECKED not in actions() and Action.DRIFT_DETECTED not in actions()


def test_concept_shift_with_labels_retrains_on_performance(champion: Path) -> None:
    source = batch_file(champion, "concept", Shift(concept=1.0))
    out = drift_flow(model=MODEL, current=str(source))
    cfg = get_model_config(MODEL)
    metric = cfg.promotion.primary_metric
    perf = out.performance
    assert perf is not None and perf["current"]["rows"] == 2_000
    drop = perf["reference"][metric] - perf["current"][metric]
    assert drop >= cfg.drift.performance_drop, perf
    assert out.decision.retrain is True
    assert any(r.startswith(f"{metric} fell") for r in out.decision.reasons)
    [quality] = [a for a in out.alerts if a["rule"] == "quality_drop"]
    assert quality["breached"] and quality["transition"] == "fired", quality
    # the features did not move: performance alone triggered the retrain
    assert not set(cfg.drift.key_features) & set(out.drifted_columns), out.drifted_columns
    assert out.dataset_drift_share < cfg.drift.drift_share
    assert len(out.decision.reasons) == 1, out.decision
    assert out.retrain.triggered and out.retrain.mode == "subflow"


def test_prevalence_shift_with_labels_is_target_drift(champion: Path) -> None:
    out = drift_flow(model=MODEL, current=str(batch_file(champion, "prev", Shift(prevalence=0.8))))
    assert out.target_drift is not None and out.target_drift["drifted"], out.target_drift
    assert out.performance["current"]["positive_rate"] == pytest.approx(0.8, abs=1e-9)
    assert out.performance["reference"]["positive_rate"] < 0.6


def test_log_window_with_partial_outcomes_measures_quality_on_them(champion: Path) -> None:
    batch = generate_batch(n_rows=1_000, seed=23)
    source = champion / "to_score.parquet"
    batch.drop(columns=["heart_disease"]).to_parquet(source, index=False)
    scoring_flow(model=MODEL, source=str(source))
    outcomes = champion / "outcomes.parquet"
    batch.iloc[::3][["patient_id", "event_timestamp", "heart_disease"]].to_parquet(
        outcomes, index=False
    )  # 334 of 1,000 outcomes have arrived
    cfg = get_model_config(MODEL)
    with governance.open_audit() as audit:
        ingested = ingest_labels(cfg, outcomes, actor="test", audit=audit)
    assert ingested["matched"] == 334

    out = drift_flow(model=MODEL, window_days=1)

    assert out.rows["current"] == 1_000 and out.rows["current_labelled"] == 334
    perf = out.performance
    assert perf is not None and perf["current"]["rows"] == 334
    logged = prediction_log.read_with_labels(MODEL).dropna(subset=["label"])
    truth = evaluate(
        logged["label"].to_numpy(),
        logged["prediction_proba"].to_numpy(),
        perf["decision_threshold"],
    )
    assert perf["current"]["roc_auc"] == pytest.approx(truth["roc_auc"], abs=1e-12)
    assert perf["current"]["brier"] == pytest.approx(truth["brier"], abs=1e-12)
    assert out.target_drift is not None and out.notes == []
    assert out.prediction_drift is not None

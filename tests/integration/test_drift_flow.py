"""The drift flow on the real stack without a Prefect server: Evidently on the champion's
reference, the decision, and retraining as a subflow within the cooldown rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.drift import drift_flow
from flows.ingestion import ingestion_flow
from flows.training import training_flow
from mlsteward import registry
from mlsteward.audit import Action, audit_store
from mlsteward.errors import ContractViolation
from mlsteward.synthetic import Shift, generate_batch
from tests.integration.governance_support import MODEL, write_config

SHIFTED = ["bmi", "cholesterol"]


@pytest.fixture
def champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_cohort_path: Path) -> Path:
    config = tmp_path / "config"
    write_config(config, drift={"key_features": ["bmi"], "cooldown_hours": 24})
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(config))
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    out = training_flow(model=MODEL, max_evals=1)
    assert out["governance"]["decision"] == "promoted"
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
    assert out["decision"]["retrain"] is False, out["decision"]
    assert "bmi" not in out["drifted_columns"]
    assert out["retrain"] is None
    assert Path(out["report_path"]).exists()
    assert Action.RETRAIN_TRIGGERED not in actions()


def test_shifted_batch_retrains_once_then_cooldown_suppresses(champion: Path) -> None:
    shift = Shift(covariate={c: 1.5 for c in SHIFTED})
    source = batch_file(champion, "shifted", shift)
    out = drift_flow(model=MODEL, current=str(source))
    assert set(SHIFTED) <= set(out["drifted_columns"]), out["drifted_columns"]
    assert out["decision"]["retrain"] is True
    assert out["retrain"]["triggered"] and out["retrain"]["mode"] == "subflow"
    assert len(registry.list_versions(MODEL)) == 2  # the retraining run registered v2

    again = drift_flow(model=MODEL, current=str(source))
    assert again["decision"]["retrain"] is True
    assert again["retrain"]["triggered"] is False and "cooldown" in again["retrain"]["reason"]
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

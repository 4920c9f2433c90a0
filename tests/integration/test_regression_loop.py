"""The built-in regression model through the whole loop on the real stack: contract → Feast →
Hyperopt/XGBoost (count:poisson) → gates with regression fairness on a column that is no model
input → promotion → batch scoring → outcomes and drift → online serving → reproduction.

Every stage is the one the heart-disease model uses; nothing here is regression-specific code
of the tests' own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.drift import drift_flow
from flows.ingestion import ingestion_flow, materialize_flow
from flows.reproduce import reproduce_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.data.builtin import builtin
from mlsteward.data.synthetic import write_dataset
from mlsteward.governance import promotion as governance
from mlsteward.governance.validation import load_holdout, score_holdout
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.outcomes import ingest_labels
from tests.support.governance import deep_merge
from tests.support.serving import bearer, issue_token

MODEL = "readmission"
FAST = {
    "max_evals": 3,
    "num_boost_round": 120,
    "early_stopping_rounds": 15,
    "search_space": {
        "max_depth": {"dist": "choice", "options": [3, 4]},
        "learning_rate": {"dist": "choice", "options": [0.1, 0.2]},
    },
}


def write_model_config(config_dir: Path, **overrides: Any) -> None:
    """The shipped readmission config with fast tuning, and fairness limits for the 3,000-row
    test cohort: its 450-row holdout has about 280 white and 90 black patients, where a group's
    mean residual moves by about 0.6 days on sampling alone (the shipped limits are calibrated
    on the 50,000-row demo cohort)."""
    import yaml

    from tests.conftest import REPO_ROOT

    base = yaml.safe_load((REPO_ROOT / "config/models/readmission.yaml").read_text())
    small = {
        "tuning": FAST,
        "fairness": {
            "min_group_size": 60,
            "limits": {"mae_ratio": {"max": 1.5}, "mean_residual_difference": {"max": 2.0}},
        },
    }
    (config_dir / "models").mkdir(parents=True, exist_ok=True)
    merged = deep_merge(deep_merge(base, small), overrides)
    (config_dir / "models" / f"{MODEL}.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def loop(mlsteward_home: Path) -> dict[str, Any]:
    """Ingest, materialize and train the first champion once for the module."""
    work = mlsteward_home.parent
    write_model_config(Path(os.environ["MLSTEWARD_CONFIG_DIR"]))
    data = builtin(MODEL)
    cohort = data.generate_cohort(n_rows=3_000, seed=5)
    source = write_dataset(cohort, work / "readmission.parquet")
    ingestion_flow(model=MODEL, source=str(source))
    materialize_flow(model=MODEL)
    first = training_flow(model=MODEL)
    return {"work": work, "cohort": cohort, "first": first, "data": data}


def test_trains_a_regression_champion_that_never_sees_race(loop: dict[str, Any]) -> None:
    first = loop["first"]
    assert first.governance.decision == "promoted", first.governance
    assert first.threshold is None and first.task == "regression"
    metrics = first.test_metrics
    assert {"rmse", "mae", "r2", "mean_poisson_deviance", "calibration_ratio"} <= set(metrics)
    assert "roc_auc" not in metrics
    # calibration in the large: a Poisson model's mean prediction tracks the mean outcome
    assert 0.8 < metrics["calibration_ratio"] < 1.2
    verified = governance.load_version(MODEL, "champion", actor="test")
    assert verified.is_regression and verified.objective == "count:poisson"
    names = verified.model.get_booster().feature_names
    assert names == get_model_config(MODEL).feature_names and "race" not in names
    with audit_store() as store:
        passed = store.query(model=MODEL, action=Action.VALIDATION_PASSED, version=first.version)
    assert passed and passed[-1].details["gates"]["fairness"] is True
    # the gate's numbers: race groups read from the holdout, where race sits beside the features
    score = score_holdout(get_model_config(MODEL), verified, load_holdout(verified.info))
    race = score.fairness["race"]
    assert score.threshold is None and race.metrics["mae_ratio"] is not None
    assert {"mae", "rmse", "mean_residual"} <= set(race.groups[0])


def test_scores_outcomes_and_drift_in_days(loop: dict[str, Any]) -> None:
    data, work = loop["data"], loop["work"]
    batch = data.generate_batch(1_500, 11, start="2025-07-01", days=10, id_offset=1_000_000_000)
    source = work / "batch.parquet"
    write_dataset(batch.drop(columns=[data.label]), source)

    scored = scoring_flow(model=MODEL, source=str(source))
    assert scored.rows == 1_500 and scored.threshold is None
    logged = prediction_log.read(MODEL)
    assert logged["prediction"].dtype == np.float64 and (logged["prediction"] > 0).all()
    assert "prediction_proba" not in logged.columns

    outcomes = work / "outcomes.parquet"
    cfg = get_model_config(MODEL)
    batch[[cfg.source.entity, cfg.timestamp_column, data.label]].to_parquet(outcomes)
    with audit_store() as store:
        attached = ingest_labels(cfg, outcomes, actor="test", audit=store)
    assert attached["matched"] == 1_500

    out = drift_flow(model=MODEL, window_days=30)
    assert out.prediction_drift is not None and out.prediction_drift["column"] == "prediction"
    assert out.target_drift is not None and out.target_drift["kind"] == "numeric"
    quality = out.performance
    assert quality is not None and {"rmse", "mae"} <= set(quality["current"])
    # an unshifted month of the same population: the model's errors hold
    assert quality["current"]["mae"] < 1.5 * quality["reference"]["mae"]


def test_serves_days_with_reasons_in_days(loop: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    from mlsteward.serving.app import create_app
    from mlsteward.serving.settings import ServingSettings

    cfg = get_model_config(MODEL)
    ids = [int(i) for i in loop["cohort"][cfg.source.entity].drop_duplicates().head(5)]
    app = create_app([cfg], ServingSettings(models=[MODEL]))
    with TestClient(app, headers=bearer(issue_token("viewer"))) as client:
        r = client.post(
            f"/v1/models/{MODEL}/predict", json={"entity_ids": ids, "explain": True, "top_k": 20}
        )
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert "probability" not in p and "label" not in p
        exp = p["explanation"]
        total = exp["base_value"] + sum(c["value"] for c in exp["contributions"])
        assert total == pytest.approx(p["prediction"], rel=1e-4)


def test_reproduces_the_regression_champion_byte_for_byte(loop: dict[str, Any]) -> None:
    result = reproduce_flow(model=MODEL, version=loop["first"].version)
    assert result.result == "identical", result.summary
    assert result.rebuilt_artifact_sha256 == result.registered_artifact_sha256
    assert not result.metric_deltas


def test_a_permuted_race_column_trains_the_same_model(loop: dict[str, Any]) -> None:
    """Race is measured, never an input: shuffling it changes no tree."""
    cohort: pd.DataFrame = loop["cohort"].copy()
    rng = np.random.default_rng(3)
    cohort["race"] = rng.permutation(cohort["race"].to_numpy())
    source = write_dataset(cohort, loop["work"] / "permuted.parquet")
    ingestion_flow(model=MODEL, source=str(source))
    again = training_flow(model=MODEL, promote=False)
    assert again.artifact_sha256 == loop["first"].artifact_sha256

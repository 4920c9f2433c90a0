"""Validating registered regression versions: scored by their predicted values on the holdout,
judged by regression metrics, regression fairness across a sensitive column that is not a model
input, and the champion comparison on RMSE; through ``run_gates`` and the Prefect tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.governance import validate
from mlsteward.config.models import ModelConfig
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance import mlflow_adapter, registry
from mlsteward.governance import promotion as governance
from mlsteward.governance.gates import CHAMPION_COMPARISON, FAIRNESS, METRIC_THRESHOLDS
from mlsteward.governance.run_gates import run_gates, score_with_champion
from mlsteward.governance.validation import HOLDOUT_ARTIFACT
from tasks.common import artifact_key

MODEL = "stay_days"
CFG = ModelConfig.model_validate(
    {
        "name": MODEL,
        "task": "regression",
        "source": {"path": "stays.parquet", "entity": "stay_id", "timestamp": "admitted_at"},
        "label": "length_of_stay_days",
        "features": [{"name": "severity", "dtype": "float"}],
        "sensitive_attributes": [{"column": "race", "dtype": "category"}],
        "tuning": {"objective": "count:poisson"},
        "thresholds": {"r2": {"min": 0.2}},
    }
)


def stays(n: int, seed: int, b_error: float) -> pd.DataFrame:
    """Days in hospital drawn as Poisson(exp(0.3 * severity)); the recorded severity, the
    model's one input, carries a measurement error of sd ``b_error`` for group B. Race is kept
    beside the features, never given to the model."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B"], size=n)
    severity = rng.uniform(0, 10, n)
    days = rng.poisson(np.exp(0.3 * severity))
    recorded = severity + (np.where(race == "B", rng.normal(0, b_error, n), 0.0) if b_error else 0)
    return pd.DataFrame(
        {
            "stay_id": np.arange(n),
            "admitted_at": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "severity": recorded,
            "race": race,
            "length_of_stay_days": days,
        }
    )


def register(
    rounds: int, b_error: float, tags: dict[str, Any] | None = None, drop: list[str] | None = None
) -> str:
    """Train a tiny Poisson XGBRegressor and register it as training does: signed artifact,
    feature encoding and task tags, the holdout with its predictions on the run."""
    train, holdout = stays(1_500, 1, b_error), stays(600, 2, b_error)
    enc = make_encoding(CFG, {"severity": "float"}, train)
    model = xgb.XGBRegressor(
        objective="count:poisson", n_estimators=rounds, max_depth=3, learning_rate=0.3, n_jobs=1
    ).fit(encode(train, enc), train[CFG.label])
    x = encode(holdout, enc)
    run_id = mlflow_adapter.start_run(MODEL, f"train-{rounds}-{b_error}", {})
    recorded = holdout.assign(prediction=model.predict(x).astype("float64"))
    mlflow_adapter.log_frame_artifact(run_id, recorded.drop(columns=drop or []), HOLDOUT_ARTIFACT)
    version_tags = {
        "lifecycle": "candidate",
        "task": "regression",
        "objective": "count:poisson",
        "feature_encoding": enc.to_dict(),
        **(tags or {}),
    }
    registered = mlflow_adapter.log_and_register(
        run_id, model, x.head(2), MODEL, ["xgboost"], version_tags
    )
    mlflow_adapter.end_run(run_id)
    return registered.version


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def champion(mlsteward_home: Path) -> str:
    """v1: a fair but weak model (3 rounds), validated with no champion and promoted."""
    version = register(rounds=3, b_error=0.0)
    report = run_gates(CFG, version, actor="ci")
    assert report.passed, report.reasons()
    governance.promote(CFG, version, actor="ci", reason="first champion")
    return version


def gate(report: Any, name: str) -> Any:
    return next(g for g in report.gates if g.name == name)


def test_a_better_fair_version_passes_every_gate_with_regression_numbers(
    champion: str, tmp_path: Path
) -> None:
    # a decision_threshold tag on a regression version is never read
    version = register(rounds=40, b_error=0.0, tags={"decision_threshold": 0.9})
    challenger, champ, _, rows = score_with_champion(CFG, version, actor="ci")
    assert rows == 600 and champ is not None and champ.version == champion
    assert challenger.threshold is None and champ.threshold is None
    assert set(CFG.metric_names) <= set(challenger.metrics)
    assert "threshold" not in challenger.metrics and "roc_auc" not in challenger.metrics
    assert challenger.metrics["rmse"] < champ.metrics["rmse"]
    # the holdout's recorded predictions are what the verified model predicts again
    info = registry.get_version(MODEL, version)
    holdout = pd.read_parquet(registry.download_run_file(info.run_id, HOLDOUT_ARTIFACT, tmp_path))
    mae = float(np.mean(np.abs(holdout["prediction"] - holdout[CFG.label])))
    assert challenger.metrics["mae"] == pytest.approx(mae, rel=1e-5)

    report = run_gates(CFG, version, actor="ci")
    assert report.passed, report.reasons()
    thresholds = gate(report, METRIC_THRESHOLDS).details["checks"]["r2"]
    assert thresholds["passed"] and thresholds["value"] == pytest.approx(challenger.metrics["r2"])
    race = gate(report, FAIRNESS).details["attributes"]["race"]
    assert race["checks"]["mae_ratio"] is True and race["metrics"]["mae_ratio"] < 1.25
    assert [g["group"] for g in race["groups"]] == ["A", "B"]
    assert {"mae", "rmse", "mean_residual", "mean_prediction", "mean_outcome"} <= set(
        race["groups"][0]
    )
    comparison = gate(report, CHAMPION_COMPARISON).details
    assert comparison["champion_version"] == champion
    assert comparison["primary"]["metric"] == "rmse"
    assert comparison["primary"]["direction"] == "lower is better"
    assert comparison["primary"]["improvement"] > 0
    assert set(comparison["fairness"]["race"]) == {"mae_ratio"}
    info = registry.get_version(MODEL, version)
    assert info.validation_status == "passed" and registry.CHALLENGER in info.aliases
    assert "| group | n | MAE | RMSE | mean residual |" in report.to_markdown()


def test_a_version_that_fails_one_group_is_rejected_naming_the_group(
    champion: str, tmp_path: Path
) -> None:
    version = register(rounds=40, b_error=3.0)
    report = run_gates(CFG, version, actor="ci")
    assert not report.passed
    fairness = gate(report, FAIRNESS)
    (violation,) = fairness.violations
    assert violation.attribute == "race" and violation.metric == "mae_ratio"
    assert violation.value is not None and violation.value > 1.25
    assert violation.groups is not None and set(violation.groups) == {"A", "B"}
    assert violation.groups["B"]["mae"] > violation.groups["A"]["mae"]
    assert violation.message.startswith("race: mae_ratio ")
    assert " > 1.25 (A: mae " in violation.message and "; B: mae " in violation.message
    info = registry.get_version(MODEL, version)
    assert info.validation_status == "failed"
    path = f"validation/validation-v{version}.json"
    stored = json.loads(registry.download_run_file(info.run_id, path, tmp_path).read_text())
    assert stored["passed"] is False
    assert stored["gates"][1]["violations"][0]["message"] == violation.message


def test_a_holdout_without_the_sensitive_column_is_refused_naming_it(champion: str) -> None:
    version = register(rounds=10, b_error=0.0, drop=["race"])
    with pytest.raises(MlstewardError, match=r"holdout has no sensitive column\(s\) \['race'\]"):
        run_gates(CFG, version, actor="ci")


def test_the_prefect_validation_tasks_publish_the_regression_group_table(champion: str) -> None:
    version = register(rounds=30, b_error=0.0)

    @flow(name="validate-regression")
    def validate_flow(v: str) -> Any:
        return validate(CFG, v, "ci")

    report = validate_flow(version)
    assert report.passed, report.reasons()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key(MODEL, "fairness")])
            )
        )
    tables = [json.loads(a.data) if isinstance(a.data, str) else a.data for a in artifacts]
    [rows] = [t for t in tables if any(r.get("mae") is not None for r in t)]
    assert [(r["attribute"], r["group"]) for r in rows] == [("race", "A"), ("race", "B")]
    assert all(r["gated"] and r["size"] > 200 for r in rows)

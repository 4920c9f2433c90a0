"""A regression champion through scoring, late outcomes and the drift flow on the real stack
(MLflow registry, parquet prediction log, Evidently, Prefect without a server): predicted values
logged, outcomes checked and joined, RMSE on recent outcomes against the holdout's, the decision
and its report naming the metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.drift import drift_flow
from flows.scoring import scoring_flow
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.errors import ContractViolation
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance import mlflow_adapter
from mlsteward.governance import promotion as governance
from mlsteward.governance.run_gates import run_gates
from mlsteward.governance.validation import HOLDOUT_ARTIFACT
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.outcomes import ingest_labels
from mlsteward.monitoring.retrain import claim_retrain
from mlsteward.training.metrics import evaluate_regression
from tasks.common import artifact_key
from tests.support.regression import ENTITY, LABEL, MODEL, TIMESTAMP, expected_days, stays

CONFIG: dict[str, Any] = {
    "name": MODEL,
    "task": "regression",
    "source": {"path": "stays.parquet", "entity": ENTITY, "timestamp": TIMESTAMP},
    "label": LABEL,
    "features": [
        {"name": "age", "dtype": "float"},
        {"name": "prior_visits", "dtype": "int"},
        {"name": "ward", "dtype": "category", "categories": ["a", "b", "c"]},
    ],
    "tuning": {"objective": "count:poisson"},
    "drift": {"performance_drop": 0.1, "performance_drop_mode": "relative"},
}


def register_and_promote() -> str:
    """A Poisson XGBRegressor registered as training registers one (signed artifact, encoding
    and task tags, the holdout with its predicted values), validated and made champion."""
    cfg = get_model_config(MODEL)
    train, holdout = stays(3_000, seed=1), stays(800, seed=2, start="2025-02-01")
    enc = make_encoding(cfg, {f.name: f.dtype for f in cfg.features}, train)
    model = xgb.XGBRegressor(
        objective="count:poisson", n_estimators=40, max_depth=3, enable_categorical=True,
        feature_types=enc.feature_types, tree_method="hist", n_jobs=1, random_state=0,
    ).fit(encode(train, enc), train[LABEL])  # fmt: skip
    x = encode(holdout, enc)
    run_id = mlflow_adapter.start_run(MODEL, "train-stay", {})
    recorded = holdout.assign(prediction=model.predict(x).astype("float64"))
    mlflow_adapter.log_frame_artifact(run_id, recorded, HOLDOUT_ARTIFACT)
    tags = {
        "lifecycle": "candidate",
        "task": "regression",
        "objective": "count:poisson",
        "feature_encoding": enc.to_dict(),
    }
    version = mlflow_adapter.log_and_register(
        run_id, model, x.head(2), MODEL, ["xgboost"], tags
    ).version
    mlflow_adapter.end_run(run_id)
    report = run_gates(cfg, version, actor="ci")
    assert report.passed, report.reasons()
    governance.promote(cfg, version, actor="ci", reason="first champion")
    return version


@pytest.fixture
def champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))
    return register_and_promote()


def test_log_window_with_worse_outcomes_decides_retrain_on_rmse(
    champion: str, tmp_path: Path
) -> None:
    cfg = get_model_config(MODEL)
    batch = stays(1_200, seed=3, start="2025-03-01")
    source = tmp_path / "to_score.parquet"
    batch.drop(columns=[LABEL]).to_parquet(source, index=False)

    scored = scoring_flow(model=MODEL, source=str(source)).model_dump()
    assert scored["rows"] == 1_200 and scored["version"] == champion
    assert "mean_probability" not in scored and "threshold" not in scored
    logged = prediction_log.read(MODEL)
    assert logged["prediction"].dtype == np.float64 and "prediction_proba" not in logged
    assert scored["mean_prediction"] == pytest.approx(logged["prediction"].mean(), abs=1e-6)
    assert scored["median_prediction"] < scored["p95_prediction"]

    # outcomes arrive for half the stays, and they are 60% longer than the model expects
    rng = np.random.default_rng(4)
    arrived = batch.iloc[::2].assign(**{LABEL: lambda f: rng.poisson(1.6 * expected_days(f))})
    outcomes = tmp_path / "outcomes.parquet"
    arrived[[ENTITY, TIMESTAMP, LABEL]].to_parquet(outcomes, index=False)
    with audit_store() as store:
        assert ingest_labels(cfg, outcomes, actor="test", audit=store)["matched"] == 600
        # a retrain claimed just before: this run's decision is recorded, its retrain suppressed
        claim_retrain(cfg, store, reasons=["earlier drift"], actor="test", running=[])

    out = drift_flow(model=MODEL, window_days=1)

    assert out.rows["current"] == 1_200 and out.rows["current_labelled"] == 600
    assert out.prediction_drift is not None and out.prediction_drift["column"] == "prediction"
    assert out.target_drift is not None and out.target_drift["kind"] == "numeric"
    assert out.target_drift["drifted"]
    perf = out.performance
    assert perf is not None and "decision_threshold" not in perf
    labelled = prediction_log.read_with_labels(MODEL).dropna(subset=["label"])
    truth = evaluate_regression(labelled["label"], labelled["prediction"], cfg.tuning)
    assert perf["current"]["rmse"] == pytest.approx(truth["rmse"], rel=1e-12)
    rise = perf["current"]["rmse"] / perf["reference"]["rmse"] - 1
    assert rise > 0.1
    assert out.decision.retrain
    assert [r for r in out.decision.reasons if r.startswith("rmse rose from")] == [
        f"rmse rose from {perf['reference']['rmse']:.4f} to {perf['current']['rmse']:.4f} on "
        f"labelled recent data (worse by {rise:.1%} >= 10.0% of the reference)"
    ]
    assert out.retrain is not None and not out.retrain.triggered
    assert "cooldown" in out.retrain.reason

    page = Path(out.report_path).read_text(encoding="utf-8")
    assert "rmse (lower is better)" in page and "retrains" in page
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key(MODEL, "drift")])
            )
        )
    [artifact] = [a for a in artifacts if Path(out.report_path).as_uri() in str(a.data)]
    assert "Quality on outcomes: rmse (lower is better)" in str(artifact.data)
    # auto on the 800-row holdout (no recipe here, so no training window): K-S
    assert "Model output (prediction): numeric, ks " in str(artifact.data)
    assert f"Outcome ({LABEL}): numeric, ks " in str(artifact.data)
    with audit_store() as store:
        record = store.last(model=MODEL, action=Action.DRIFT_CHECKED) or store.last(
            model=MODEL, action=Action.DRIFT_DETECTED
        )
    assert record is not None and record.details["quality"]["metric"] == "rmse"
    assert record.details["quality"]["worse"] is True


def test_a_file_with_better_outcomes_does_not_retrain(champion: str, tmp_path: Path) -> None:
    batch = stays(1_000, seed=5, start="2025-03-01")
    calm = batch.assign(**{LABEL: np.round(expected_days(batch)).astype(np.int64)})
    path = tmp_path / "current.parquet"
    calm.to_parquet(path, index=False)

    out = drift_flow(model=MODEL, current=str(path))

    perf = out.performance
    assert perf is not None and perf["current"]["rows"] == 1_000
    assert perf["current"]["rmse"] < perf["reference"]["rmse"]
    assert out.decision.retrain is False and out.retrain is None
    assert out.prediction_drift is not None and not out.prediction_drift["drifted"]


def test_outcomes_the_objective_cannot_have_are_refused(champion: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame(
        {ENTITY: [1, 2, 3], TIMESTAMP: ["2025-03-01"] * 3, LABEL: ["2", "-1", "1.5"]}
    ).to_csv(path, index=False)
    with (
        audit_store() as store,
        pytest.raises(
            ContractViolation, match=r"not a whole number >= 0 \(count:poisson\) in row\(s\) 2, 3"
        ),
    ):
        ingest_labels(get_model_config(MODEL), path, actor="test", audit=store)
    assert prediction_log.label_files(MODEL) == []

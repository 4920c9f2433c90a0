"""A regression model declared by one YAML file on a user's CSV (a count target, categorical
columns, a protected attribute that is no model input) trains, validates, promotes, scores,
serves and reports with no code change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.ingestion import ingestion_flow, materialize_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from mlsteward.config.models import get_model_config
from mlsteward.governance import promotion as governance
from mlsteward.monitoring import prediction_log
from mlsteward.report import write_report
from tests.support.serving import bearer, issue_token

CLAIMS_YAML = """\
name: claims
description: Insurance claims a policy files in the next year.
task: regression
source: {{path: {csv}, entity: policy_id, timestamp: observed_at}}
label: claims_next_year
features:
  - age                      # type inferred: int
  - region                   # type inferred: category
  - {{name: vehicle_group, dtype: category, categories: [a, b, c, d]}}
  - prior_claims
  - annual_km
sensitive_attributes:
  - {{column: sex, dtype: category, categories: [F, M]}}   # measured, never a model input
tuning:
  objective: count:poisson
  max_evals: 2
  num_boost_round: 80
  early_stopping_rounds: 10
thresholds: {{calibration_ratio: {{min: 0.8, max: 1.2}}}}
promotion: {{primary_metric: mae}}
fairness: {{min_group_size: 50}}
"""


def claims_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    group = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1])
    prior = rng.poisson(0.6, n)
    km = np.round(rng.gamma(3.0, 4_000.0, n), 0)
    log_mean = (
        -1.2
        - 0.01 * (age - 45)
        + 0.35 * prior
        + 0.00003 * km
        + np.select([group == "c", group == "d"], [0.3, 0.6], 0.0)
        + 0.2 * (region == "south")
    )
    start = pd.Timestamp("2024-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "policy_id": np.arange(1, n + 1),
            "observed_at": start + pd.to_timedelta(rng.integers(0, 300 * 86400, n), unit="s"),
            "age": age,
            "region": region,
            "vehicle_group": group,
            "prior_claims": prior,
            "annual_km": km,
            "sex": rng.choice(["F", "M"], n),
            "claims_next_year": rng.poisson(np.exp(log_mean)),
        }
    )


def test_a_csv_count_model_goes_round_the_loop_with_no_code_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "claims.csv"
    claims_frame(3_000, seed=1).to_csv(csv, index=False)
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    (models / "claims.yaml").write_text(CLAIMS_YAML.format(csv=csv))
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))

    ingested = ingestion_flow(model="claims")
    assert ingested.contract["inferred_dtypes"]["region"] == "category"
    assert ingested.contract["inferred_dtypes"]["age"] == "int"

    trained = training_flow(model="claims")
    assert trained.governance.decision == "promoted", trained.governance
    assert trained.threshold is None and "mae" in trained.test_metrics
    verified = governance.load_version("claims", "champion", actor="test")
    assert "sex" not in verified.model.get_booster().feature_names

    batch = claims_frame(400, seed=2).drop(columns=["claims_next_year", "sex"])
    batch["policy_id"] += 10_000
    source = tmp_path / "batch.csv"
    batch.to_csv(source, index=False)
    scored = scoring_flow(model="claims", source=str(source))
    assert scored.rows == 400 and scored.mean_prediction is not None
    assert prediction_log.read("claims")["prediction"].between(0, 50).all()

    materialize_flow(model="claims")
    from fastapi.testclient import TestClient

    from mlsteward.serving.app import create_app
    from mlsteward.serving.settings import ServingSettings

    app = create_app([get_model_config("claims")], ServingSettings(models=["claims"]))
    with TestClient(app, headers=bearer(issue_token("viewer"))) as client:
        r = client.post("/v1/models/claims/predict", json={"entity_ids": [1, 2, 3]})
    assert r.status_code == 200, r.text
    assert all(p["prediction"] > 0 for p in r.json()["predictions"])

    card = write_report("claims")
    html = Path(card["html"]).read_text()
    assert "mae" in html and "calibration_ratio" in html and "sex" in html
    assert "decision threshold" not in html.lower()

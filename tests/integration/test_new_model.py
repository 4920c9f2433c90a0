"""A model declared by one new YAML file on a CSV trains end to end with no code change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.ingestion import ingestion_flow
from flows.training import training_flow
from mlsteward.config.models import get_model_config
from mlsteward.config.settings import mlflow_tracking_uri
from mlsteward.features.repo import registered_snapshot_path

CHURN_YAML = """\
name: churn
description: Customers who cancel within the month.
task: binary_classification
source:
  path: {csv}
  entity: customer_id
  {timestamp}
label: churned
features:
  - tenure_months
  - monthly_spend
  - plan  # type inferred: category
  - {{name: region, dtype: category, categories: [north, south]}}
  - support_tickets
  - auto_renew
sensitive_attributes:
  - {{column: tenure_months, buckets: [12, 36]}}
tuning: {{max_evals: 2, num_boost_round: 60, early_stopping_rounds: 10}}
"""


def churn_frame(n: int, seed: int, with_time: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    spend = np.round(rng.gamma(2.0, 40.0, n), 2)
    plan = rng.choice(["basic", "pro", "enterprise"], n, p=[0.6, 0.3, 0.1])
    tickets = rng.poisson(1.5, n)
    auto = rng.random(n) < 0.5
    logit = -0.04 * tenure + 0.6 * tickets - 1.2 * auto + 0.5 * (plan == "basic") - 0.5
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in range(n)],
            "tenure_months": tenure,
            "monthly_spend": spend,
            "plan": plan,
            "support_tickets": tickets,
            "auto_renew": np.where(auto, "yes", "no"),
            "region": rng.choice(["north", "south"], n),
            "churned": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )
    if with_time:
        start = pd.Timestamp("2024-03-01", tz="UTC")
        df.insert(
            1, "observed_at", start + pd.to_timedelta(rng.integers(0, 200 * 86400, n), unit="s")
        )
    return df


@pytest.mark.parametrize("with_time", [True, False], ids=["event_time", "no_event_time"])
def test_new_yaml_model_trains_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_time: bool
) -> None:
    csv = tmp_path / "churn.csv"
    churn_frame(3_000, seed=1, with_time=with_time).to_csv(csv, index=False)
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    ts_line = "timestamp: observed_at" if with_time else ""
    (models / "churn.yaml").write_text(CHURN_YAML.format(csv=csv, timestamp=ts_line))
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))

    ingested = ingestion_flow(model="churn")
    assert ingested.rows == 3_000
    assert ingested.contract["timestamp_assigned"] is (not with_time)
    assert ingested.contract["inferred_dtypes"] == {
        "tenure_months": "int",
        "monthly_spend": "float",
        "plan": "category",
        "support_tickets": "int",
        "auto_renew": "bool",
        "region": "category",
    }
    cfg = get_model_config("churn")
    assert registered_snapshot_path(cfg) == ingested.snapshot_path

    outcome = training_flow(model="churn")
    assert outcome.trials == 2
    assert outcome.test_metrics["roc_auc"] > 0.7
    client = MlflowClient(tracking_uri=mlflow_tracking_uri(), registry_uri=mlflow_tracking_uri())
    mv = client.get_model_version("churn", outcome.version)
    assert mv.tags["lineage.feature_service"] == "churn"
    assert int(mv.tags["lineage.training_rows"]) == 3_000

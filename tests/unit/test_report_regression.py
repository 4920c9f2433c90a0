"""The model card of a regression model, collected from a real registry: two XGBRegressor
versions (count:poisson) registered with their holdouts, judged by the real gates (thresholds,
fairness across a sensitive column that is not a model input, the champion comparison), the
first promoted; then the card's metrics, directions, group errors and the absence of any
decision threshold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.audit import audit_store
from mlsteward.config import settings
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.features.encoding import FeatureEncoding
from mlsteward.governance import mlflow_adapter
from mlsteward.governance import promotion as governance
from mlsteward.governance.run_gates import run_gates
from mlsteward.governance.validation import HOLDOUT_ARTIFACT
from mlsteward.report.collect import collect_model_card
from mlsteward.report.model import ModelCard, VersionSection
from mlsteward.report.render_html import render_html
from mlsteward.report.render_markdown import render_markdown
from mlsteward.report.view import section_view, summary_table
from mlsteward.report.view_metrics import direction_note, metrics_table
from mlsteward.signing import keys
from mlsteward.training.metrics import evaluate_regression
from tests.conftest import REPO_ROOT

MODEL = "length_of_stay"
FEATURES = ["age", "prior_visits"]
RACES = ["asian", "black", "white"]
CONFIG = f"""\
name: {MODEL}
description: Days a patient stays in hospital after admission.
owner: bed-planning
task: regression
source: {{path: data/los.parquet, entity: patient_id}}
label: length_of_stay_days
features:
  - {{name: age, dtype: float, min: 18, max: 100}}
  - {{name: prior_visits, dtype: float, min: 0, max: 30}}
sensitive_attributes:
  - {{column: race, dtype: category, categories: {RACES}}}
tuning: {{objective: "count:poisson"}}
thresholds:
  r2: {{min: 0.0}}
  mae: {{max: 5.0}}
fairness: {{min_group_size: 30}}
"""


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    audit_url: str
    config_dir: Path
    signing_key: str
    test_metrics: dict[str, dict[str, float]]


def _cohort(rows: int, seed: int) -> pd.DataFrame:
    """Stays that grow with age and prior visits, and for one group, by more than the two
    features explain: a model that never sees race errs more for that group."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 90, rows)
    prior = rng.poisson(2, rows).astype("float64")
    race = rng.choice(RACES, rows)
    rate = np.exp(0.2 + 0.02 * age + 0.08 * prior + 0.35 * (race == "black"))
    return pd.DataFrame(
        {
            "patient_id": np.arange(rows),
            "age": age,
            "prior_visits": prior,
            "race": race,
            "length_of_stay_days": rng.poisson(rate).astype("float64"),
        }
    )


def _register(cfg: ModelConfig, version: int, trees: int, train: pd.DataFrame, test: pd.DataFrame):
    """What training registers for a regression version: the regressor, its task and
    objective, the test metrics, the lineage features and the holdout with a float
    ``prediction`` column (no probability, no label, no threshold)."""
    model = xgb.XGBRegressor(
        objective="count:poisson", n_estimators=trees, max_depth=2, n_jobs=1, random_state=0
    ).fit(train[FEATURES].astype("float32"), train[cfg.label])
    prediction = model.predict(test[FEATURES].astype("float32")).astype("float64")
    test_metrics = evaluate_regression(test[cfg.label], prediction, cfg.tuning)
    run_id = mlflow_adapter.start_run(MODEL, f"train-v{version}", {})
    mlflow_adapter.log_frame_artifact(run_id, test.assign(prediction=prediction), HOLDOUT_ARTIFACT)
    encoding = FeatureEncoding(columns=FEATURES, dtypes={f: "float" for f in FEATURES})
    tags = {
        "lineage.features": json.dumps(FEATURES),
        "lineage.data_digest": f"{version:02d}" * 32,
        "lineage.training_rows": str(len(train)),
        "lifecycle": "candidate",
        "task": cfg.task,
        "objective": cfg.tuning.objective,
        "feature_encoding": encoding.to_dict(),
        **{f"test_{k}": round(v, 6) for k, v in test_metrics.items()},
    }
    example = test[FEATURES].astype("float32").head(2)
    registered = mlflow_adapter.log_and_register(
        run_id, model, example, MODEL, ["xgboost"], tags, metadata={"task": cfg.task}
    )
    mlflow_adapter.end_run(run_id)
    assert registered.version == str(version)
    return test_metrics


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """v1 validated and promoted, v2 (more trees) validated against it; built once."""
    home = tmp_path_factory.mktemp("regression_home")
    config_dir = home / "config"
    (config_dir / "models").mkdir(parents=True)
    (config_dir / "models" / f"{MODEL}.yaml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(home))
        mp.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
        mp.setenv("MLSTEWARD_CONFIG_DIR", str(config_dir))
        for name in ("MLFLOW_TRACKING_URI", "MLSTEWARD_AUDIT_URL", "MLSTEWARD_PROFILE"):
            mp.delenv(name, raising=False)
        cfg = get_model_config(MODEL)
        data = _cohort(1200, seed=3)
        train, test = data.iloc[:800], data.iloc[800:].reset_index(drop=True)
        metrics = {"1": _register(cfg, 1, 3, train, test), "2": _register(cfg, 2, 60, train, test)}
        assert run_gates(cfg, "1", "ci").passed
        store = audit_store()
        try:
            governance.promote(cfg, "1", actor="ci", reason="all gates passed", store=store)
        finally:
            store.close()
        run_gates(cfg, "2", "ci")
        yield Registry(
            tracking_uri=settings.mlflow_tracking_uri(),
            audit_url=settings.audit_url(),
            config_dir=config_dir,
            signing_key=str(keys.private_key_path()),
            test_metrics=metrics,
        )


@pytest.fixture
def card(built: Registry, monkeypatch: pytest.MonkeyPatch) -> ModelCard:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", built.tracking_uri)
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", built.audit_url)
    monkeypatch.setenv("MLSTEWARD_SIGNING_KEY", built.signing_key)
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(built.config_dir))
    return collect_model_card(MODEL)


def _texts(table) -> list[list[str]]:
    return [[c.text for c in row] for row in table.rows]


def test_the_card_knows_the_task_objective_and_primary_metric(card: ModelCard) -> None:
    assert card.is_regression and card.objective == "count:poisson"
    assert card.primary_metric == "rmse"
    assert card.champion_version == "1" and card.challenger_version == "2"
    summary = dict((r[0].text, r[1].text) for r in summary_table(card).rows)
    assert summary["Task"] == "regression, objective count:poisson (log link: predictions above 0)"
    assert summary["Primary metric"] == "rmse (lower is better)"
    v2 = next(s for s in card.sections if s.version == "2")
    assert v2.task == "regression" and v2.objective == "count:poisson"
    assert v2.measured_only == ["race"]  # measured for fairness, never a feature of v2


def test_metrics_table_shows_regression_metrics_with_their_directions(
    card: ModelCard, built: Registry
) -> None:
    table = metrics_table(card)
    assert table is not None
    assert table.header == [
        "metric",
        "better",
        "champion v1",
        "challenger v2",
        "Δ challenger \u2212 champion",
    ]
    rows = {r[0].text: r for r in table.rows}
    assert list(rows)[:8] == [
        "rmse (primary)",
        "mae",
        "r2",
        "median_absolute_error",
        "mean_poisson_deviance",
        "calibration_ratio",
        "mean_prediction",
        "mean_outcome",
    ]
    assert [rows[m][1].text for m in ("rmse (primary)", "mae", "r2", "calibration_ratio")] == [
        "lower",
        "lower",
        "higher",
        "closer to 1",
    ]
    assert rows["mean_prediction"][1].text == "not ranked"
    assert not any("threshold" in name for name in rows)
    # v2 (60 trees) has the lower error: its negative Δ on rmse is an improvement
    m1, m2 = built.test_metrics["1"], built.test_metrics["2"]
    assert m2["rmse"] < m1["rmse"]
    rmse = rows["rmse (primary)"]
    assert rmse[4].text.startswith("\u2212") and rmse[4].style == "num ok"
    assert rows["r2"][4].style == ("num ok" if m2["r2"] > m1["r2"] else "num bad")
    closer = abs(m2["calibration_ratio"] - 1) < abs(m1["calibration_ratio"] - 1)
    assert rows["calibration_ratio"][4].style == ("num ok" if closer else "num bad")
    assert rows["mean_outcome"][4].style == "num muted"  # the same holdout: no better side
    assert table.note == (
        "rmse, mae, median_absolute_error and mean_poisson_deviance: lower is better; "
        "r2: higher is better; calibration_ratio (mean prediction / mean outcome): closer to 1 "
        "is better; mean_prediction, mean_outcome and rows: descriptive, not ranked."
    )


def test_validation_shows_the_comparison_and_the_groups_errors(card: ModelCard) -> None:
    v2 = next(s for s in card.sections if s.version == "2")
    view = section_view(v2)
    assert view.report is not None
    gates = {g.name: g for g in view.report.gates}
    primary = gates["champion_comparison"].tables[0]
    assert primary.header[:3] == ["primary metric", "challenger", "champion v1"]
    assert primary.rows[0][0].text == "rmse" and "lower is better" in primary.rows[0][4].text
    attribute, groups = gates["fairness"].tables
    assert attribute.title == "Attribute: race (measured, not a model input)"
    assert "race is measured, not a model input" in attribute.note
    assert "higher is worse" in attribute.note
    assert {r[0].text for r in attribute.rows} >= {"mae_ratio", "mean_residual_difference"}
    assert groups.header == [
        "group",
        "n",
        "MAE",
        "RMSE",
        "mean residual",
        "mean prediction",
        "mean outcome",
        "in metrics",
    ]
    by_group = {r[0].text: r for r in groups.rows}
    assert set(by_group) == set(RACES)
    # the group whose stays the features do not explain is under-predicted
    assert by_group["black"][4].text.startswith("\u2212")
    assert "Mean residual: prediction \u2212 outcome" in groups.note
    facts = dict((r[0].text, r[1].text) for r in view.facts.rows)
    assert facts["Task"].startswith("regression, objective count:poisson")


def test_rendered_card_has_no_decision_threshold(card: ModelCard) -> None:
    html, md = render_html(card), render_markdown(card)
    for text in (html, md):
        assert "decision threshold" not in text.lower()
        assert "selection rate" not in text and "ROC-AUC" not in text
        assert "Attribute: race (measured, not a model input)" in text
        assert "calibration_ratio (mean prediction / mean outcome): closer to 1" in text
    assert ">mean residual</th>" in html and ">closer to 1</td>" in html
    assert "| metric | better | champion v1 | challenger v2 |" in md


def test_without_its_configuration_the_card_reads_the_task_from_the_tags(
    card: ModelCard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path))
    bare = collect_model_card(MODEL)
    assert bare.is_regression and bare.primary_metric == "rmse"
    assert bare.objective == "count:poisson"
    assert any(w.startswith("model configuration not available") for w in bare.warnings)
    # the versions' recorded features still tell that race was never an input
    assert next(s for s in bare.sections if s.version == "2").measured_only == ["race"]


def test_calibration_ratio_is_better_closer_to_one_from_either_side() -> None:
    def card(champion: float, challenger: float) -> ModelCard:
        return ModelCard(
            model="m",
            description="",
            owner="",
            generated_at="2025-01-01T00:00:00+00:00",
            champion={"version": "1", "metrics": {"calibration_ratio": champion}},
            challenger={"version": "2", "metrics": {"calibration_ratio": challenger}},
            primary_metric="rmse",
            task="regression",
        )

    def tone(champion: float, challenger: float) -> str:
        table = metrics_table(card(champion, challenger))
        assert table is not None
        return table.rows[0][-1].style

    assert tone(0.90, 1.05) == "num ok"  # over-predicts by 5% instead of under by 10%
    assert tone(1.02, 0.90) == "num bad"  # a lower ratio, further from 1
    assert tone(0.75, 1.25) == "num muted"  # as far from 1 on the other side


def test_the_metrics_note_is_true_for_each_task() -> None:
    assert direction_note(["roc_auc", "pr_auc", "log_loss", "brier", "f1"]) == (
        "log_loss and brier: lower is better; every other metric: higher is better."
    )
    # a classifier's recorded cut-off and counts are not ranked either
    assert direction_note(["roc_auc", "log_loss", "recall", "threshold", "rows"]) == (
        "log_loss: lower is better; roc_auc and recall: higher is better; rows and threshold: "
        "descriptive, not ranked."
    )
    assert direction_note(["rmse", "r2"]) == "rmse: lower is better; r2: higher is better."


def test_a_classification_section_shows_no_task_row() -> None:
    section = VersionSection(
        version="1",
        roles=["champion"],
        lifecycle="champion",
        validation_status=None,
        task="binary_classification",
    )
    facts = [r[0].text for r in section_view(section).facts.rows]
    assert "Task" not in facts

"""Attribution drift: the champion's SHAP shares in the prediction log against its validation
report's SHAP sample, both cut to the same top-k; a shifted top feature fires an alert."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsteward.alerts.engine import observe
from mlsteward.alerts.state import Transition
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.data.builtin import builtin
from mlsteward.errors import MlstewardError
from mlsteward.governance import mlflow_adapter, registry
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.registry import VerifiedModel
from mlsteward.governance.validation import holdout_metrics_gate, score_holdout
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.attribution import (
    attribution_reference,
    check_attribution,
    reference_from_contributions,
    top_k_sums,
)
from mlsteward.monitoring.scoring import score_frame
from tests.support.pictures import fit

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHIFTED = "st_depression"


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return get_model_config("heart_disease")


@pytest.fixture(scope="module")
def trained(cfg: ModelConfig, tmp_path_factory: pytest.TempPathFactory):
    """A real classifier and its holdout, with the evaluation its validation stores."""
    frame = builtin(cfg.name).generate_cohort(n_rows=3_000, seed=3)
    train, holdout = frame.iloc[:2_000], frame.iloc[2_000:].reset_index(drop=True)
    model = fit(cfg, train, "1", 30, 3, tmp_path_factory.mktemp("model") / "m.ubj")
    return model, holdout, score_holdout(cfg, model, holdout)


def registered(cfg: ModelConfig, model: VerifiedModel, holdout: pd.DataFrame, score, tmp: Path):
    """The model as a version whose run holds its validation report and holdout (MLflow in the
    test's home), as a training run leaves them."""
    run_id = mlflow_adapter.start_run(cfg.name, "train", {})
    report = ValidationReport(
        model=cfg.name, version="1", gates=[holdout_metrics_gate(cfg, score)], created_at="t"
    )
    path = tmp / "validation-v1.json"
    path.write_text(json.dumps(report.to_dict()))
    info = replace(model.info, run_id=run_id)
    uri = registry.log_version_artifact(info, path, "validation")
    holdout.to_parquet(tmp / "test_predictions.parquet")
    registry.log_version_artifact(info, tmp / "test_predictions.parquet", "holdout")
    tags = {**info.tags, "validation_report": uri}
    return replace(model, info=replace(info, tags=tags))


def log(cfg: ModelConfig, model: VerifiedModel, rows: pd.DataFrame, at: datetime) -> None:
    prediction_log.append(cfg.name, score_frame(cfg, model, rows, top_k=3, scored_at=at).frame)


def test_a_changed_top_feature_fires_and_an_unshifted_log_does_not(cfg, trained, tmp_path) -> None:
    model, holdout, score = trained
    champion = registered(cfg, model, holdout, score, tmp_path)
    reference = attribution_reference(cfg, champion)
    assert reference.source.startswith("SHAP sample of the validation report")
    assert reference.top_k == 3 and reference.rows == score.evaluation["shap"]["rows"]
    assert sum(f.share for f in reference.features) == pytest.approx(1.0)

    # the same population as the reference, scored an hour ago: every share within the limit
    log(cfg, champion, holdout, NOW - timedelta(hours=1))
    quiet = check_attribution(cfg, reference, now=NOW)
    assert quiet.judged and quiet.compared_rows == len(holdout) and quiet.drifted == []
    assert max(abs(f.change) for f in quiet.features) < 0.05
    outcomes = observe(cfg, quiet.observations(cfg, "1"), actor="service:monitor", now=NOW)
    assert len(outcomes) == len(cfg.features) and not any(o.breached for o in outcomes)
    assert audit_store().query(model=cfg.name, action=Action.ALERT_FIRED) == []

    # a day later every patient shows a large ST depression: it becomes most rows' top reason
    later = NOW + timedelta(days=2)
    log(cfg, champion, holdout.assign(**{SHIFTED: 6.0}), later - timedelta(hours=1))
    shifted = check_attribution(cfg, reference, now=later)
    assert shifted.drifted[0] == SHIFTED
    top = shifted.features[0]
    assert (
        top.feature == SHIFTED and top.change > cfg.alerts.rules.attribution_drift.max_share_change
    )
    assert top.current.rank == 1 and top.reference.rank > 1
    fired = observe(cfg, shifted.observations(cfg, "1"), actor="service:monitor", now=later)
    by_subject = {o.observation.subject: o for o in fired}
    assert by_subject[SHIFTED].transition is Transition.FIRED
    records = audit_store().query(model=cfg.name, action=Action.ALERT_FIRED)
    subjects = {r.details["subject"] for r in records}
    assert SHIFTED in subjects and subjects == set(shifted.drifted)
    record = next(r for r in records if r.details["subject"] == SHIFTED)
    assert record.details["rule"] == "attribution_drift" and record.version == "1"
    assert record.details["details"]["current_rank"] == 1
    assert shifted.to_dict()["features"][0]["feature"] == SHIFTED


def test_a_report_without_a_shap_sample_explains_the_recorded_holdout(
    cfg, trained, tmp_path
) -> None:
    model, holdout, score = trained
    bare = replace(score, evaluation={k: v for k, v in score.evaluation.items() if k != "shap"})
    champion = registered(cfg, model, holdout, bare, tmp_path)
    reference = attribution_reference(cfg, champion)
    assert reference.source.startswith("holdout explained") and reference.rows == len(holdout)
    from_sample = attribution_reference(cfg, registered(cfg, model, holdout, score, tmp_path))
    # the sample and the whole holdout agree on what matters most
    assert reference.features[0].feature == from_sample.features[0].feature
    lost = replace(
        model, info=replace(model.info, run_id=mlflow_adapter.start_run(cfg.name, "x", {}))
    )
    with pytest.raises(MlstewardError, match="no validation report recorded, and its recorded"):
        attribution_reference(cfg, lost)


def test_both_sides_are_cut_to_the_same_top_k() -> None:
    values = np.array([[3.0, -2.0, 1.0, 0.5], [0.1, 0.2, -4.0, 0.3]])
    assert top_k_sums(values, ["a", "b", "c", "d"], 2) == {"a": 3.0, "b": 2.0, "c": 4.0, "d": 0.3}
    reference = reference_from_contributions(
        "heart_disease", "1", ["a", "b", "c", "d"], values, top_k=2, source="test"
    )
    shares = {f.feature: f.share for f in reference.features}
    assert shares["c"] == pytest.approx(4.0 / 9.3) and shares["d"] == pytest.approx(0.3 / 9.3)
    assert [f.rank for f in reference.features] == [1, 2, 3, 4]


def synthetic_rows(n: int, version: str, top_k: int, at: datetime, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "patient_id": np.arange(n) + seed * 10_000,
            "model_version": version,
            "scored_at": pd.Series(pd.Timestamp(at), index=range(n)).astype("datetime64[us, UTC]"),
        }
    )
    for r in range(1, top_k + 1):
        frame[f"shap_{r}_feature"] = ["age", "bmi", "sex"][r - 1]
        frame[f"shap_{r}_value"] = rng.normal(size=n) * (4 - r)
    return frame


def test_short_rows_and_a_canarys_rows_are_left_out_and_too_few_rows_give_no_verdict(
    cfg,
) -> None:
    reference = reference_from_contributions(
        cfg.name, "1", ["age", "bmi", "sex"], np.array([[3.0, 2.0, 1.0]] * 10), top_k=3, source="t"
    )
    at = NOW - timedelta(hours=2)
    prediction_log.append(cfg.name, synthetic_rows(300, "1", 3, at, 1))
    prediction_log.append(cfg.name, synthetic_rows(200, "1", 2, at, 2))  # asked for fewer
    prediction_log.append(cfg.name, synthetic_rows(400, "2", 3, at, 3))  # the challenger
    result = check_attribution(cfg, reference, now=NOW)
    assert (result.rows, result.explained_rows, result.compared_rows) == (500, 500, 300)
    assert not result.judged and result.min_rows == 500
    assert any("fewer than 3 contributions" in n for n in result.notes)
    observations = result.observations(cfg, "1")
    assert {o.breached for o in observations} == {None}
    assert all(o.transition is None for o in observe(cfg, observations, actor="a", now=NOW))
    assert audit_store().query(model=cfg.name, action=Action.ALERT_FIRED) == []

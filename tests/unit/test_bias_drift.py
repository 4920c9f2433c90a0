"""Bias drift: the gated fairness metrics over labelled windows of the prediction log; one
group's collapsed TPR fires equal opportunity for its attribute, balanced outcomes do not, and
too few outcomes give no verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlsteward.alerts.engine import observe
from mlsteward.alerts.state import Transition
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.bias import bounded_rows, check_bias

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
GROUP = 200  # rows per sex; the demo config gates groups of 100 and more
PREDICTED = 90  # of each group's rows, the first 90 are predicted positive


def logged(cfg: ModelConfig, *, version: str = "4") -> pd.DataFrame:
    """A classifier's batch as the log holds it: 200 women then 200 men, each group with the
    same 90 positive answers (so selection rates are equal whatever the outcomes)."""
    n = 2 * GROUP
    within = np.arange(n) % GROUP
    proba = np.where(within < PREDICTED, 0.8, 0.2)
    scored_at = pd.Timestamp(NOW - timedelta(days=3))
    return pd.DataFrame(
        {
            "patient_id": np.arange(n),
            "event_timestamp": pd.Series(scored_at - pd.Timedelta(hours=1), index=range(n)),
            "age": 50,
            "sex": np.repeat(["F", "M"], GROUP),
            "prediction_proba": proba,
            "prediction": (proba >= 0.5).astype(np.int64),
            "model_version": version,
            "scored_at": pd.Series(scored_at, index=range(n)),
        }
    )


def outcomes(frame: pd.DataFrame, women_found: int) -> pd.DataFrame:
    """Per group 100 positives: ``found`` of them among the 90 predicted positive, the rest
    among the predicted negatives (TPR = found / 100). Men keep 80 found."""
    within = np.arange(len(frame)) % GROUP
    found = np.where(frame["sex"].to_numpy() == "F", women_found, 80)
    positive = np.where(within < PREDICTED, within < found, within - PREDICTED < 100 - found)
    return frame[["patient_id", "event_timestamp"]].assign(heart_disease=positive.astype(int))


def attach(cfg: ModelConfig, labels: pd.DataFrame) -> None:
    prediction_log.attach_labels(
        cfg.name, labels, entity="patient_id", timestamp="event_timestamp", label=cfg.label
    )


@pytest.fixture
def cfg() -> ModelConfig:
    return get_model_config("heart_disease")


def test_balanced_outcomes_keep_quiet(cfg) -> None:
    frame = logged(cfg)
    prediction_log.append(cfg.name, frame)
    attach(cfg, outcomes(frame, women_found=80))
    result = check_bias(cfg, now=NOW, version="4")
    assert (result.rows, result.labelled_rows) == (400, 400)
    sex = result.attributes["sex"]
    assert [(g["group"], g["size"], g["positives"], g["tpr"]) for g in sex.to_dict()["groups"]] == [
        ("F", 200, 100, 0.8),
        ("M", 200, 100, 0.8),
    ]
    assert sex.checks == {"equal_opportunity_difference": True, "equalized_odds_difference": True}
    observations = result.observations(cfg, "4")
    # age is reported, never gated, in the demo config: only sex's two gated metrics remain
    assert {o.subject for o in observations} == {
        "sex:equal_opportunity_difference",
        "sex:equalized_odds_difference",
    }
    assert all(o.breached is False for o in observations)
    observe(cfg, observations, actor="service:monitor", now=NOW)
    assert audit_store().query(model=cfg.name, action=Action.ALERT_FIRED) == []


def test_one_groups_collapsed_tpr_fires_equal_opportunity(cfg) -> None:
    frame = logged(cfg)
    prediction_log.append(cfg.name, frame)
    prediction_log.append(cfg.name, logged(cfg, version="5").assign(patient_id=range(400, 800)))
    attach(cfg, outcomes(frame, women_found=30))
    result = check_bias(cfg, now=NOW, version="4")
    assert result.rows == 400  # the other version's rows are not this version's bias
    table = {g["group"]: g for g in result.to_dict()["attributes"]["sex"]["groups"]}
    assert (table["F"]["tpr"], table["M"]["tpr"]) == (0.3, 0.8)
    assert (table["F"]["fpr"], table["M"]["fpr"]) == (0.6, 0.1)
    assert table["F"]["selection_rate"] == table["M"]["selection_rate"] == 0.45
    assert "sex:equal_opportunity_difference" in result.breached
    fired = observe(cfg, result.observations(cfg, "4"), actor="service:monitor", now=NOW)
    eo = next(o for o in fired if o.observation.subject == "sex:equal_opportunity_difference")
    assert eo.transition is Transition.FIRED and eo.severity == "critical"
    assert eo.observation.value == pytest.approx(0.5) and eo.observation.limit == 0.2
    [record] = [
        r
        for r in audit_store().query(model=cfg.name, action=Action.ALERT_FIRED)
        if r.details["subject"] == "sex:equal_opportunity_difference"
    ]
    assert record.version == "4" and "F: tpr 0.3 n=200" in record.reason
    assert {g["group"]: g["tpr"] for g in record.details["details"]["groups"]} == {
        "F": 0.3,
        "M": 0.8,
    }


def test_large_groups_are_measured_on_a_bounded_share_of_each_cell(cfg) -> None:
    frame = logged(cfg)
    prediction_log.append(cfg.name, frame)
    attach(cfg, outcomes(frame, women_found=30))
    fairness = cfg.fairness.model_copy(update={"min_group_size": 10})
    result = check_bias(cfg.model_copy(update={"fairness": fairness}), now=NOW, max_group_rows=50)
    table = {g["group"]: g for g in result.attributes["sex"].to_dict()["groups"]}
    assert (table["F"]["size"], table["F"]["positives"]) == (200, 100)  # every row counted
    assert 48 <= table["F"]["measured"] <= 52
    assert table["F"]["tpr"] == pytest.approx(0.3, abs=0.02)
    assert table["M"]["tpr"] == pytest.approx(0.8, abs=0.02)
    assert "sex:equal_opportunity_difference" in result.breached
    assert "at most 50 rows per group" in result.attributes["sex"].to_dict()["note"]

    groups = np.array(["a"] * 1_000 + ["b"] * 40)
    cell = np.arange(1_040) % 4
    kept = bounded_rows(groups, [cell], 100)
    assert kept is not None and (groups[kept] == "b").sum() == 40
    assert np.bincount(cell[kept][groups[kept] == "a"]).tolist() == [25, 25, 25, 25]
    assert bounded_rows(groups, [cell], 1_000) is None


def test_too_few_labelled_rows_give_no_verdict(cfg) -> None:
    frame = logged(cfg)
    prediction_log.append(cfg.name, frame)
    labels = outcomes(frame, women_found=30)
    attach(cfg, labels.iloc[::4])  # 100 outcomes of 400, below min_labelled_rows 200
    result = check_bias(cfg, now=NOW)
    assert result.labelled_rows == 100 and result.attributes["sex"].rows == 100
    assert "fewer than min_labelled_rows 200" in result.attributes["sex"].note
    observations = result.observations(cfg, "4")
    assert observations and {o.breached for o in observations} == {None}
    assert all(o.transition is None for o in observe(cfg, observations, actor="a", now=NOW))
    assert audit_store().query(model=cfg.name, action=Action.ALERT_FIRED) == []


def test_a_regression_models_errors_by_an_attribute_logged_beside_the_rows() -> None:
    cfg = get_model_config("readmission")  # race is no feature: the service logs it if given
    n = 900
    rng = np.random.default_rng(0)
    scored_at = pd.Timestamp(NOW - timedelta(days=1))
    race = np.array(["white", "black", None], dtype=object)[np.arange(n) % 3]
    predicted = rng.uniform(2, 8, n)
    frame = pd.DataFrame(
        {
            "patient_id": np.arange(n),
            "event_timestamp": pd.Series(scored_at, index=range(n)),
            "sex": np.where(np.arange(n) % 2, "F", "M"),
            "race": race,
            "prediction": predicted,
            "model_version": "2",
            "scored_at": pd.Series(scored_at, index=range(n)),
        }
    )
    prediction_log.append(cfg.name, frame)
    # the black patients' stays run four days longer than predicted, the others' one day
    error = np.where(race == "black", 4.0, 1.0)
    prediction_log.attach_labels(
        cfg.name,
        frame[["patient_id", "event_timestamp"]].assign(length_of_stay_days=predicted + error),
        entity="patient_id",
        timestamp="event_timestamp",
        label=cfg.label,
    )
    result = check_bias(cfg, now=NOW)
    race_bias = result.attributes["race"]
    assert (race_bias.rows, race_bias.unattributed) == (600, 300)  # no 'missing' group
    assert {g["group"]: g["mae"] for g in race_bias.to_dict()["groups"]} == pytest.approx(
        {"black": 4.0, "white": 1.0}
    )
    assert race_bias.checks["mae_ratio"] is False
    assert result.attributes["sex"].checks["mae_ratio"] is True
    breached = {o.subject for o in result.observations(cfg, "2") if o.breached}
    assert breached == {"race:mae_ratio", "race:mean_residual_difference"}

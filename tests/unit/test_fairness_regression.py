"""Fairness of regression models: per-group errors, the metrics over them, the gate, the report
and the champion comparison of regression metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.governance import PromotionConfig
from mlsteward.governance.champion_gate import champion_comparison_gate
from mlsteward.governance.fairness import (
    AttributeFairness,
    assess_fairness,
    fairness_gate,
    fairness_values,
)
from mlsteward.governance.gates import FAIRNESS, ValidationReport


def regression_config(min_group_size: int = 3, **attr: Any) -> ModelConfig:
    """A regression model whose sensitive column ``race`` is not one of its inputs."""
    return ModelConfig.model_validate(
        {
            "name": "stay",
            "task": "regression",
            "source": {"path": "x.csv", "entity": "id"},
            "label": "y",
            "features": [{"name": "x", "dtype": "float"}],
            "sensitive_attributes": [{"column": "race", "dtype": "category", **attr}],
            "fairness": {"min_group_size": min_group_size},
        }
    )


def tiny_frame() -> pd.DataFrame:
    """A: errors 0.5, 0, 0, 0 (over-predicted once); B: errors -1, +2, 0, +4; two rows without
    a race (the ``missing`` group, too small to gate at min_group_size 3)."""
    return pd.DataFrame(
        {
            "race": ["A"] * 4 + ["B"] * 4 + [None, None],
            "y": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0],
            "p": [1.5, 2.0, 3.0, 4.0, 0.0, 4.0, 3.0, 8.0, 5.0, 6.0],
        }
    )


def assess(df: pd.DataFrame, cfg: ModelConfig) -> AttributeFairness:
    return assess_fairness(df, df["y"], df["p"], None, cfg)["race"]


# -- numbers by hand ---------------------------------------------------------------------------


def test_group_table_equals_hand_computed_numbers() -> None:
    a = assess(tiny_frame(), regression_config())
    assert [g["group"] for g in a.groups] == ["A", "B", "missing"]
    assert a.group("A") == {
        "group": "A",
        "size": 4,
        "mae": 0.125,  # 0.5 / 4
        "rmse": 0.25,  # sqrt(0.25 / 4)
        "mean_residual": 0.125,
        "mean_prediction": 2.625,
        "mean_outcome": 2.5,
        "gated": True,
    }
    b = a.group("B")
    assert b["size"] == 4 and b["mae"] == 1.75  # (1 + 2 + 0 + 4) / 4
    assert b["rmse"] == pytest.approx(math.sqrt((1 + 4 + 0 + 16) / 4))
    assert b["mean_residual"] == 1.25  # (-1 + 2 + 0 + 4) / 4: over-predicted
    assert (b["mean_prediction"], b["mean_outcome"]) == (3.75, 2.5)


def test_metrics_over_gated_groups_equal_hand_computed_ones() -> None:
    a = assess(tiny_frame(), regression_config())
    rmse_b = math.sqrt(21 / 4)
    assert a.metrics == pytest.approx(
        {
            "mae_difference": 1.75 - 0.125,
            "mae_ratio": 1.75 / 0.125,
            "rmse_difference": rmse_b - 0.25,
            "rmse_ratio": rmse_b / 0.25,
            "mean_residual_difference": 1.25 - 0.125,
            "bounded_group_loss": 1.75,  # the worst group's MAE
        }
    )
    assert list(a.metrics) == [
        "mae_difference",
        "mae_ratio",
        "rmse_difference",
        "rmse_ratio",
        "mean_residual_difference",
        "bounded_group_loss",
    ]


def test_missing_and_small_groups_are_reported_not_gated() -> None:
    # C: one row predicted 10 off; counted, it would be the worst group by far
    df = pd.concat(
        [tiny_frame(), pd.DataFrame({"race": ["C"], "y": [1.0], "p": [11.0]})], ignore_index=True
    )
    a = assess(df, regression_config(min_group_size=3))
    assert a.small_groups == ["C", "missing"]
    missing = a.group("missing")
    assert missing["gated"] is False and missing["size"] == 2 and missing["mae"] == 0.5
    assert a.group("C")["mae"] == 10.0
    assert a.metrics["bounded_group_loss"] == 1.75
    assert a.metrics["mae_ratio"] == pytest.approx(14.0)
    with_small = assess(df, regression_config(min_group_size=1))  # now C and missing count
    assert with_small.small_groups == []
    assert with_small.metrics["bounded_group_loss"] == 10.0
    assert with_small.metrics["mae_ratio"] == pytest.approx(10.0 / 0.125)


def test_fewer_than_two_gated_groups_is_not_assessable_and_not_failed() -> None:
    df = tiny_frame().iloc[:6]  # A (4 rows) and two rows of B
    cfg = regression_config(min_group_size=3)
    a = assess(df, cfg)
    assert a.small_groups == ["B"]
    assert all(v is None for v in a.metrics.values())
    assert "cannot be assessed" in a.note
    gate = fairness_gate({"race": a}, cfg)
    assert gate.passed and not gate.violations
    assert "race: mae_ratio not assessable" in gate.note
    assert gate.details["attributes"]["race"]["checks"]["mae_ratio"] is None


def test_a_group_predicted_exactly_leaves_the_error_ratios_undefined() -> None:
    df = tiny_frame()
    df.loc[df["race"] == "A", "p"] = df.loc[df["race"] == "A", "y"]
    a = assess(df, regression_config())
    assert a.group("A")["mae"] == 0.0
    assert a.metrics["mae_ratio"] is None and a.metrics["rmse_ratio"] is None
    assert a.metrics["mae_difference"] == 1.75  # the differences stay defined
    assert "['A'] are predicted exactly" in a.note and "mae_ratio, rmse_ratio" in a.note


def test_bucketed_numeric_attribute_groups_regression_errors() -> None:
    cfg = regression_config(min_group_size=1)
    cfg = ModelConfig.model_validate(
        {
            **cfg.model_dump(exclude_none=True),
            "sensitive_attributes": [{"column": "age", "dtype": "int", "buckets": [45]}],
        }
    )
    df = pd.DataFrame({"age": [30, 50, 70, None], "y": [1.0, 2.0, 3.0, 4.0]})
    a = assess_fairness(df, df["y"], [1.0, 3.0, 5.0, 4.0], None, cfg)["age"]
    assert [(g["group"], g["size"], g["mae"]) for g in a.groups] == [
        ("<45", 1, 0.0),
        (">=45", 2, 1.5),
        ("missing", 1, 0.0),
    ]


def test_bad_input_is_refused_with_a_clear_message() -> None:
    df = tiny_frame()
    cfg = regression_config()
    with pytest.raises(ValueError, match="regression model; it has no cut-off"):
        assess_fairness(df, df["y"], df["p"], 0.5, cfg)
    with pytest.raises(ValueError, match=r"\['race'\] not in the frame"):
        assess_fairness(df.drop(columns="race"), df["y"], df["p"], None, cfg)
    with pytest.raises(ValueError, match="predicted values must be aligned"):
        assess_fairness(df, df["y"], df["p"][:-1], None, cfg)
    with_gap = df["y"].astype("Float64")
    with_gap[3] = pd.NA
    with pytest.raises(
        ValueError, match=r"1 outcome\(s\) missing or not finite \(first rows \[3\]"
    ):
        assess_fairness(df, with_gap, df["p"], None, cfg)


def test_classification_still_needs_its_cut_off() -> None:
    cfg = ModelConfig.model_validate(
        {
            "name": "hand",
            "task": "binary_classification",
            "source": {"path": "x.csv", "entity": "id"},
            "label": "y",
            "features": [{"name": "g", "dtype": "category"}],
            "sensitive_attributes": ["g"],
        }
    )
    df = pd.DataFrame({"g": ["a", "b"], "y": [0, 1]})
    with pytest.raises(ValueError, match="classification model; labels need its cut-off"):
        assess_fairness(df, df["y"], [0.2, 0.8], None, cfg)


def test_regression_assessment_round_trips_through_strict_json() -> None:
    a = assess(tiny_frame(), regression_config())
    back = AttributeFairness.from_dict(json.loads(json.dumps(a.to_dict(), allow_nan=False)))
    assert back == a


# -- the gate ----------------------------------------------------------------------------------


def test_gate_messages_name_the_groups_and_their_errors() -> None:
    cfg = regression_config(limits={"mean_residual_difference": {"max": 1.0}})
    gate = fairness_gate({"race": assess(tiny_frame(), cfg)}, cfg)
    assert gate.name == FAIRNESS and not gate.passed
    by_metric = {v.metric: v for v in gate.violations}
    assert set(by_metric) == {"mae_ratio", "mean_residual_difference"}
    ratio = by_metric["mae_ratio"]
    assert ratio.rule == "race: mae_ratio <= 1.25" and ratio.attribute == "race"
    assert (ratio.value, ratio.limit) == (pytest.approx(14.0), 1.25)
    assert ratio.message == "race: mae_ratio 14 > 1.25 (A: mae 0.12 n=4; B: mae 1.8 n=4)"
    assert ratio.groups == {
        "A": {
            "size": 4,
            "mae": 0.125,
            "rmse": 0.25,
            "mean_residual": 0.125,
            "mean_prediction": 2.625,
            "mean_outcome": 2.5,
        },
        "B": pytest.approx(
            {
                "size": 4,
                "mae": 1.75,
                "rmse": math.sqrt(21 / 4),
                "mean_residual": 1.25,
                "mean_prediction": 3.75,
                "mean_outcome": 2.5,
            }
        ),
    }
    residual = by_metric["mean_residual_difference"]
    assert residual.message == (
        "race: mean_residual_difference 1.125 > 1 "
        "(A: mean residual 0.12 n=4; B: mean residual 1.2 n=4)"
    )
    checks = gate.details["attributes"]["race"]["checks"]
    assert checks["mae_difference"] is None  # reported only by default
    assert checks["mae_ratio"] is False and checks["mean_residual_difference"] is False
    json.dumps(gate.to_dict(), allow_nan=False)


def test_fairness_values_keep_the_gated_regression_metrics() -> None:
    cfg = regression_config(limits={"bounded_group_loss": {"max": 3.0}})
    a = assess_fairness(tiny_frame(), tiny_frame()["y"], tiny_frame()["p"], None, cfg)
    assert set(fairness_values(a)["race"]) == set(a["race"].metrics)
    assert fairness_values(a, cfg) == {
        "race": {"mae_ratio": pytest.approx(14.0), "bounded_group_loss": 1.75}
    }


# -- a real model: errors much larger for one group ----------------------------------------


def stays(n: int, seed: int, b_error: float) -> pd.DataFrame:
    """Outcome 2x + 5 for everyone; the model's input is x as recorded, which for group B
    carries a measurement error of sd ``b_error`` (a measurement that works for one group)."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B"], size=n)
    truth = rng.uniform(0, 10, n)
    y = 2 * truth + 5 + rng.normal(0, 0.5, n)
    recorded = truth + np.where(race == "B", rng.normal(0, b_error, n) if b_error else 0.0, 0.0)
    return pd.DataFrame({"race": race, "x": recorded, "y": y})


def fit_and_assess(b_error: float, cfg: ModelConfig) -> dict[str, AttributeFairness]:
    train, test = stays(1_200, 1, b_error), stays(600, 2, b_error)
    model = xgb.XGBRegressor(n_estimators=80, max_depth=3, learning_rate=0.2, n_jobs=1)
    prediction = model.fit(train[["x"]], train["y"]).predict(test[["x"]])
    return assess_fairness(test, test["y"], prediction, None, cfg)


def test_gate_catches_a_model_much_worse_for_one_group_and_passes_an_unbiased_one() -> None:
    cfg = regression_config(min_group_size=30)
    biased = fit_and_assess(3.0, cfg)
    gate = fairness_gate(biased, cfg)
    assert not gate.passed
    (violation,) = gate.violations
    assert violation.metric == "mae_ratio" and violation.value is not None
    a, b = biased["race"].group("A"), biased["race"].group("B")
    assert violation.value == pytest.approx(b["mae"] / a["mae"])
    assert violation.value > 2  # B's errors carry the measurement error, A's only noise
    assert f"A: mae {a['mae']:.2g} n={a['size']}; B: mae {b['mae']:.2g} n={b['size']}" in (
        violation.message
    )
    unbiased = fit_and_assess(0.0, cfg)
    clean_gate = fairness_gate(unbiased, cfg)
    assert clean_gate.passed, [v.message for v in clean_gate.violations]
    ratio = unbiased["race"].metrics["mae_ratio"]
    assert ratio is not None and ratio < 1.25
    loss = unbiased["race"].metrics["bounded_group_loss"]
    assert loss is not None and loss < biased["race"].metrics["bounded_group_loss"] / 3


# -- the report --------------------------------------------------------------------------------


def test_markdown_report_renders_the_regression_group_table() -> None:
    cfg = regression_config()
    gate = fairness_gate({"race": assess(tiny_frame(), cfg)}, cfg)
    report = ValidationReport(model="stay", version="2", gates=[gate])
    md = report.to_markdown()
    header = "| group | n | MAE | RMSE | mean residual | mean prediction | mean outcome | gated |"
    assert header in md
    assert "| A | 4 | 0.125 | 0.25 | 0.125 | 2.625 | 2.5 | yes |" in md
    assert "| missing | 2 | 0.5 | 0.7071 | 0.5 | 5.5 | 5 | no |" in md
    assert "| mae_ratio | 14 | n/a | 1.25 | **FAIL** |" in md
    assert "positive is over-prediction" in md
    assert "selection rate" not in md and "TPR" not in md
    # a stored report (JSON) renders the same
    stored = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert ValidationReport.from_dict(stored).to_markdown() == md


# -- champion comparison on regression metrics ----------------------------------------------


@pytest.mark.parametrize(
    ("challenger", "passed"), [(1.9, True), (2.0, False), (2.1, False)], ids=str
)
def test_rmse_primary_metric_lower_is_better(challenger: float, passed: bool) -> None:
    g = champion_comparison_gate(
        {"rmse": challenger, "r2": 0.5},
        {"rmse": 2.0, "r2": 0.5},
        None,
        None,
        PromotionConfig(primary_metric="rmse"),
        champion_version="1",
    )
    assert g.passed is passed
    assert g.details["primary"]["direction"] == "lower is better"
    assert g.details["primary"]["improvement"] == pytest.approx(2.0 - challenger)
    if not passed:
        (v,) = g.violations
        assert v.metric == "rmse" and "(lower is better)" in v.message
        assert f"rmse {challenger:g} vs champion v1 2" in v.message


@pytest.mark.parametrize(("challenger", "passed"), [(0.62, True), (0.58, False)], ids=str)
def test_r2_primary_metric_higher_is_better(challenger: float, passed: bool) -> None:
    g = champion_comparison_gate(
        {"r2": challenger}, {"r2": 0.6}, None, None, PromotionConfig(primary_metric="r2")
    )
    assert g.passed is passed
    assert g.details["primary"]["direction"] == "higher is better"
    assert g.details["primary"]["improvement"] == pytest.approx(challenger - 0.6)


def test_relative_min_delta_on_rmse() -> None:
    promotion = PromotionConfig(primary_metric="rmse", min_delta=0.05, delta_mode="relative")
    ok = champion_comparison_gate({"rmse": 1.9}, {"rmse": 2.0}, None, None, promotion)
    short = champion_comparison_gate({"rmse": 1.95}, {"rmse": 2.0}, None, None, promotion)
    assert ok.passed and not short.passed
    assert "needs an improvement of at least 0.05" in short.violations[0].message


def test_regression_fairness_worsening_beyond_tolerance_fails() -> None:
    better = {"rmse": 1.9}
    champion = {"rmse": 2.0}
    champ_fair = {"race": {"mae_ratio": 1.10, "bounded_group_loss": 3.0}}
    worse = {"race": {"mae_ratio": 1.20, "bounded_group_loss": 2.5}}
    promotion = PromotionConfig(primary_metric="rmse", fairness_tolerance=0.05)
    g = champion_comparison_gate(better, champion, worse, champ_fair, promotion, "4")
    assert not g.passed
    (v,) = g.violations
    assert (v.attribute, v.metric) == ("race", "mae_ratio")
    assert v.message == (
        "race: mae_ratio worsened from 1.1 (champion v4) to 1.2 (higher is worse): "
        "+0.1 exceeds the tolerance 0.05"
    )
    fairness = g.details["fairness"]["race"]
    assert fairness["bounded_group_loss"]["passed"] is True  # it improved
    assert fairness["bounded_group_loss"]["worsening"] == pytest.approx(-0.5)
    within = {"race": {"mae_ratio": 1.14, "bounded_group_loss": 3.04}}
    assert champion_comparison_gate(better, champion, within, champ_fair, promotion, "4").passed

"""Fairness across sensitive groups: grouping, hand-checked numbers, the gate, and the demo."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.sections.governance import SensitiveAttribute
from mlsteward.data.synthetic import Shift, generate_cohort
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance.fairness import (
    AttributeFairness,
    assess_fairness,
    bucket_labels,
    fairness_gate,
    fairness_values,
    group_labels,
)
from mlsteward.governance.gates import FAIRNESS
from mlsteward.training.fitting import (
    TuningResult,
    base_params,
    fit_final,
    make_dmatrix,
    time_split,
)
from mlsteward.training.metrics import choose_threshold

# -- group_labels ----------------------------------------------------------------------------


def test_default_bucket_labels_and_left_closed_edges() -> None:
    attr = SensitiveAttribute(column="age", buckets=[45, 65])
    assert bucket_labels(attr) == ["<45", "45-65", ">=65"]
    values = pd.Series([18, 44.9, 45, 64, 65, 99, np.nan], index=list("abcdefg"))
    out = group_labels(values, attr)
    assert out.tolist() == ["<45", "<45", "45-65", "45-65", ">=65", ">=65", "missing"]
    assert out.index.tolist() == list("abcdefg")


def test_configured_bucket_labels_and_fractional_edges() -> None:
    attr = SensitiveAttribute(column="bmi", buckets=[18.5, 25, 30], labels=["u", "n", "o", "ob"])
    out = group_labels(pd.Series([17.0, 18.5, 29.9, 30.0, None]), attr)
    assert out.tolist() == ["u", "n", "o", "ob", "missing"]
    assert bucket_labels(SensitiveAttribute(column="x", buckets=[2.5])) == ["<2.5", ">=2.5"]


def test_nullable_integer_column_is_bucketed() -> None:
    attr = SensitiveAttribute(column="age", buckets=[45])
    out = group_labels(pd.Series([30, None, 50], dtype="Int64"), attr)
    assert out.tolist() == ["<45", "missing", ">=45"]


def test_categorical_values_become_strings_and_nan_missing() -> None:
    attr = SensitiveAttribute(column="sex")
    out = group_labels(pd.Series(["F", None, "M", np.nan]), attr)
    assert out.tolist() == ["F", "missing", "M", "missing"]
    flags = group_labels(pd.Series([True, False, None], dtype="boolean"), attr)
    assert flags.tolist() == ["True", "False", "missing"]


# -- assess_fairness on hand-made data -------------------------------------------------------


def hand_config(min_group_size: int = 5, **attr: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "hand",
            "task": "binary_classification",
            "source": {"path": "x.csv", "entity": "id"},
            "label": "y",
            "features": [{"name": "g", "dtype": "category"}, {"name": "age", "dtype": "int"}],
            "sensitive_attributes": [{"column": "g", **attr}],
            "fairness": {"min_group_size": min_group_size},
        }
    )


def hand_data(extra: list[tuple[str, int, float]] | None = None) -> pd.DataFrame:
    """Group A: selection 2/8, TPR 2/4, FPR 0/4. Group B: selection 4/8, TPR 2/4, FPR 2/4.

    So demographic parity difference 0.25 and ratio 0.5, equal opportunity 0, equalized odds
    0.5 (the FPR gap).
    """
    rows = [
        *[("A", 1, p) for p in (0.9, 0.9, 0.1, 0.1)],
        *[("A", 0, p) for p in (0.1, 0.1, 0.1, 0.1)],
        *[("B", 1, p) for p in (0.9, 0.5, 0.2, 0.2)],  # 0.5 is exactly the cut-off: predicted 1
        *[("B", 0, p) for p in (0.8, 0.7, 0.3, 0.3)],
        *(extra or []),
    ]
    return pd.DataFrame(rows, columns=["g", "y", "p"])


def assess(df: pd.DataFrame, cfg: ModelConfig) -> AttributeFairness:
    return assess_fairness(df, df["y"], df["p"], 0.5, cfg)["g"]


def test_hand_computed_metrics_and_groups() -> None:
    a = assess(hand_data(), hand_config())
    assert a.metrics == pytest.approx(
        {
            "demographic_parity_difference": 0.25,
            "demographic_parity_ratio": 0.5,
            "equal_opportunity_difference": 0.0,
            "equalized_odds_difference": 0.5,
        }
    )
    assert a.group("A") == {
        "group": "A",
        "size": 8,
        "positives": 4,
        "selection_rate": 0.25,
        "tpr": 0.5,
        "fpr": 0.0,
        "roc_auc": 0.75,  # 2 positives above every negative, 2 tied with all 4: (8 + 4) / 16
        "gated": True,
    }
    b = a.group("B")
    assert (b["selection_rate"], b["tpr"], b["fpr"]) == (0.5, 0.5, 0.5)
    assert b["roc_auc"] == pytest.approx(0.375)  # pairs won: 0.9 beats 4, 0.5 beats 2 -> 6/16
    assert a.small_groups == [] and a.note == ""


def test_small_groups_are_reported_not_gated() -> None:
    # group C (3 rows, everyone selected) would make parity look terrible if it counted
    df = hand_data([("C", 1, 0.9), ("C", 0, 0.9), ("C", 0, 0.9)])
    a = assess(df, hand_config(min_group_size=5))
    assert a.small_groups == ["C"]
    c = a.group("C")
    assert c["gated"] is False and c["size"] == 3 and c["selection_rate"] == 1.0
    assert c["fpr"] == 1.0
    assert a.metrics["demographic_parity_difference"] == pytest.approx(0.25)
    assert a.metrics["equalized_odds_difference"] == pytest.approx(0.5)
    with_c = assess(df, hand_config(min_group_size=3))  # now C counts
    assert with_c.metrics["demographic_parity_difference"] == pytest.approx(0.75)


def test_group_without_positives_has_undefined_tpr_and_is_left_out_of_equal_opportunity() -> None:
    # D: 6 negatives, none selected. fairlearn alone would report TPR 0 for D and an equal
    # opportunity gap of 0.5; the TPR is undefined there, so D must not count.
    df = hand_data([("D", 0, 0.1)] * 6)
    a = assess(df, hand_config())
    d = a.group("D")
    assert d["tpr"] is None and d["fpr"] == 0.0 and d["roc_auc"] is None
    assert a.metrics["equal_opportunity_difference"] == pytest.approx(0.0)
    assert a.metrics["demographic_parity_ratio"] == pytest.approx(0.0)  # D selects nobody
    assert "['D'] have no positives" in a.note


def test_fewer_than_two_gated_groups_is_not_assessable() -> None:
    df = hand_data()
    df = df[(df["g"] == "A") | (df.index == 8)]  # A (8 rows) and one row of B
    cfg = hand_config()
    a = assess(df, cfg)
    assert a.small_groups == ["B"]
    assert all(v is None for v in a.metrics.values())
    assert "cannot be assessed" in a.note
    gate = fairness_gate({"g": a}, cfg)
    assert gate.passed and "not assessable" in gate.note  # noted, not failed
    assert gate.details["attributes"]["g"]["checks"]["equalized_odds_difference"] is None


def test_bucketed_groups_follow_bucket_order() -> None:
    cfg = ModelConfig.model_validate(
        {
            "name": "hand",
            "task": "binary_classification",
            "source": {"path": "x.csv", "entity": "id"},
            "label": "y",
            "features": [{"name": "age", "dtype": "int"}],
            "sensitive_attributes": [{"column": "age", "buckets": [45, 65]}],
            "fairness": {"min_group_size": 1},
        }
    )
    df = pd.DataFrame({"age": [70, 30, 50, np.nan, 66, 31], "y": [1, 0, 1, 0, 0, 1]})
    a = assess_fairness(df, df["y"], np.full(6, 0.7), 0.5, cfg)["age"]
    assert [g["group"] for g in a.groups] == ["<45", "45-65", ">=65", "missing"]
    assert [g["size"] for g in a.groups] == [2, 1, 2, 1]


def test_misaligned_inputs_and_missing_columns_raise() -> None:
    df = hand_data()
    cfg = hand_config()
    with pytest.raises(ValueError, match="aligned"):
        assess_fairness(df, df["y"], df["p"][:-1], 0.5, cfg)
    with pytest.raises(ValueError, match=r"\['g'\] not in the frame"):
        assess_fairness(df.drop(columns="g"), df["y"], df["p"], 0.5, cfg)


def test_attribute_fairness_round_trips_through_strict_json() -> None:
    a = assess(hand_data([("D", 0, 0.1)] * 6), hand_config())
    text = json.dumps(a.to_dict(), allow_nan=False)
    back = AttributeFairness.from_dict(json.loads(text))
    assert back == AttributeFairness.from_dict(a.to_dict())
    assert back.group("D")["tpr"] is None and back.metrics == a.metrics


# -- the gate --------------------------------------------------------------------------------


def test_gate_violation_carries_and_states_group_numbers() -> None:
    cfg = hand_config()  # default limits: parity ratio >= 0.8, equalized odds <= 0.1
    gate = fairness_gate(assess_fairness(hand_data(), *_yp(hand_data()), 0.5, cfg), cfg)
    assert gate.name == FAIRNESS and not gate.passed
    by_metric = {v.metric: v for v in gate.violations}
    assert set(by_metric) == {"demographic_parity_ratio", "equalized_odds_difference"}
    eo = by_metric["equalized_odds_difference"]
    assert eo.attribute == "g" and eo.rule == "g: equalized_odds_difference <= 0.1"
    assert (eo.value, eo.limit) == (pytest.approx(0.5), 0.1)
    assert eo.message == (
        "g: equalized_odds_difference 0.5 > 0.1 (A: tpr 0.5 fpr 0 n=8; B: tpr 0.5 fpr 0.5 n=8)"
    )
    assert eo.groups is not None and eo.groups["B"]["fpr"] == 0.5 and eo.groups["A"]["size"] == 8
    dp = by_metric["demographic_parity_ratio"]
    assert dp.message.startswith("g: demographic_parity_ratio 0.5 < 0.8 (A: selection rate 0.25")
    json.dumps(gate.to_dict(), allow_nan=False)


def _yp(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    return df["y"], df["p"]


def test_empty_bound_reports_without_gating() -> None:
    cfg = hand_config(
        limits={"demographic_parity_ratio": {}, "equalized_odds_difference": {"max": 0.6}}
    )
    gate = fairness_gate(assess_fairness(hand_data(), *_yp(hand_data()), 0.5, cfg), cfg)
    assert gate.passed, [v.message for v in gate.violations]
    g = gate.details["attributes"]["g"]
    assert g["checks"]["demographic_parity_ratio"] is None  # reported only
    assert g["metrics"]["demographic_parity_ratio"] == pytest.approx(0.5)
    assert g["checks"]["equalized_odds_difference"] is True
    assert g["limits"]["equalized_odds_difference"] == {"min": None, "max": 0.6}


def test_fairness_values_shape_and_gated_only_filter() -> None:
    cfg = hand_config(limits={"demographic_parity_ratio": {}})
    a = assess_fairness(hand_data(), *_yp(hand_data()), 0.5, cfg)
    every = fairness_values(a)
    assert every["g"]["demographic_parity_ratio"] == pytest.approx(0.5)
    assert set(every["g"]) == {
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equal_opportunity_difference",
        "equalized_odds_difference",
    }
    gated = fairness_values(a, cfg)  # parity difference ({} by default) and ratio (override)
    assert set(gated["g"]) == {"equal_opportunity_difference", "equalized_odds_difference"}


# -- end to end: the demo cohort, a real XGBoost fit, the shipped config ----------------------

PARAMS = {
    "max_depth": 4,
    "learning_rate": 0.1,
    "min_child_weight": 2.0,
    "subsample": 0.9,
    "colsample_bytree": 0.8,
}
DISTORTED = Shift(label_distortion={"column": "sex", "value": "F", "flip_positive_rate": 0.5})


def fit_and_assess(cfg: ModelConfig, shift: Shift | None) -> dict[str, AttributeFairness]:
    """Train like the flow does (time split, encoding, early stopping, max-F1 cut-off), with
    fixed params instead of a search, and assess the test split."""
    df = generate_cohort(n_rows=6_000, seed=0, shift=shift)
    df["row_id"] = np.arange(len(df))
    split = time_split(df, cfg.timestamp_column, cfg.split.train, cfg.split.validation)
    enc = make_encoding(cfg, {f.name: f.dtype for f in cfg.features}, split.train)
    x_train, x_val, x_test = (encode(p, enc) for p in (split.train, split.validation, split.test))
    y_train, y_val = split.train[cfg.label], split.validation[cfg.label]
    booster = xgb.train(
        {**base_params(cfg.tuning, 42), **PARAMS, "nthread": 2},
        make_dmatrix(x_train, y_train, enc),
        num_boost_round=300,
        evals=[(make_dmatrix(x_val, y_val, enc), "validation")],
        early_stopping_rounds=30,
        verbose_eval=False,
    )
    result = TuningResult(PARAMS, int(booster.best_iteration), 0.0, [], 42)
    model = fit_final(x_train, y_train, enc, cfg.tuning, result)
    threshold = choose_threshold(y_val.to_numpy(), model.predict_proba(x_val)[:, 1], "max_f1", 0.5)
    proba = model.predict_proba(x_test)[:, 1]
    return assess_fairness(split.test, split.test[cfg.label], proba, threshold, cfg)


@pytest.fixture(scope="module")
def demo() -> tuple[ModelConfig, dict[str, AttributeFairness], dict[str, AttributeFairness]]:
    cfg = get_model_config("heart_disease")
    return cfg, fit_and_assess(cfg, None), fit_and_assess(cfg, DISTORTED)


def test_clean_demo_model_passes_the_shipped_fairness_limits(demo: Any) -> None:
    cfg, clean, _ = demo
    gate = fairness_gate(clean, cfg)
    assert gate.passed, [v.message for v in gate.violations]
    sex = clean["sex"].metrics
    limits = cfg.fairness.limits_for(cfg.sensitive_attributes[0])
    assert sex["equal_opportunity_difference"] < limits["equal_opportunity_difference"].max
    # groups are large and computed consistently: the EO gap is the TPR gap
    f, m = clean["sex"].group("F"), clean["sex"].group("M")
    assert sex["equal_opportunity_difference"] == pytest.approx(abs(f["tpr"] - m["tpr"]))
    assert min(f["size"], m["size"]) >= cfg.fairness.min_group_size


def test_label_distorted_demo_model_fails_on_sex_only(demo: Any) -> None:
    cfg, clean, distorted = demo
    gate = fairness_gate(distorted, cfg)
    assert not gate.passed
    assert {v.attribute for v in gate.violations} == {"sex"}
    assert "equal_opportunity_difference" in {v.metric for v in gate.violations}
    # under-diagnosed women: the model finds far fewer of the (remaining) sick women
    f, m = distorted["sex"].group("F"), distorted["sex"].group("M")
    assert f["tpr"] < m["tpr"] - 0.2
    assert (
        distorted["sex"].metrics["equal_opportunity_difference"]
        > clean["sex"].metrics["equal_opportunity_difference"] + 0.15
    )
    eo = next(v for v in gate.violations if v.metric == "equal_opportunity_difference")
    assert eo.groups is not None and set(eo.groups) == {"F", "M"}
    assert "F: tpr" in eo.message and "M: tpr" in eo.message

"""Validation gates: thresholds, challenger vs champion, and the report that collects them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlsteward.config.sections.governance import MetricBound, PromotionConfig
from mlsteward.governance.champion_gate import champion_comparison_gate
from mlsteward.governance.gates import (
    CHAMPION_COMPARISON,
    FAIRNESS,
    METRIC_THRESHOLDS,
    GateResult,
    ValidationReport,
    Violation,
    plain,
)
from mlsteward.governance.threshold_gate import metric_threshold_gate

GOOD = {"roc_auc": 0.86, "brier": 0.14, "log_loss": 0.42, "f1": 0.71, "rows": 7500.0}
THRESHOLDS = {"roc_auc": MetricBound(min=0.75), "brier": MetricBound(max=0.2)}


# -- metric thresholds ----------------------------------------------------------------------


def test_thresholds_pass_with_all_numbers_in_details() -> None:
    g = metric_threshold_gate(GOOD, THRESHOLDS)
    assert g.passed and g.violations == [] and g.name == METRIC_THRESHOLDS
    assert g.details["checks"]["roc_auc"] == {
        "value": 0.86,
        "min": 0.75,
        "max": None,
        "passed": True,
    }
    assert g.details["metrics"]["f1"] == 0.71  # ungated numbers are kept too


def test_threshold_floor_and_ceiling_both_reported() -> None:
    g = metric_threshold_gate({**GOOD, "roc_auc": 0.71, "brier": 0.25}, THRESHOLDS)
    assert not g.passed
    by_metric = {v.metric: v for v in g.violations}
    assert set(by_metric) == {"roc_auc", "brier"}  # every violation, not just the first
    auc = by_metric["roc_auc"]
    assert (auc.rule, auc.value, auc.limit) == ("roc_auc >= 0.75", 0.71, 0.75)
    assert "0.71" in auc.message and "0.75" in auc.message and "below" in auc.message
    brier = by_metric["brier"]
    assert brier.rule == "brier <= 0.2" and "above" in brier.message and "0.25" in brier.message


def test_threshold_limits_are_inclusive() -> None:
    g = metric_threshold_gate({"roc_auc": 0.75, "brier": 0.2}, THRESHOLDS)
    assert g.passed, g.violations


def test_threshold_with_min_and_max() -> None:
    bound = {"f1": MetricBound(min=0.5, max=0.9)}
    assert metric_threshold_gate({"f1": 0.7}, bound).passed
    high = metric_threshold_gate({"f1": 0.95}, bound)
    assert [v.rule for v in high.violations] == ["f1 <= 0.9"]
    low = metric_threshold_gate({"f1": 0.4}, bound)
    assert [v.rule for v in low.violations] == ["f1 >= 0.5"]


def test_threshold_message_never_shows_equal_numbers() -> None:
    g = metric_threshold_gate({"roc_auc": 0.7499999, "brier": 0.1}, THRESHOLDS)
    (v,) = g.violations
    assert "0.75 is below the floor 0.75" not in v.message
    assert "0.7499999" in v.message


@pytest.mark.parametrize("value", [float("nan"), np.float64("nan")])
def test_nan_metric_is_a_violation(value: float) -> None:
    g = metric_threshold_gate({**GOOD, "roc_auc": value}, THRESHOLDS)
    assert not g.passed
    (v,) = g.violations
    assert v.metric == "roc_auc" and v.value is None and "nan" in v.message.lower()
    assert "cannot be checked" in v.message
    assert g.details["checks"]["roc_auc"]["value"] is None  # NaN never reaches JSON
    json.dumps(g.to_dict(), allow_nan=False)


def test_missing_metric_is_a_violation() -> None:
    g = metric_threshold_gate({"brier": 0.1}, THRESHOLDS)
    (v,) = g.violations
    assert v.metric == "roc_auc" and "missing" in v.message


def test_no_thresholds_passes_with_note() -> None:
    g = metric_threshold_gate(GOOD, {"roc_auc": MetricBound()})
    assert g.passed and g.details["checks"] == {} and "no thresholds" in g.note


# -- challenger vs champion ------------------------------------------------------------------


def promo(**kw: object) -> PromotionConfig:
    return PromotionConfig(**kw)


def test_no_champion_passes_with_note() -> None:
    g = champion_comparison_gate(GOOD, None, None, None, promo())
    assert g.passed and g.name == CHAMPION_COMPARISON
    assert g.note.startswith("no champion yet")
    assert g.details["champion_version"] is None


def test_better_challenger_passes_with_both_sides_in_details() -> None:
    champ = {**GOOD, "roc_auc": 0.85}
    g = champion_comparison_gate(GOOD, champ, None, None, promo(), champion_version="3")
    assert g.passed, g.violations
    p = g.details["primary"]
    assert p["challenger"] == 0.86 and p["champion"] == 0.85
    assert p["improvement"] == pytest.approx(0.01)
    assert g.details["metrics"]["roc_auc"]["delta"] == pytest.approx(0.01)
    assert g.details["champion_version"] == "3"


def test_equal_fails_when_min_delta_is_zero() -> None:
    g = champion_comparison_gate(GOOD, dict(GOOD), None, None, promo(), champion_version="3")
    assert not g.passed
    (v,) = g.violations
    assert v.metric == "roc_auc" and "strictly better" in v.message and "v3" in v.message


def test_worse_challenger_fails() -> None:
    g = champion_comparison_gate(GOOD, {**GOOD, "roc_auc": 0.87}, None, None, promo())
    (v,) = g.violations
    assert v.value == 0.86 and v.limit == 0.87 and "-0.01" in v.message


@pytest.mark.parametrize(
    ("challenger", "passed"),
    [(0.83, True), (0.8299, False), (0.85, True), (0.81, False)],
)
def test_absolute_min_delta_is_inclusive(challenger: float, passed: bool) -> None:
    # 0.83 - 0.80 is 0.0299999... in floating point and must still count as 0.03
    g = champion_comparison_gate(
        {"roc_auc": challenger},
        {"roc_auc": 0.80},
        None,
        None,
        promo(min_delta=0.03, delta_mode="absolute"),
    )
    assert g.passed is passed


def test_relative_min_delta_is_a_share_of_the_champion() -> None:
    cfg = promo(min_delta=0.05, delta_mode="relative")
    # champion 0.60: +0.03 absolute is +5% relative -> passes
    ok = champion_comparison_gate({"roc_auc": 0.63}, {"roc_auc": 0.60}, None, None, cfg)
    assert ok.passed and ok.details["primary"]["improvement"] == pytest.approx(0.05)
    # champion 0.80: the same +0.03 is only +3.75% -> fails, although +0.03 absolute
    bad = champion_comparison_gate({"roc_auc": 0.83}, {"roc_auc": 0.80}, None, None, cfg)
    assert not bad.passed and "3.75% relative" in bad.violations[0].message
    absolute = promo(min_delta=0.03, delta_mode="absolute")
    same = champion_comparison_gate({"roc_auc": 0.83}, {"roc_auc": 0.80}, None, None, absolute)
    assert same.passed


def test_lower_is_better_primary_metric() -> None:
    cfg = promo(primary_metric="brier")
    better = champion_comparison_gate({"brier": 0.12}, {"brier": 0.14}, None, None, cfg)
    assert better.passed
    assert better.details["primary"]["improvement"] == pytest.approx(0.02)
    assert better.details["primary"]["direction"] == "lower is better"
    worse = champion_comparison_gate({"brier": 0.16}, {"brier": 0.14}, None, None, cfg)
    assert not worse.passed and "lower is better" in worse.violations[0].message


def test_missing_primary_metric_on_champion_fails() -> None:
    g = champion_comparison_gate(GOOD, {"brier": 0.1}, None, None, promo())
    (v,) = g.violations
    assert "champion" in v.message and "undefined" in v.message


def test_fairness_worsened_beyond_tolerance_fails_naming_attribute_and_metric() -> None:
    champ_fair = {
        "sex": {"equalized_odds_difference": 0.08, "demographic_parity_ratio": 0.90},
        "age": {"equal_opportunity_difference": 0.10},
    }
    chall_fair = {
        "sex": {"equalized_odds_difference": 0.13, "demographic_parity_ratio": 0.89},
        "age": {"equal_opportunity_difference": 0.05},  # improved: fine
    }
    g = champion_comparison_gate(
        GOOD,
        {**GOOD, "roc_auc": 0.80},
        chall_fair,
        champ_fair,
        promo(fairness_tolerance=0.02),
        champion_version="7",
    )
    assert not g.passed
    (v,) = g.violations  # the primary metric improved; only the fairness rule broke
    assert (v.attribute, v.metric) == ("sex", "equalized_odds_difference")
    assert v.message.startswith("sex: equalized_odds_difference worsened from 0.08")
    assert "0.13" in v.message and "0.02" in v.message
    sex = g.details["fairness"]["sex"]
    assert sex["equalized_odds_difference"]["worsening"] == pytest.approx(0.05)
    assert sex["demographic_parity_ratio"]["passed"] is True  # ratio fell 0.01: within 0.02
    assert g.details["fairness"]["age"]["equal_opportunity_difference"]["passed"] is True


def test_fairness_ratio_falling_is_worsening() -> None:
    g = champion_comparison_gate(
        GOOD,
        {**GOOD, "roc_auc": 0.80},
        {"sex": {"demographic_parity_ratio": 0.70}},
        {"sex": {"demographic_parity_ratio": 0.90}},
        promo(fairness_tolerance=0.05),
    )
    (v,) = g.violations
    assert v.metric == "demographic_parity_ratio" and "lower is worse" in v.message


def test_fairness_only_compared_where_both_sides_have_it() -> None:
    g = champion_comparison_gate(
        GOOD,
        {**GOOD, "roc_auc": 0.80},
        {"sex": {"equalized_odds_difference": 0.5}, "age": {"equalized_odds_difference": 0.9}},
        {"sex": {"equal_opportunity_difference": 0.1}},
        promo(),
    )
    assert g.passed and g.details["fairness"] == {}


# -- the report ------------------------------------------------------------------------------


def make_report() -> ValidationReport:
    thresholds = metric_threshold_gate({**GOOD, "roc_auc": 0.71}, THRESHOLDS)
    fairness = GateResult(
        name=FAIRNESS,
        passed=False,
        violations=[
            Violation(
                gate=FAIRNESS,
                rule="sex: equalized_odds_difference <= 0.1",
                metric="equalized_odds_difference",
                value=0.23,
                limit=0.1,
                message="sex: equalized_odds_difference 0.23 > 0.1 "
                "(F: tpr 0.41 fpr 0.05 n=812; M: tpr 0.78 fpr 0.09 n=790)",
                attribute="sex",
                groups={
                    "F": {"size": 812, "tpr": 0.41, "fpr": 0.05},
                    "M": {"size": 790, "tpr": 0.78, "fpr": 0.09},
                },
            )
        ],
        details={
            "min_group_size": 30,
            "attributes": {
                "sex": {
                    "metrics": {"equalized_odds_difference": np.float64(0.23)},
                    "limits": {"equalized_odds_difference": {"min": None, "max": 0.1}},
                    "checks": {"equalized_odds_difference": False},
                    "groups": [
                        {"group": "F", "size": np.int64(812), "tpr": 0.41, "roc_auc": math.nan},
                        {"group": "M", "size": 790, "tpr": 0.78, "roc_auc": 0.8},
                    ],
                }
            },
        },
    )
    comparison = champion_comparison_gate(GOOD, None, None, None, promo())
    return ValidationReport(
        model="heart_disease",
        version="4",
        gates=[thresholds, fairness, comparison],
        created_at="2025-01-01T00:00:00+00:00",
    )


def test_report_passed_violations_and_reasons() -> None:
    r = make_report()
    assert not r.passed
    assert [v.gate for v in r.violations] == [METRIC_THRESHOLDS, FAIRNESS]
    assert len(r.reasons()) == 2 and r.reasons()[1].startswith("sex: equalized_odds")
    ok = ValidationReport("m", "1", [r.gates[2]], created_at="2025-01-01T00:00:00+00:00")
    assert ok.passed and ok.violations == [] and ok.reasons() == []
    assert ok.summary().startswith("PASSED")


def test_report_round_trips_and_is_strict_json() -> None:
    r = make_report()
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)  # numpy types and NaN are gone
    back = ValidationReport.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert back.violations[1].groups == {
        "F": {"size": 812, "tpr": 0.41, "fpr": 0.05},
        "M": {"size": 790, "tpr": 0.78, "fpr": 0.09},
    }
    groups = d["gates"][1]["details"]["attributes"]["sex"]["groups"]
    assert groups[0]["roc_auc"] is None and type(groups[0]["size"]) is int
    assert d["passed"] is False and back.passed is False
    assert back.gates[2].note == r.gates[2].note


def test_default_created_at_is_utc_iso() -> None:
    r = ValidationReport("m", "1", [])
    assert r.created_at.endswith("+00:00")


def test_summary_is_short_and_names_every_gate() -> None:
    s = make_report().summary()
    assert s.startswith("REJECTED: heart_disease v4 failed 2 of 3 gate(s)")
    for name in (METRIC_THRESHOLDS, FAIRNESS, CHAMPION_COMPARISON):
        assert name in s
    assert "roc_auc 0.71 is below the floor 0.75" in s and "no champion yet" in s


def test_summary_stays_under_2000_chars_with_many_violations() -> None:
    many = [
        Violation(FAIRNESS, f"rule {i}", "m", 1.0, 0.5, f"violation number {i} " + "x" * 80)
        for i in range(200)
    ]
    r = ValidationReport("m", "1", [GateResult(FAIRNESS, False, many, {})])
    s = r.summary()
    assert len(s) < 2000
    assert "violation number 0" in s and "more (see the full report)" in s


def test_markdown_has_every_gate_tables_and_violations() -> None:
    md = make_report().to_markdown()
    assert md.startswith("# Validation report: heart_disease v4")
    assert "REJECTED" in md
    for name in (METRIC_THRESHOLDS, FAIRNESS, CHAMPION_COMPARISON):
        assert f"## Gate `{name}`" in md
    assert "| roc_auc | 0.71 | 0.75 | n/a | **FAIL** |" in md  # threshold table
    assert "| F | 812 |" in md  # fairness per-group table
    assert "### `sex`" in md
    assert "sex: equalized_odds_difference 0.23 > 0.1" in md  # violations listed
    assert "no champion yet" in md


def test_markdown_renders_comparison_tables() -> None:
    g = champion_comparison_gate(
        GOOD,
        {**GOOD, "roc_auc": 0.80},
        {"sex": {"equalized_odds_difference": 0.2}},
        {"sex": {"equalized_odds_difference": 0.1}},
        promo(),
        champion_version="2",
    )
    md = ValidationReport("m", "3", [g]).to_markdown()
    assert "| roc_auc | 0.86 | 0.8 | 0.06 |" in md
    assert "| sex | equalized_odds_difference | 0.2 | 0.1 | 0.1 | **FAIL** |" in md


def test_plain_converts_numpy_and_non_finite() -> None:
    out = plain({"a": np.float32(0.5), "b": [np.int64(3), math.inf], 1: np.array([1.0, np.nan])})
    assert out == {"a": 0.5, "b": [3, None], "1": [1.0, None]}
    assert type(out["b"][0]) is int

"""The holdout evaluation ``score_holdout`` stores with the validation report: the numbers the
pictures are drawn from, computed from the same predictions the gates judged."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.features.encoding import encode
from mlsteward.governance import evaluation
from mlsteward.governance.evaluation import (
    MAX_CURVE_POINTS,
    MAX_SAMPLE_ROWS,
    MIN_SHAP_ROWS,
    shap_rows,
)
from mlsteward.governance.evaluation_format import from_report
from mlsteward.governance.gates import METRIC_THRESHOLDS, ValidationReport
from mlsteward.governance.registry import VerifiedModel, VersionInfo
from tests.support.pictures import HOLDOUT_ROWS, Scored, scored, stored_report


@pytest.fixture(scope="module")
def heart(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    return scored("heart_disease", tmp_path_factory.mktemp("heart"))


@pytest.fixture(scope="module")
def stays(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    return scored("readmission", tmp_path_factory.mktemp("stays"))


def test_classification_payload_has_the_curves_the_gate_measured(heart: Scored) -> None:
    ev, metrics = heart.challenger.evaluation, heart.challenger.metrics
    assert ev is not None and ev["schema"] == 1 and ev["task"] == "binary_classification"
    assert ev["rows"] == HOLDOUT_ROWS and ev["threshold"] == pytest.approx(0.45)
    roc, pr = ev["roc"], ev["pr"]
    assert 2 < len(roc["fpr"]) == len(roc["tpr"]) <= MAX_CURVE_POINTS + 2
    assert 2 < len(pr["recall"]) == len(pr["precision"]) <= MAX_CURVE_POINTS + 2
    assert roc["fpr"][0] == roc["tpr"][0] == 0 and roc["fpr"][-1] == roc["tpr"][-1] == 1
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    # the legend's numbers are the gate's metrics, and the thinned curve keeps its area
    assert roc["auc"] == pytest.approx(metrics["roc_auc"], abs=1e-3)
    assert pr["average_precision"] == pytest.approx(metrics["pr_auc"], abs=1e-3)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc["auc"], abs=0.01)
    # the cut-off's point: the recall and precision the metrics report at that cut-off
    assert roc["at_threshold"]["tpr"] == pytest.approx(metrics["recall"], abs=1e-3)
    assert pr["at_threshold"]["precision"] == pytest.approx(metrics["precision"], abs=1e-3)
    assert pr["positive_rate"] == pytest.approx(heart.holdout[heart.cfg.label].mean(), abs=1e-3)
    cal = ev["calibration"]
    assert sum(cal["count"]) == HOLDOUT_ROWS and len(cal["count"]) <= cal["bins"] == 10
    bins = zip(cal["lower"], cal["mean_predicted"], cal["upper"], cal["observed"], strict=True)
    assert all(lo <= p <= hi and 0 <= o <= 1 for lo, p, hi, o in bins)
    assert "regression" not in ev


def test_shap_sample_explains_the_models_own_predictions(heart: Scored) -> None:
    shap, features = heart.challenger.evaluation["shap"], heart.cfg.feature_names
    assert shap["features"] == features and shap["scale"] == "log-odds"
    assert set(shap["categorical"]) == {f.name for f in heart.cfg.features if f.dtype == "category"}
    rows = shap["rows"]
    assert MIN_SHAP_ROWS <= rows <= MAX_SAMPLE_ROWS and rows == len(shap["contributions"])
    assert all(len(r) == len(features) for r in shap["contributions"] + shap["values"])
    contributions = np.array(shap["contributions"], dtype=float)
    assert list(shap["mean_abs"]) == features
    assert list(shap["mean_abs"].values()) == pytest.approx(
        np.abs(contributions).mean(axis=0), rel=2e-3, abs=1e-6
    )
    # contributions + base value is the margin of the sampled rows (a seeded sample, in order)
    sampled = np.sort(np.random.default_rng(0).permutation(HOLDOUT_ROWS)[:rows])
    rows_x = encode(heart.holdout.iloc[sampled], heart.model.info.encoding)
    stored = np.array([[np.nan if v is None else v for v in r] for r in shap["values"]])
    assert stored == pytest.approx(rows_x.to_numpy(dtype=float), rel=1e-3, nan_ok=True)
    margin = contributions.sum(axis=1) + shap["base_value"]
    assert 1 / (1 + np.exp(-margin)) == pytest.approx(heart.model.predict(rows_x), abs=3e-3)


def test_regression_payload_samples_and_residuals_by_group(stays: Scored) -> None:
    ev, fairness = stays.challenger.evaluation, stays.challenger.fairness
    assert ev["task"] == "regression" and ev["threshold"] is None
    assert not {"roc", "pr", "calibration"} & set(ev)
    reg = ev["regression"]
    assert len(reg["actual"]) == len(reg["predicted"]) == min(HOLDOUT_ROWS, MAX_SAMPLE_ROWS)
    assert set(reg["residuals"]) == {a.column for a in stays.cfg.sensitive_attributes}
    for attr, groups in reg["residuals"].items():
        gate_groups = fairness[attr].groups
        assert [g["group"] for g in groups] == [g["group"] for g in gate_groups]
        assert sum(g["size"] for g in groups) == HOLDOUT_ROWS
        for g, judged in zip(groups, gate_groups, strict=True):
            # the mean residual is the fairness gate's own per-group number
            assert g["mean"] == pytest.approx(judged["mean_residual"], rel=1e-3, abs=1e-3)
            assert g["q05"] <= g["q25"] <= g["median"] <= g["q75"] <= g["q95"]
            assert g["gated"] == judged["gated"]
    assert ev["shap"]["scale"] == "log"  # count:poisson explains the log of the prediction
    # the champion, only compared with, is not explained
    assert "shap" not in stays.champion.evaluation and "regression" in stays.champion.evaluation


def test_payload_is_strict_json_and_small(heart: Scored, stays: Scored) -> None:
    for case in (heart, stays):
        text = json.dumps(case.challenger.evaluation, allow_nan=False)
        assert len(text) < 150_000
        digits = [len(n.lstrip("-").replace(".", "").lstrip("0")) for n in _decimals(text)]
        assert max(digits) <= 4, "numbers keep 4 significant digits"


def _decimals(text: str) -> list[str]:
    return re.findall(r"-?\d+\.\d+(?![\de])", text)


def test_report_carries_the_payload_with_the_threshold_gate(heart: Scored) -> None:
    report = stored_report(heart)
    gate = next(g for g in report["gates"] if g["name"] == METRIC_THRESHOLDS)
    assert gate["details"]["evaluation"] == from_report(report)
    assert from_report(report)["roc"]["auc"] == heart.challenger.evaluation["roc"]["auc"]
    # a report round-trips with it, and its markdown does not print it
    again = ValidationReport.from_dict(report)
    assert from_report(again.to_dict()) == from_report(report)
    assert "contributions" not in again.to_markdown()
    # an old report, or one of a schema this code does not know, has none
    gate["details"]["evaluation"]["schema"] = 99
    assert from_report(report) is None
    assert from_report({"gates": []}) is None


def test_shap_rows_shrink_with_the_model_within_bounds() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(3_000, 8)), columns=[f"f{i}" for i in range(8)])
    y = (x["f0"] + rng.normal(size=3_000) > 0).astype(int)
    info = VersionInfo(name="m", version="1", run_id="", source="", tags={})

    def rows(trees: int, depth: int) -> int:
        model = xgb.XGBClassifier(n_estimators=trees, max_depth=depth, n_jobs=1).fit(x, y)
        return shap_rows(VerifiedModel(info=info, model=model, sha256=""))

    small, large = rows(10, 2), rows(300, 8)
    assert small == MAX_SAMPLE_ROWS
    assert MIN_SHAP_ROWS <= large < small


def test_rounding_keeps_four_significant_digits() -> None:
    out = evaluation._rounded(np.array([0.123456, 123456.7, -0.00098766, 0.0, math.nan, 1e-12]))
    assert out[:4].tolist() == [0.1235, 123500.0, -0.0009877, 0.0]
    assert math.isnan(out[4]) and out[5] == 1e-12
    assert evaluation._numbers(np.array([1.0, math.inf, math.nan])) == [1.0, None, None]

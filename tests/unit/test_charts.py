"""The charts on small hand-made inputs: each one's SVG parses, says what it shows in text
(title, axis labels with units, legend, limits), is safe to inline and is the same every time."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from typing import Any

from mlsteward.config.models import get_model_config
from mlsteward.report.charts import (
    Picture,
    comparison_picture,
    drift_history_picture,
    evaluation_note,
    fairness_picture,
    metric_history_picture,
    version_pictures,
)
from mlsteward.report.charts import cache as picture_cache
from mlsteward.report.charts.artifact import MAX_PICTURE_BYTES, insert_before, pictures_markdown
from mlsteward.report.charts.curves import calibration_picture, pr_picture, roc_picture
from mlsteward.report.charts.regression import predicted_vs_actual_picture, residuals_picture
from mlsteward.report.charts.shap_summary import beeswarm_picture, importance_picture
from mlsteward.report.charts.svg import short
from mlsteward.report.model import AuditEvent

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>'


def texts(p: Picture) -> str:
    """Every piece of text the picture shows, one per line (parsing fails on broken XML)."""
    root = ET.fromstring(p.svg)
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def check_svg(p: Picture) -> ET.Element:
    """What every picture promises: one accessible, self-contained, inlinable <svg>."""
    root = ET.fromstring(p.svg)
    assert root.tag == f"{SVG}svg" and p.svg.startswith("<svg")
    assert root.get("role") == "img" and root.get("aria-label") == p.title
    assert root[0].tag == f"{SVG}title" and root[0].text == p.title
    assert root[1].tag == f"{SVG}desc" and root[1].text == p.alt and len(p.alt) > 40
    for bad in ("url(", "<?xml", "<!DOCTYPE", "<style", "<script", "<metadata", "http://purl"):
        assert bad not in p.svg, bad
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    refs = {
        v[1:]
        for e in root.iter()
        for k, v in e.attrib.items()
        if k.endswith("href") and v[:1] == "#"
    }
    assert refs <= set(ids), "every reference points inside the picture"
    coordinates = " ".join(
        v for e in root.iter() for k, v in e.attrib.items() if not k.endswith("href")
    )
    assert not re.search(r"\d\.\d{3,}", coordinates), "coordinates keep two decimals"
    return root


# -- inputs --------------------------------------------------------------------------------


def classification_evaluation() -> dict[str, Any]:
    return {
        "schema": 1,
        "task": "binary_classification",
        "rows": 2_000,
        "threshold": 0.42,
        "sample": {"rows": 4, "of": 2_000, "seed": 0},
        "roc": {
            "fpr": [0, 0.05, 0.2, 0.5, 1],
            "tpr": [0, 0.4, 0.75, 0.92, 1],
            "auc": 0.8731,
            "at_threshold": {"fpr": 0.2, "tpr": 0.75},
        },
        "pr": {
            "recall": [1, 0.92, 0.75, 0.4, 0],
            "precision": [0.4, 0.55, 0.71, 0.84, 1],
            "average_precision": 0.7702,
            "positive_rate": 0.4,
            "at_threshold": {"recall": 0.75, "precision": 0.71},
        },
        "calibration": {
            "bins": 10,
            "lower": [0.0, 0.3, 0.6],
            "upper": [0.1, 0.4, 0.7],
            "count": [900, 600, 500],
            "mean_predicted": [0.05, 0.35, 0.65],
            "observed": [0.04, 0.41, 0.6],
        },
        "shap": shap_sample("log-odds"),
    }


def shap_sample(scale: str) -> dict[str, Any]:
    return {
        "rows": 4,
        "features": ["age", "chest_pain", "bmi"],
        "categorical": ["chest_pain"],
        "scale": scale,
        "base_value": -0.4,
        "values": [[40, 0, 22.5], [61, 2, None], [55, 1, 31.0], [70, 3, 27.2]],
        "contributions": [
            [-0.3, 0.1, -0.02],
            [0.2, 0.6, 0.0],
            [0.05, -0.2, 0.08],
            [0.4, 0.5, 0.01],
        ],
        "mean_abs": {"age": 0.2375, "chest_pain": 0.35, "bmi": 0.0275},
    }


def regression_evaluation() -> dict[str, Any]:
    return {
        "schema": 1,
        "task": "regression",
        "rows": 900,
        "threshold": None,
        "sample": {"rows": 200, "of": 900, "seed": 0},
        "regression": {
            # one 400-day stay among 199 short ones
            "actual": [i % 10 for i in range(199)] + [400],
            "predicted": [i % 10 + 0.5 for i in range(199)] + [12.0],
            "residuals": {
                "race": [
                    {"group": "a", "size": 600, "gated": True, "mean": 0.3, "std": 2.0,
                     "q05": -3.0, "q25": -1.0, "median": 0.4, "q75": 1.5, "q95": 4.0},
                    {"group": HOSTILE, "size": 40, "gated": False, "mean": -0.5, "std": 2.5,
                     "q05": -4.0, "q25": -1.5, "median": -0.2, "q75": 1.0, "q95": 3.0},
                ]
            },
        },
        "shap": shap_sample("log"),
    }  # fmt: skip


def fairness_details(eo: float = 0.09, failed: bool = False) -> dict[str, Any]:
    tpr_f, tpr_m = 0.70, 0.70 + eo
    return {
        "min_group_size": 100,
        "attributes": {
            "sex": {
                "attribute": "sex",
                "metrics": {
                    "demographic_parity_ratio": 0.66,
                    "equal_opportunity_difference": eo,
                    "equalized_odds_difference": eo,
                },
                "limits": {
                    "demographic_parity_ratio": {"min": None, "max": None},
                    "equal_opportunity_difference": {"min": None, "max": 0.2},
                    "equalized_odds_difference": {"min": None, "max": 0.2},
                },
                "checks": {
                    "demographic_parity_ratio": None,
                    "equal_opportunity_difference": not failed,
                    "equalized_odds_difference": not failed,
                },
                "groups": [
                    {"group": "F", "size": 900, "positives": 300, "selection_rate": 0.31,
                     "tpr": tpr_f, "fpr": 0.15, "roc_auc": 0.87, "gated": True},
                    {"group": "M", "size": 1000, "positives": 450, "selection_rate": 0.47,
                     "tpr": tpr_m, "fpr": 0.21, "roc_auc": 0.86, "gated": True},
                    {"group": "X", "size": 12, "positives": 4, "selection_rate": 0.5,
                     "tpr": 0.5, "fpr": 0.5, "roc_auc": None, "gated": False},
                ],
                "note": "",
            }
        },
    }  # fmt: skip


def report(
    with_champion: bool = True, evaluation: dict[str, Any] | None = None, **primary: Any
) -> dict[str, Any]:
    """A stored ``ValidationReport.to_dict()`` of heart_disease v4 against champion v2."""
    thresholds: dict[str, Any] = {"checks": {}, "metrics": {"roc_auc": 0.8731}}
    if evaluation is not None:
        thresholds["evaluation"] = evaluation
    p = {
        "metric": "roc_auc",
        "direction": "higher is better",
        "challenger": 0.8731,
        "champion": 0.8612,
        "delta_mode": "absolute",
        "min_delta": 0.0,
        "improvement": 0.0119,
        "passed": True,
    } | primary
    comparison = {"champion_version": "2" if with_champion else None, "primary": p}
    gates = [
        {"name": "metric_thresholds", "passed": True, "violations": [], "details": thresholds},
        {"name": "fairness", "passed": True, "violations": [], "details": fairness_details()},
        {"name": "champion_comparison", "passed": p["passed"], "violations": [],
         "details": comparison},
    ]  # fmt: skip
    return {"model": "heart_disease", "version": "4", "passed": True, "gates": gates}


# -- curves ---------------------------------------------------------------------------------


def test_roc_picture() -> None:
    p = roc_picture(classification_evaluation(), "heart_disease v4")
    assert p is not None and p.key == "roc"
    check_svg(p)
    t = texts(p)
    assert "ROC curve of heart_disease v4, 2,000 holdout rows" in t
    assert "False-positive rate (share of negatives flagged)" in t
    assert "True-positive rate (share of positives found)" in t
    assert "ROC curve (AUC 0.873)" in t and "chance (AUC 0.5)" in t
    assert "cut-off 0.42: TPR 0.75, FPR 0.20" in t
    assert "75% of positives" in p.alt


def test_pr_and_calibration_pictures() -> None:
    ev = classification_evaluation()
    pr = pr_picture(ev)
    assert pr is not None
    check_svg(pr)
    t = texts(pr)
    assert "precision-recall (average precision 0.770)" in t
    assert "no skill (positive rate 0.40)" in t
    assert "Recall (share of positives found)" in t
    cal = calibration_picture(ev)
    assert cal is not None
    check_svg(cal)
    t = texts(cal)
    assert "perfectly calibrated" in t and "Rows" in t
    assert "Observed positive rate (per bin)" in t and "Mean predicted probability (per bin)" in t
    assert "+0.06 in the bin around 0.35" in cal.alt  # the largest gap, said in words


def test_curves_need_a_stored_curve() -> None:
    assert roc_picture({}) is None and pr_picture({"pr": {"recall": [1]}}) is None
    assert calibration_picture({"calibration": {"count": []}}) is None


# -- regression -----------------------------------------------------------------------------


def test_predicted_vs_actual_picture_bounds_a_long_tail() -> None:
    p = predicted_vs_actual_picture(regression_evaluation(), "stays v2", label="days")
    assert p is not None
    check_svg(p)
    t = texts(p)
    assert "Actual days (label units)" in t and "Predicted days (label units)" in t
    assert "prediction = outcome" in t
    assert "200 sampled holdout rows (1 beyond the axes)" in t  # the 400-day stay
    assert "sampled from 900" in p.alt


def test_residuals_picture_marks_small_groups_and_escapes_names() -> None:
    p = residuals_picture(regression_evaluation(), label="days")
    assert p is not None
    check_svg(p)
    t = texts(p)
    assert "race" in t and "a (n=600)" in t and f"{HOSTILE} (n=40)" in t
    assert "small group: not gated" in t and "median" in t
    assert "Predicted \u2212 actual days (> 0: over-predicted)" in t
    assert "<script" not in p.svg and "&lt;script&gt;" in p.svg


# -- SHAP -------------------------------------------------------------------------------------


def test_shap_importance_picture() -> None:
    p = importance_picture(classification_evaluation())
    assert p is not None
    check_svg(p)
    t = texts(p)
    assert "Mean |SHAP value| (log-odds of the positive class)" in t
    assert "4 holdout rows" in t
    # ticks are written from the bottom up: the largest bar on top
    assert t.index("bmi") < t.index("age") < t.index("chest_pain")
    assert "chest_pain 0.35, age 0.237, bmi 0.0275" in p.alt


def test_shap_beeswarm_picture_colours_numbers_not_categories() -> None:
    p = beeswarm_picture(regression_evaluation())
    assert p is not None
    root = check_svg(p)
    t = texts(p)
    assert "SHAP value: effect on the model output (log of the predicted value)" in t
    assert "Feature value (grey: categorical)" in t and "low" in t and "high" in t
    assert {"age", "chest_pain", "bmi"} <= set(t.splitlines())
    assert list(root.iter(f"{SVG}image")), "the dots are drawn as one embedded image"
    assert beeswarm_picture({"shap": {"features": []}}) is None


# -- fairness ---------------------------------------------------------------------------------


def test_fairness_picture_draws_the_gates_limits() -> None:
    details = fairness_details(eo=0.09)
    p = fairness_picture("sex", {"min_group_size": 100, **details["attributes"]["sex"]})
    assert p is not None and p.key == "fairness-sex"
    check_svg(p)
    t = texts(p)
    # the limit as a line where the gate puts it: 0.2 above the lowest gated TPR (0.70)
    assert "limit 0.9: max \u2212 min \u2264 0.2" in t
    assert "equal opportunity difference 0.09 (limit \u2264 0.2): pass" in t
    assert "True-positive rate (share of the group's positives found)" in t
    assert "False-positive rate (share of the group's negatives flagged)" in t
    assert "Hollow: groups under 100 rows, reported but not gated." in t
    assert "Reported, not gated: demographic parity ratio 0.66." in t
    assert "gated group" in t and "limit" in t and "allowed" in t
    assert "beyond the limit" not in t


def test_fairness_picture_marks_a_failing_group() -> None:
    details = fairness_details(eo=0.31, failed=True)
    p = fairness_picture("sex", details["attributes"]["sex"])
    assert p is not None
    t = texts(p)
    assert "equal opportunity difference 0.31 (limit \u2264 0.2): FAIL" in t
    assert "beyond the limit" in t and "The gate failed on this attribute." in p.alt


def test_fairness_picture_ratio_and_regression_limits() -> None:
    parity = {
        "metrics": {"demographic_parity_ratio": 0.5},
        "limits": {"demographic_parity_ratio": {"min": 0.8, "max": None}},
        "checks": {"demographic_parity_ratio": False},
        "groups": [
            {"group": "a", "size": 500, "selection_rate": 0.2, "gated": True},
            {"group": "b", "size": 500, "selection_rate": 0.4, "gated": True},
        ],
    }
    p = fairness_picture("grp", parity)
    assert p is not None
    assert "limit 0.32: min \u2265 0.8 \u00d7 max" in texts(p)  # 0.8 x the highest rate
    errors = {
        "metrics": {"mae_ratio": 1.5, "bounded_group_loss": 3.0, "rmse_ratio": 1.2},
        "limits": {
            "mae_ratio": {"min": None, "max": 1.3},
            "bounded_group_loss": {"min": None, "max": 3.5},
            "rmse_ratio": {"min": None, "max": None},
        },
        "checks": {"mae_ratio": False, "bounded_group_loss": True, "rmse_ratio": None},
        "groups": [
            {"group": "a", "size": 500, "mae": 2.0, "rmse": 3.0, "mean_residual": 0.1},
            {"group": "b", "size": 500, "mae": 3.0, "rmse": 3.6, "mean_residual": -0.2},
        ],
    }
    p = fairness_picture("race", errors)
    assert p is not None
    t = texts(p)
    assert "limit 2.6: max \u2264 1.3 \u00d7 min" in t  # 1.3 x the lowest MAE
    assert "limit 3.5: every group \u2264 3.5" in t
    assert "Mean absolute error (label units)" in t
    assert "rmse ratio 1.2" in t  # reported only
    assert fairness_picture("none", {"groups": []}) is None


# -- drift ------------------------------------------------------------------------------------


def drift_event(
    seq: int, scores: dict[str, float], drifted: list[str], **details: Any
) -> AuditEvent:
    return AuditEvent(
        seq=seq,
        ts=f"2025-03-{seq:02d}T10:00:00+00:00",
        action="drift_detected" if drifted else "drift_checked",
        version="2",
        actor="drift",
        reason="",
        details={"columns": scores, "drifted_columns": drifted, **details},
    )


def test_drift_history_picture_draws_thresholds_and_reads_their_direction() -> None:
    distance = {"bmi": 0.1, "age": 0.2}
    pvalue = {"glucose": 0.05}
    events = [
        drift_event(1, {"bmi": 0.05, "age": 0.1, "glucose": 0.6}, [], thresholds=distance | pvalue),
        drift_event(2, {"bmi": 0.15, "age": 0.12, "glucose": 0.01}, ["bmi", "glucose"],
                    thresholds=distance | pvalue),
        drift_event(3, {"bmi": 0.3, "age": 0.1, "glucose": 0.02}, ["bmi", "glucose"],
                    thresholds=distance | pvalue),
    ]  # fmt: skip
    p = drift_history_picture(list(reversed(events)), subject="heart_disease")
    assert p is not None and p.key == "drift-history"
    check_svg(p)
    t = texts(p)
    assert "Drift by column: heart_disease" in t
    assert "threshold 0.1" in t and "threshold 0.2" in t and "threshold 0.05" in t
    assert "glucose (p-value)" in t and "bmi (p-value)" not in t
    assert "Check time (UTC), 2025-03-01 to 2025-03-03" in t and "Drift score" in t
    assert "score at each check" in t and "drifted" in t
    # drifted columns first
    assert p.alt.index("bmi") < p.alt.index("age") and "drifted in 2 of 3 checks" in p.alt


def test_drift_history_falls_back_to_configured_thresholds() -> None:
    cfg = get_model_config("heart_disease")  # age: threshold 0.2 configured
    events = [drift_event(1, {"age": 0.05, "sex": 0.01}, []), drift_event(2, {"age": 0.1}, [])]
    p = drift_history_picture(events, cfg)
    assert p is not None
    t = texts(p)
    assert "threshold 0.2" in t
    assert "No threshold recorded for sex." in p.alt
    # records without per-column scores draw nothing
    assert drift_history_picture([drift_event(1, {}, [])]) is None
    assert drift_history_picture([{"not": "a record"}]) is None


# -- champion comparison and history ----------------------------------------------------------


def test_comparison_picture_shows_what_the_challenger_needed() -> None:
    p = comparison_picture(report())
    assert p is not None and p.key == "champion-comparison"
    check_svg(p)
    t = texts(p)
    assert "Champion v2 vs challenger v4 on roc_auc: passed" in t
    assert "needed: > 0.8612 (strictly better than the champion)" in t
    assert "champion v2" in t and "challenger v4" in t and "0.8731" in t
    assert "roc_auc on the challenger's holdout (higher is better)" in t
    lower = comparison_picture(
        report(metric="mae", direction="lower is better", challenger=2.71, champion=2.70,
               min_delta=0.01, delta_mode="relative", improvement=-0.0037, passed=False)
    )  # fmt: skip
    assert lower is not None
    t = texts(lower)
    assert "on mae: failed" in t and "needed: \u2264 2.6730 (min_delta 0.01, relative)" in t
    assert comparison_picture(report(with_champion=False)) is None


def test_metric_history_picture() -> None:
    versions = [
        {"version": "3", "metrics": {"roc_auc": 0.84}, "validation_status": "failed"},
        {"version": "1", "metrics": {"roc_auc": 0.86}, "validation_status": "passed"},
        {"version": "2", "metrics": {"roc_auc": 0.87}, "validation_status": "passed"},
        {"version": "4", "metrics": {}},
    ]
    p = metric_history_picture(versions, "roc_auc", champion="2", challenger="3", subject="hd")
    assert p is not None
    check_svg(p)
    t = texts(p)
    assert "roc_auc by version: hd" in t and "roc_auc (own test split)" in t
    assert t.index("v1") < t.index("v2") < t.index("v3")
    assert {"validation passed", "validation failed", "champion", "challenger"} <= set(
        t.splitlines()
    )
    assert "v1 0.86, v2 0.87, v3 0.84; highest v2" in p.alt
    assert metric_history_picture([], "roc_auc") is None


# -- a version's set, the artifact, the cache ------------------------------------------------


def test_version_pictures_from_a_report_with_and_without_its_evaluation() -> None:
    full = version_pictures(report(evaluation=classification_evaluation()))
    assert [p.key for p in full] == [
        "roc", "pr", "calibration", "shap-importance", "shap-beeswarm", "fairness-sex",
        "champion-comparison",
    ]  # fmt: skip
    assert evaluation_note(report(evaluation=classification_evaluation())) is None
    # the same keys for another version never share SVG ids
    other = version_pictures(report(evaluation=classification_evaluation()) | {"version": "5"})
    ids = set(re.findall(r'id="([^"]+)"', full[0].svg))
    assert ids and not ids & set(re.findall(r'id="([^"]+)"', other[0].svg))
    old = version_pictures(report())
    assert [p.key for p in old] == ["fairness-sex", "champion-comparison"]
    note = evaluation_note(report())
    assert note is not None and "recorded before evaluations were stored" in note
    some = version_pictures(
        report(evaluation=regression_evaluation()),
        exclude=frozenset({"shap-beeswarm", "residuals"}),
    )
    assert [p.key for p in some][:2] == ["predicted-vs-actual", "shap-importance"]


def test_pictures_are_the_same_every_time() -> None:
    ev = classification_evaluation()
    first = roc_picture(ev, salt="x")
    picture_cache.clear()
    again = roc_picture(ev, salt="x")
    assert first is not None and again is not None and first.svg == again.svg
    # the public functions remember what they drew
    one = version_pictures(report())
    assert version_pictures(report())[0] is one[0]
    assert version_pictures(report(improvement=0.02))[-1] is not one[-1]


def test_picture_as_image_and_in_an_artifact() -> None:
    p = comparison_picture(report())
    assert p is not None
    uri = p.data_uri()
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == p.svg
    assert p.markdown() == f"![{p.alt}]({uri})"
    big = Picture("big", "A big one", "<svg/>" + " " * MAX_PICTURE_BYTES, "too big [really]")
    md = pictures_markdown([p, big])
    assert md.startswith("## Pictures\n\n![") and uri in md
    assert "Too large for an artifact, drawn in the model card: A big one." in md
    assert md.endswith("\n\n") and pictures_markdown([]) == ""
    doc = "# Report\n\n| a |\n\n## Violations\n\nNone.\n"
    assert insert_before(doc, "## Pictures\n\n", "## Violations").index("## Pictures") < doc.index(
        "## Violations"
    ) + len("## Pictures\n\n")
    assert insert_before("# R\n", "S\n", "## Nope").endswith("S\n")


def test_short_numbers_never_show_more_than_four_decimals() -> None:
    assert short(0.8731) == "0.873" and short(0.00446) == "0.0045" and short(2.5e-6) == "2.5e-06"
    assert short(12345.0, 4) == "12,345" and short(2.5) == "2.5"
    assert short(0) == "0"

"""The model card's pictures: inline SVG with labelled axes where a validation recorded its
evaluation, a note where it did not, the file still self-contained; the markdown card says
where they are."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mlsteward.report.history import drift_history
from mlsteward.report.model import AuditEvent, AuditStatus, ModelCard, VersionSection
from mlsteward.report.render_html import render_html
from mlsteward.report.render_markdown import render_markdown
from mlsteward.report.view_pictures import FORMER_NOTE
from tests.support.pictures import scored, stored_report, without_evaluation

SVG = "{http://www.w3.org/2000/svg}"


def drift_events() -> list[AuditEvent]:
    scores = [{"bmi": 0.04, "age": 0.05}, {"bmi": 0.16, "age": 0.06}]
    return [
        AuditEvent(
            seq=40 + i,
            ts=f"2025-03-{20 + i}T06:00:00+00:00",
            action="drift_detected" if s["bmi"] >= 0.1 else "drift_checked",
            version="1",
            actor="drift",
            reason="",
            details={
                "columns": s,
                "thresholds": {"bmi": 0.1, "age": 0.2},
                "drifted_columns": ["bmi"] if s["bmi"] >= 0.1 else [],
                "dataset_drift_share": 0.5 if s["bmi"] >= 0.1 else 0.0,
                "decision": {"retrain": False, "reasons": []},
            },
        )
        for i, s in enumerate(scores)
    ]


def card_for(model: str, directory: Path) -> ModelCard:
    """Champion v1 (validated before evaluations were stored), v2 the newest version with a
    full report, v0 a former champion."""
    case = scored(model, directory)
    cfg, p = case.cfg, case.cfg.promotion.primary_metric
    new, old = stored_report(case), without_evaluation(stored_report(case))
    old["version"] = "1"

    def section(version: str, roles: list[str], report: dict | None) -> VersionSection:
        return VersionSection(
            version=version,
            roles=roles,
            lifecycle=roles[0],
            validation_status="passed" if report and report["passed"] else "failed",
            validation=report,
            task=cfg.task,
        )

    return ModelCard(
        model=model,
        description=cfg.description,
        owner=cfg.owner,
        generated_at="2025-03-22T00:00:00+00:00",
        champion={"version": "1", "metrics": case.champion.metrics},
        challenger=None,
        primary_metric=p,
        task=cfg.task,
        objective=cfg.tuning.objective,
        versions=[
            {"version": "1", "metrics": case.champion.metrics, "validation_status": "passed"},
            {"version": "2", "metrics": case.challenger.metrics, "validation_status": "passed"},
        ],
        sections=[
            section("1", ["champion"], old),
            section("2", ["latest"], new),
            section("0", ["former champion"], old | {"version": "0"}),
        ],
        drift=drift_history(drift_events()),
        audit=AuditStatus(ok=True, records=12),
        config=cfg,
    )


@pytest.fixture(scope="module")
def heart_card(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    return card_for("heart_disease", tmp_path_factory.mktemp("heart"))


@pytest.fixture(scope="module")
def heart_html(heart_card: ModelCard) -> str:
    return render_html(heart_card)


def between(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end)]


def svgs(fragment: str) -> dict[str, ET.Element]:
    """Each picture's <svg> of a fragment (its own clipping viewports are nested <svg>s),
    parsed, by its title."""
    found = {}
    for start in (m.start() for m in re.finditer(r'<svg xmlns="', fragment)):
        depth, at = 0, start
        for tag in re.finditer(r"<svg[\s>]|</svg>", fragment[start:]):
            depth += -1 if tag.group(0) == "</svg>" else 1
            if depth == 0:
                at = start + tag.end()
                break
        root = ET.fromstring(fragment[start:at])
        found[root.findtext(f"{SVG}title")] = root
    return found


def labels(root: ET.Element) -> set[str]:
    return {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}


def test_a_version_with_its_evaluation_shows_curves_and_shap(heart_html: str) -> None:
    v2 = svgs(between(heart_html, 'id="v2"', 'id="v0"'))
    titles = set(v2)
    assert {
        "ROC curve of heart_disease v2",
        "Precision-recall curve of heart_disease v2",
        "Calibration of heart_disease v2",
        "Feature importance: heart_disease v2",
        "SHAP values: heart_disease v2",
        "Fairness across sex: heart_disease v2",
        "Fairness across age: heart_disease v2",
        "Champion v1 vs challenger v2 on roc_auc: passed",
    } <= titles | {t.replace(": failed", ": passed") for t in titles}
    roc = labels(v2["ROC curve of heart_disease v2"])
    assert "False-positive rate (share of negatives flagged)" in roc
    assert "True-positive rate (share of positives found)" in roc
    assert any(t.startswith("ROC curve (AUC 0.") for t in roc)
    fairness = labels(v2["Fairness across sex: heart_disease v2"])
    assert any(t.startswith("limit ") and "max \u2212 min \u2264 0.2" in t for t in fairness)
    for root in v2.values():
        assert root.get("role") == "img" and root.get("aria-label")
    # the pictures come right after the gates' overview, before the gates' tables
    section = between(heart_html, 'id="v2"', 'id="v0"')
    assert section.index("<svg") < section.index('<div class="gate">')


def test_an_older_report_has_its_gate_pictures_and_a_note(heart_html: str) -> None:
    v1 = between(heart_html, 'id="v1"', 'id="v2"')
    assert "recorded before evaluations were stored with it" in v1
    titles = set(svgs(v1))
    assert "Fairness across sex: heart_disease v1" in titles
    assert not any(t.startswith(("ROC", "SHAP", "Feature importance")) for t in titles)
    v0 = heart_html[heart_html.index('id="v0"') : heart_html.index('id="drift"')]
    assert FORMER_NOTE in v0 and "<svg" not in v0


def test_card_level_pictures(heart_html: str) -> None:
    metrics = svgs(between(heart_html, 'id="metrics"', 'id="v1"'))
    assert labels(metrics["roc_auc by version: heart_disease"]) >= {"v1", "v2"}
    drift = svgs(between(heart_html, 'id="drift"', 'id="rollouts"'))
    assert {"threshold 0.1", "threshold 0.2", "bmi", "age"} <= labels(
        drift["Drift by column: heart_disease"]
    )


def test_card_with_pictures_stays_self_contained(heart_html: str) -> None:
    assert "<script" not in heart_html and "url(" not in heart_html
    assert not re.search(r"(src|href)\s*=\s*[\"'](https?:)?//", heart_html)
    pictures = svgs(heart_html)
    for root in pictures.values():  # no number in a picture shows spurious precision
        assert not re.search(r"\d\.\d{5,}", ET.tostring(root, encoding="unicode"))
    ids = re.findall(r'\sid="([^"]+)"', heart_html)
    assert len(ids) == len(set(ids)), "ids are unique across the page's pictures"
    assert heart_html.count("<svg ") >= 12


def test_markdown_card_points_at_the_pictures(heart_card: ModelCard) -> None:
    md = render_markdown(heart_card)
    assert "<svg" not in md and "data:image" not in md
    assert md.count("The HTML model card (same name, .html) draws this validation") == 2
    assert "The HTML model card (same name, .html) draws each column's drift score" in md


def test_regression_card_shows_predictions_and_residuals(tmp_path: Path) -> None:
    html = render_html(card_for("readmission", tmp_path))
    v2 = svgs(between(html, 'id="v2"', 'id="v0"'))
    scatter = labels(v2["Predicted vs actual: readmission v2"])
    assert "Actual length_of_stay_days (label units)" in scatter
    assert "prediction = outcome" in scatter
    residuals = labels(v2["Residuals by group: readmission v2"])
    assert "Predicted \u2212 actual length_of_stay_days (> 0: over-predicted)" in residuals
    assert {"sex", "race"} <= residuals
    shap = labels(v2["SHAP values: readmission v2"])
    assert "SHAP value: effect on the model output (log of the predicted value)" in shap
    assert not any(t.startswith("ROC") for t in v2)

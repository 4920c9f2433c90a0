"""The pictures through the real loop: the training flow's validation stores the evaluation
with the report in MLflow, the Prefect artifact shows the pictures as images, and the model
card collected from the registry draws them inline.

Real MLflow (SQLite), the SQLite audit trail, Prefect's harness; the module's one trained stack
(v1 champion, v2 challenger validated against it).
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from mlsteward.api.views import flow_run_of
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.governance import registry
from mlsteward.governance.evaluation_format import from_report
from mlsteward.report.charts import version_pictures
from mlsteward.report.write import write_report
from tasks.common import artifact_key
from tests.support.governance import MODEL

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Iterator[Path]:
    """The module's home, with pictures in the artifacts (the suite turns them off)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_ARTIFACT_PICTURES", "true")
        yield module_home


def stored_report(version: str) -> dict[str, Any]:
    """The validation report on the version's run, as the card and the API read it."""
    uri = registry.get_version(MODEL, version).tags["validation_report"]
    run_id, path = re.match(r"^runs:/([^/]+)/(.+)$", uri).groups()  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as d:
        return json.loads(registry.download_run_file(run_id, path, Path(d)).read_text())


def test_the_flow_stores_the_evaluation_with_the_report(
    champion_and_challenger: dict[str, Any],
) -> None:
    report = stored_report(champion_and_challenger["challenger"])
    evaluation = from_report(report)
    assert evaluation is not None and evaluation["task"] == "binary_classification"
    thresholds = next(g for g in report["gates"] if g["name"] == "metric_thresholds")
    assert evaluation["roc"]["auc"] == pytest.approx(
        thresholds["details"]["metrics"]["roc_auc"], abs=1e-3
    )
    assert evaluation["shap"]["features"] == get_model_config(MODEL).feature_names
    keys = [p.key for p in version_pictures(report, get_model_config(MODEL))]
    assert keys[:5] == ["roc", "pr", "calibration", "shap-importance", "shap-beeswarm"]
    assert "fairness-sex" in keys and keys[-1] == "champion-comparison"


def test_the_validation_artifact_shows_the_pictures(
    champion_and_challenger: dict[str, Any],
) -> None:
    version = champion_and_challenger["challenger"]
    with audit_store() as store:  # the run that trained it (the session's Prefect is shared)
        [registered] = store.query(model=MODEL, version=version, action=Action.VERSION_REGISTERED)
    run = flow_run_of(registered.actor)
    assert run is not None, registered.actor
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key(MODEL, "validation")]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run]),
            )
        )
    [markdown] = [
        a.data for a in artifacts if f"Validation report: {MODEL} v{version}" in str(a.data)
    ]
    images = re.findall(r"!\[([^\]]+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    titles = [
        ET.fromstring(base64.b64decode(b).decode()).findtext(f"{SVG}title") for _, b in images
    ]
    assert f"ROC curve of {MODEL} v{version}" in titles
    assert f"Fairness across sex: {MODEL} v{version}" in titles
    assert not any(t.startswith("SHAP values") for t in titles)  # left to the card
    assert all(len(b) < 80_000 for _, b in images)
    # after the gates' overview, before the violations
    assert (
        markdown.index("| gate | result |") < markdown.index("![") < markdown.index("## Violations")
    )


def test_the_collected_card_draws_the_versions_inline(
    champion_and_challenger: dict[str, Any], tmp_path: Path
) -> None:
    out = write_report(MODEL, tmp_path)
    html = Path(out["html"]).read_text(encoding="utf-8")
    challenger = champion_and_challenger["challenger"]
    section = html[html.index(f'id="v{challenger}"') :]
    assert f"<title>ROC curve of {MODEL} v{challenger}</title>" in section
    assert "False-positive rate (share of negatives flagged)" in section
    assert f"<title>{_metric()} by version: {MODEL}</title>" in html
    assert "url(" not in html and "<script" not in html
    assert "The HTML model card (same name, .html) draws this validation" in Path(
        out["markdown"]
    ).read_text(encoding="utf-8")


def _metric() -> str:
    return get_model_config(MODEL).promotion.primary_metric

"""Validation-stage tasks: score the holdout, run each gate, record the report.

Each gate task wraps one plain function from ``mlsteward.governance.threshold_gate``,
``fairness`` and ``run_gates`` (which runs them all at once where no flow is involved); the
flow collects every gate's result and decides once.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.settings import artifact_pictures
from mlsteward.errors import MlstewardError
from mlsteward.governance import promotion as governance
from mlsteward.governance.fairness import fairness_gate
from mlsteward.governance.gates import GateResult, ValidationReport
from mlsteward.governance.registry import VersionInfo
from mlsteward.governance.run_gates import champion_gate, score_with_champion
from mlsteward.governance.validation import HoldoutScore, holdout_metrics_gate
from mlsteward.report.charts import version_pictures
from mlsteward.report.charts.artifact import insert_before, pictures_markdown
from tasks.common import artifact_key, run_logger


# No retries here or in record-validation: both append audit records, which must not repeat.
@task(name="score-holdout", cache_policy=NO_CACHE)
def score_on_holdout(
    cfg: ModelConfig, version: str, actor: str
) -> tuple[HoldoutScore, HoldoutScore | None, VersionInfo]:
    """Score the version and the current champion (if another one) on the version's holdout,
    both from SHA-256-verified artifacts."""
    challenger, champion, info, rows = score_with_champion(cfg, version, actor)
    log = run_logger()
    log.info(
        "%s v%s on %d holdout rows: %s %.4f%s",
        cfg.name,
        version,
        rows,
        cfg.promotion.primary_metric,
        challenger.metrics[cfg.promotion.primary_metric],
        f"; champion v{champion.version}: {champion.metrics[cfg.promotion.primary_metric]:.4f}"
        if champion
        else "; no champion yet",
    )
    return challenger, champion, info


@task(name="gate-metric-thresholds", cache_policy=NO_CACHE)
def gate_metric_thresholds(cfg: ModelConfig, score: HoldoutScore) -> GateResult:
    return _logged(holdout_metrics_gate(cfg, score))


@task(name="gate-fairness", cache_policy=NO_CACHE)
def gate_fairness(cfg: ModelConfig, score: HoldoutScore) -> GateResult:
    return _logged(fairness_gate(score.fairness, cfg))


@task(name="gate-champion-comparison", cache_policy=NO_CACHE)
def gate_champion(
    cfg: ModelConfig, challenger: HoldoutScore, champion: HoldoutScore | None
) -> GateResult:
    return _logged(champion_gate(cfg, challenger, champion))


def _logged(result: GateResult) -> GateResult:
    log = run_logger()
    log.info("gate %s: %s %s", result.name, "passed" if result.passed else "FAILED", result.note)
    for v in result.violations:
        log.warning("  %s", v.message)
    return result


@task(name="record-validation", cache_policy=NO_CACHE)
def record_validation(
    cfg: ModelConfig,
    report: ValidationReport,
    champion_version: str | None,
    actor: str,
) -> VersionInfo:
    """Tags, report artifacts and audit record on the version; the challenger alias if passed."""
    info = governance.record_validation(
        cfg, report.version, report, actor=actor, champion_version=champion_version
    )
    run_logger().info(
        "%s v%s validation %s", cfg.name, report.version, "passed" if report.passed else "FAILED"
    )
    return info


ARTIFACT_EXCLUDE = frozenset({"shap-beeswarm", "pr", "calibration"})
"""Pictures left to the model card and the console: every training run draws the artifact's
(about 0.12 s a picture), so it keeps the ones a reviewer reads first (ROC or predicted vs
actual, residuals, SHAP importance, fairness, the champion comparison); the beeswarm is also
the largest."""


def validation_pictures(report: ValidationReport) -> str:
    """The report's pictures as a markdown section, or a line saying why there are none: a
    picture that cannot be drawn never fails the flow that trained the version."""
    if not artifact_pictures():
        return "_Pictures are off for artifacts (MLSTEWARD_ARTIFACT_PICTURES); the model card "
        "and the console draw them._\n\n"
    started = time.perf_counter()
    try:
        try:
            cfg: ModelConfig | None = get_model_config(report.model)
        except MlstewardError:
            cfg = None  # the pictures only miss the outcome's name on their axes
        pictures = version_pictures(report.to_dict(), cfg, exclude=ARTIFACT_EXCLUDE)
    except Exception as exc:  # drawing is best effort here; the report itself is published
        run_logger().warning("validation pictures not drawn: %s: %s", type(exc).__name__, exc)
        return f"_Pictures could not be drawn: {type(exc).__name__}._\n"
    run_logger().info(
        "%d validation picture(s) drawn in %.2f s", len(pictures), time.perf_counter() - started
    )
    section = pictures_markdown(pictures, elsewhere="the model card (mlsteward report)")
    if section:
        section += (
            "_More pictures of this version (precision-recall, calibration, the SHAP beeswarm) "
            "are in the model card (`mlsteward report`) and the console's version page._\n\n"
        )
    return section


@task(name="publish-validation-artifacts", cache_policy=NO_CACHE)
def publish_validation(report: ValidationReport, score: HoldoutScore) -> None:
    """The report as a Prefect markdown artifact with its pictures (after the gates' overview,
    as images Prefect's UI shows), per-group fairness as a table."""
    create_markdown_artifact(
        key=artifact_key(report.model, "validation"),
        markdown=insert_before(report.to_markdown(), validation_pictures(report), "## Violations"),
        description=f"Validation of {report.model} v{report.version}: "
        f"{'passed' if report.passed else 'failed'}",
    )
    rows = [
        {"attribute": name, **group}
        for name, assessment in score.fairness.items()
        for group in assessment.groups
    ]
    if rows:
        create_table_artifact(
            key=artifact_key(report.model, "fairness"),
            table=rows,
            description=f"Per-group fairness of {report.model} v{report.version}",
        )

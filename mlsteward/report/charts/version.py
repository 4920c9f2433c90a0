"""All pictures of one validated version, from its stored validation report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.governance.evaluation_format import from_report
from mlsteward.report.charts.cache import memoised
from mlsteward.report.charts.comparison import comparison_picture
from mlsteward.report.charts.curves import calibration_picture, pr_picture, roc_picture
from mlsteward.report.charts.fairness import fairness_pictures
from mlsteward.report.charts.regression import predicted_vs_actual_picture, residuals_picture
from mlsteward.report.charts.shap_summary import beeswarm_picture, importance_picture
from mlsteward.report.charts.svg import Picture

NO_EVALUATION = (
    "No curves or SHAP pictures: this version's validation report was recorded before "
    "evaluations were stored with it. Validating the version again records one."
)


def evaluation_note(report: dict[str, Any] | None) -> str | None:
    """Why a report's curve and SHAP pictures are absent, or None when they can be drawn."""
    if report is None:
        return "Not validated: no pictures."
    return NO_EVALUATION if from_report(report) is None else None


@memoised
def version_pictures(
    validation_report: dict[str, Any],
    cfg: ModelConfig | None = None,
    *,
    exclude: frozenset[str] = frozenset(),
) -> list[Picture]:
    """Every picture a stored validation report can give, in reading order.

    The curves (ROC, precision-recall, calibration; or for a regression model predicted vs
    actual and residuals by group) and the SHAP pictures need the evaluation stored with the
    report since it was recorded (:func:`evaluation_note` says when it is missing); fairness by
    group and the champion comparison are drawn from the gates' own details, so a report of
    any age has them.

    Args:
        validation_report: ``ValidationReport.to_dict()`` as stored on the version's run (what
            ``mlsteward.api.views.read_validation`` and the model card read).
        cfg: The model's config, when at hand: the outcome's name on regression axes.
        exclude: Keys of pictures not to draw (``roc``, ``pr``, ``calibration``,
            ``predicted-vs-actual``, ``residuals``, ``shap-importance``, ``shap-beeswarm``,
            ``fairness-<attribute>``, ``champion-comparison``), e.g. where space is short.

    Returns:
        The pictures; empty when the report holds nothing to draw.
    """
    report = validation_report
    model, version = report.get("model", ""), report.get("version", "?")
    subject = f"{model} v{version}".strip()
    salt = f"{model}-v{version}"
    label = cfg.label if cfg is not None else ""
    evaluation = from_report(report) or {}
    regression = evaluation.get("task") == "regression"
    makers: list[tuple[str, Callable[[], Picture | None]]] = []
    if regression:
        makers += [
            (
                "predicted-vs-actual",
                lambda: predicted_vs_actual_picture(evaluation, subject, label, salt),
            ),
            ("residuals", lambda: residuals_picture(evaluation, subject, label, salt)),
        ]
    elif evaluation:
        makers += [
            ("roc", lambda: roc_picture(evaluation, subject, salt)),
            ("pr", lambda: pr_picture(evaluation, subject, salt)),
            ("calibration", lambda: calibration_picture(evaluation, subject, salt)),
        ]
    if evaluation:
        makers += [
            ("shap-importance", lambda: importance_picture(evaluation, subject, salt)),
            ("shap-beeswarm", lambda: beeswarm_picture(evaluation, subject, salt)),
        ]
    pictures = [p for key, make in makers if key not in exclude and (p := make()) is not None]
    gates = [g for g in report.get("gates") or [] if isinstance(g, dict)]
    fairness = next((g for g in gates if g.get("name") == "fairness"), None)
    if fairness is not None:
        pictures += fairness_pictures(fairness.get("details") or {}, subject, salt)
    if "champion-comparison" not in exclude:
        comparison = comparison_picture(report, salt)
        if comparison is not None:
            pictures.append(comparison)
    return [p for p in pictures if p.key not in exclude]

"""Monitoring-stage tasks: the drift reference and current windows, Evidently, the decision,
and the retrain claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action, AuditRecord
from mlsteward.config.models import ModelConfig
from mlsteward.config.settings import artifact_pictures, drift_reports_dir
from mlsteward.data.contract import read_source
from mlsteward.errors import MlstewardError
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.governance.mlflow_adapter import run_metrics
from mlsteward.governance.registry import VerifiedModel
from mlsteward.governance.validation import load_holdout
from mlsteward.monitoring.current_window import read_current_window
from mlsteward.monitoring.drift import compute_drift
from mlsteward.monitoring.drift_reference import (
    DriftReference,
    choose_reference,
    recorded_training_window,
)
from mlsteward.monitoring.drift_result import DriftResult
from mlsteward.monitoring.drift_sampling import reference_lines, sampling_lines
from mlsteward.monitoring.quality import quality_check, quality_lines
from mlsteward.monitoring.retrain import DriftDecision, TriggerVerdict, claim_retrain, decide
from mlsteward.monitoring.scoring import check_task, score_frame
from mlsteward.monitoring.window_sample import WindowSample
from mlsteward.report.charts import drift_history_picture
from mlsteward.report.charts.artifact import pictures_markdown
from mlsteward.report.charts.drift import MAX_CHECKS
from mlsteward.training.recorded import load_recorded
from tasks.common import artifact_key, run_logger
from tasks.scoring import contract_checked


@task(name="drift-reference", cache_policy=NO_CACHE)
def drift_reference(cfg: ModelConfig, champion: VerifiedModel) -> DriftReference:
    """The champion's holdout: the newest rows of its training snapshot, with the labels and
    the out-of-sample predictions recorded at training (a classifier's probabilities, a
    regression model's predicted values); below ``drift.min_reference_rows`` its training
    window stands in for the features and the outcome
    (:func:`mlsteward.monitoring.drift_reference.choose_reference`).

    Raises:
        MlstewardError: the champion is not a model of the config's task.
    """
    check_task(cfg, champion)
    holdout = load_holdout(champion.info)
    reference = choose_reference(
        holdout,
        lambda: recorded_training_window(
            load_recorded(champion.info, registry.download_run_file, run_metrics)
        ),
        cfg.drift.min_reference_rows,
        version=champion.info.version,
    )
    run_logger().info(
        "reference: %s, %d rows (%s)", reference.what, len(reference.frame), reference.why
    )
    return reference


@task(name="drift-current-from-file", cache_policy=NO_CACHE)
def current_from_file(cfg: ModelConfig, champion: VerifiedModel, source: str) -> pd.DataFrame:
    """A given file in the source format: contract-checked (label optional), then scored by the
    champion so prediction drift can be measured too."""
    path = Path(source).expanduser().resolve()
    raw = read_source(path, cfg)
    has_label = cfg.label in raw.columns
    good = contract_checked(cfg, raw, str(path), require_label=has_label)
    scored = score_frame(cfg, champion, good, top_k=0).frame
    if has_label:
        scored[cfg.label] = good[cfg.label].to_numpy()
    return scored


@task(name="drift-current-from-log", cache_policy=NO_CACHE)
def current_from_log(cfg: ModelConfig, window_days: float) -> WindowSample:
    """The prediction-log window (by scoring time), with outcomes where they have arrived.

    The outcome column keeps its nulls: drift compares features and predictions on every row
    and target drift and quality on the labelled rows only, so a window whose outcomes are
    still arriving is measured as far as it can be rather than not at all. A window larger
    than twice ``cfg.drift.max_rows`` is pre-sampled while it is read (see
    :func:`mlsteward.monitoring.window_sample.sample_window`), so a worker's memory does not
    grow with the window.
    """
    since = datetime.now(UTC) - timedelta(days=window_days)
    window = read_current_window(cfg, since)
    if window.rows == 0:
        raise MlstewardError(
            f"{cfg.name}: no predictions logged in the last {window_days:g} days; score a "
            "batch first or pass --current PATH"
        )
    run_logger().info(
        "current: %d logged predictions since %s, %d of them with an outcome (%.0f%%); %s",
        window.rows,
        since.isoformat(),
        window.labelled_rows,
        100.0 * window.labelled_rows / window.rows,
        "read whole"
        if window.presample is None
        else f"pre-sampled to {len(window.frame)} rows (seed {window.presample['seed']}, "
        f"rate {window.presample['rate']:.4g}; at most {window.peak_retained_rows} rows held)",
    )
    return window


@task(name="detect-drift", cache_policy=NO_CACHE)
def detect_drift(
    cfg: ModelConfig,
    champion: VerifiedModel,
    reference: DriftReference,
    current: pd.DataFrame | WindowSample,
) -> DriftResult:
    """Evidently on both windows; the HTML report is kept and logged against the champion.

    ``current`` is a frame (a given file) or a prediction-log window, whose pre-sample (if
    any) is passed on so the result and the report describe the whole window. The model's
    output and the quality are compared with the holdout whatever the features' reference.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    html = drift_reports_dir(cfg.name) / f"drift-{stamp}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    window = current if isinstance(current, WindowSample) else None
    result = compute_drift(
        reference.frame,
        window.frame if window is not None else current,
        cfg,
        label_column=cfg.label,
        html_path=html,
        # never the version's tag for a regression model: it reads 0.5 untagged
        decision_threshold=None if champion.is_regression else champion.info.decision_threshold,
        current_labelled=window.labelled if window is not None else None,
        presample=window.presample if window is not None else None,
        output_reference=reference.output_reference,
        reference_info=reference.info(),
    )
    result.report_uri = registry.log_version_artifact(
        champion.info, html, f"drift/v{champion.info.version}"
    )
    return result


@task(name="record-drift", cache_policy=NO_CACHE)
def record_drift(
    cfg: ModelConfig, result: DriftResult, decision: DriftDecision, version: str, actor: str
) -> None:
    """The drift history (audit trail) and a Prefect artifact with the drifted columns, and with
    outcomes the watched quality metric's two values against the retrain limit."""
    check = quality_check(result.performance, cfg)
    columns = result.to_dict()["columns"]
    summary = {
        "drifted_columns": result.drifted_columns,
        "dataset_drift_share": result.dataset_drift_share,
        "prediction_drift": result.prediction_drift.drifted if result.prediction_drift else None,
        "decision": decision.to_dict(),
        "report": result.report_path,
        "report_uri": result.report_uri,
        "rows": result.rows,
        "sampling": result.sampling,
        "notes": result.notes,
        "reference": result.reference,
        "columns": {c: v["score"] for c, v in columns.items()},
        "thresholds": {c: v["threshold"] for c, v in columns.items()},
        "psi": {c: v["psi"] for c, v in columns.items()},
        "min_detectable_shift": {c: v["min_detectable_shift"] for c, v in columns.items()},
        **({"quality": check.to_dict()} if check is not None else {}),
    }
    with governance.open_audit() as audit:
        audit.append(
            Action.DRIFT_DETECTED if result.drifted_columns else Action.DRIFT_CHECKED,
            model=cfg.name,
            version=version,
            actor=actor,
            reason="; ".join(decision.reasons)
            or (f"{len(result.drifted_columns)} drifted column(s), no retrain"),
            details=summary,
        )
        history = [
            r
            for action in (Action.DRIFT_CHECKED, Action.DRIFT_DETECTED)
            for r in audit.query(model=cfg.name, action=action, limit=MAX_CHECKS)
        ]
    # drifted columns first, then the rest, each in config order
    ordered = sorted(result.columns.values(), key=lambda c: not c.drifted)
    rows = "\n".join(
        f"| {c.column} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | "
        f"{_shift_text(c.min_detectable_shift, c.kind)} | {_number(c.psi)} | "
        f"{'**drifted**' if c.drifted else 'ok'} |"
        for c in ordered
    )
    # the model's output and the outcome, in words above the features' table
    outputs = (("Model output", result.prediction_drift), ("Outcome", result.target_drift))
    beside = [
        f"{role} ({c.column}): {c.kind}, {c.method} {c.score:.4g} against {c.threshold:.4g}, "
        f"{'drifted' if c.drifted else 'no drift'}"
        for role, c in outputs
        if c is not None
    ]
    report = (
        f"[{Path(result.report_path).name}]({Path(result.report_path).as_uri()})"
        if result.report_path
        else "not written"
    )
    create_markdown_artifact(
        key=artifact_key(cfg.name, "drift"),
        markdown=(
            f"# Drift of {cfg.name} (champion v{version})\n\n"
            f"Drifted: {', '.join(result.drifted_columns) or 'none'} "
            f"(share {result.dataset_drift_share:.2f}). Decision: "
            f"{'retrain' if decision.retrain else 'no retrain'}"
            f"{': ' + '; '.join(decision.reasons) if decision.reasons else ''}.\n\n"
            + "".join(f"Note: {n}.\n\n" for n in result.notes)
            + "".join(f"{line}.\n\n" for line in beside)
            + "".join(
                f"Quality on outcomes: {line}.\n\n"
                for line in quality_lines(result.performance, cfg)
            )
            + "".join(f"Reference: {line}.\n\n" for line in reference_lines(result.reference))
            + "".join(
                f"Rows compared: {line}.\n\n"
                for line in sampling_lines(result.sampling, result.rows)
            )
            + f"Evidently report: {report} (in MLflow: `{result.report_uri}`)\n\n"
            + drift_pictures(cfg, history)
            + "| column | method | score | threshold | detectable shift | PSI | verdict |\n"
            + "|---|---|---|---|---|---|---|\n"
            + rows
        ),
        description=f"Drift of {cfg.name}: {len(result.drifted_columns)} drifted column(s)",
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _shift_text(shift: float | None, kind: str) -> str:
    """The smallest shift the column's test flags at least half the time, with its unit."""
    if shift is None:
        return "-"
    return f"{shift:.3g} SD" if kind == "numeric" else f"{shift:.3g} of a share"


def drift_pictures(cfg: ModelConfig, history: list[AuditRecord]) -> str:
    """The drift history (every column's score at each check, against its threshold) as a
    markdown image, or a line saying why not: a picture never fails the drift run."""
    if not artifact_pictures():
        return ""
    try:
        picture = drift_history_picture(history, cfg, subject=cfg.name)
    except Exception as exc:  # drawing is best effort here; the record is already written
        run_logger().warning("drift picture not drawn: %s: %s", type(exc).__name__, exc)
        return f"_The drift history could not be drawn: {type(exc).__name__}._\n\n"
    return pictures_markdown([picture] if picture else [], heading="## Drift history")


@task(name="claim-retrain", cache_policy=NO_CACHE)
def claim_retrain_slot(
    cfg: ModelConfig, reasons: list[str], running: list[str], actor: str, details: dict[str, Any]
) -> TriggerVerdict:
    with governance.open_audit() as audit:
        verdict = claim_retrain(
            cfg, audit, reasons=reasons, actor=actor, running=running, details=details
        )
    log = run_logger()
    (log.info if verdict.allowed else log.warning)("retrain %s: %s",
        "triggered" if verdict.allowed else "suppressed", verdict.reason)  # fmt: skip
    return verdict


def decide_on_drift(cfg: ModelConfig, result: DriftResult) -> DriftDecision:
    return decide(result.drifted_columns, result.dataset_drift_share, result.performance, cfg)

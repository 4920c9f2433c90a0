"""Process review tasks: the report built and written, its special causes told as alerts, the
review audited, and the Prefect artifact a person opens from the run."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.alerts.engine import AlertOutcome
from mlsteward.audit import audit_store
from mlsteward.process.build import build_report, model_configs
from mlsteward.process.control import alert_special_causes, record_review
from mlsteward.process.render import render_markdown, write_report
from mlsteward.process.review import ProcessReport
from mlsteward.report.write import reports_dir
from tasks.common import run_logger


@task(name="process-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def build_report_task(
    model: str | None, since: datetime | None, until: datetime | None
) -> ProcessReport:
    report = build_report(model, since=since, until=until)
    for scope, r in report.scopes.items():
        run_logger().info(
            "%s: %d chart(s), %d special cause(s), %d current",
            scope,
            len(r.charts),
            len(r.special_causes),
            len(r.current_causes),
        )
    return report


@task(name="write-process-report", cache_policy=NO_CACHE)
def write_report_task(report: ProcessReport) -> dict[str, str]:
    stem = f"process-review-{report.generated_at:%Y%m%dT%H%M%SZ}"
    paths = write_report(report, reports_dir() / "process", stem)
    create_markdown_artifact(
        key="process-review",
        markdown=render_markdown(report, link=paths["html"]),
        description=f"Process review: {len(report.current_causes)} current special cause(s)",
    )
    return paths


@task(name="process-alerts", cache_policy=NO_CACHE)
def alert_task(report: ProcessReport, model: str | None, actor: str) -> list[dict]:
    outcomes: list[AlertOutcome] = alert_special_causes(report, model_configs(model), actor=actor)
    for o in outcomes:
        if o.transition is not None and o.transition.value in ("fired", "reminded", "resolved"):
            run_logger().warning("alert %s: %s", o.transition.value, o.observation.summary)
    return [o.to_dict() for o in outcomes]


@task(name="record-process-review", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def record_task(report: ProcessReport, files: dict[str, str], actor: str) -> int:
    with audit_store() as audit:
        return record_review(report, audit, actor=actor, files=files).seq

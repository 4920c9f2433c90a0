"""The process review: the delivery process measured and put under control, weekly.

DMAIC's Measure and Control on a schedule: lead and cycle times, gate and run failure rates
charted against their baselines, Cpk against the targets, special causes told as alerts, the
report written (HTML and JSON) and shown as a Prefect artifact, the review audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from tasks.common import run_actor
from tasks.process import alert_task, build_report_task, record_task, write_report_task


@flow(name="process-review", log_prints=True)
def process_review_flow(
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Review every model's delivery process (or ``model``'s) over ``since``..``until``
    (default: the last 90 days).

    Args:
        model: one model; default every model and all of them together.
        since: start of the period (UTC).
        until: end of the period (default now).
        requested_by: the principal the run acts for, when a command or the API started it.
    """
    actor = run_actor(requested_by)
    # 1. measure: the records and runs into metrics, charts, capability and special causes
    report = build_report_task(model, since, until)
    # 2. show: the report's files and the run's artifact
    files = write_report_task(report)
    # 3. control: current special causes become alerts; the review is audited
    alerts = alert_task(report, model, actor)
    record_task(report, files, actor)
    return {
        "files": files,
        "alerts": alerts,
        "current_special_causes": [{"scope": s, **c.to_dict()} for s, c in report.current_causes],
        "report": report.to_dict(),
    }

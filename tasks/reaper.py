"""The reaper as tasks: a pass at the start of the training, rollout and drift runs, which never
fails the run it starts, and the scheduled pass of the ``reaper`` flow, which does fail when it
cannot do its work.

The reaper itself is ``mlsteward.governance.reaper``: runs of the project's flows whose
heartbeat stopped are marked Crashed, and canaries their rollout runs left open are closed.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.governance.reaper import ReapReport, reap
from tasks.common import run_logger


def _log(report: ReapReport) -> None:
    logger = run_logger()
    for run in report.reaped:
        logger.warning(
            "reaped %s run %s (%s): %s", run.flow_name, run.flow_run_name, run.flow_run_id,
            run.message,
        )  # fmt: skip
    for settled in report.promotions:
        logger.warning("the reaped run's promotion: %s", settled)
    for closed in report.closed:
        logger.warning("closed the canary of %s: %s", closed.model, closed.reason)
    for note in report.left:
        logger.info("reaper: %s", note)
    logger.info("reaper: %s", report.summary())


@task(name="reap-dead-runs", cache_policy=NO_CACHE)
def reap_dead_runs(timeout_seconds: float | None = None) -> ReapReport:
    """One pass over every model (the ``reaper`` flow's): a failure fails the task."""
    report = reap(timeout_seconds=timeout_seconds)
    _log(report)
    return report


@task(name="reap-before-start", cache_policy=NO_CACHE)
def reap_before_start(model: str) -> ReapReport | None:
    """Clear what dead runs left before this run starts (a dead training run blocks a retrain,
    a dead rollout holds the canary). A problem of the reaper's own is a warning, never the
    run's failure: it costs two Prefect API calls when nothing is dead."""
    try:
        report = reap(models=[model])
    except Exception as exc:  # the reaper is housekeeping: the run goes on without it
        run_logger().warning("the reaper could not check for dead runs: %s", exc)
        return None
    _log(report)
    return report

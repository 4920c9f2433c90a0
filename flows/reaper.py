"""The reaper flow, for a schedule: runs whose process died are marked Crashed and the canaries
their rollouts left open are closed, between the runs that do it at their own start."""

from __future__ import annotations

from prefect import flow

from mlsteward.governance.reaper import ReapReport
from tasks.reaper import reap_dead_runs


@flow(name="reaper", log_prints=True)
def reaper_flow(timeout_seconds: float | None = None) -> ReapReport:
    """Mark Crashed every run of the project's flows whose heartbeat is older than the timeout,
    and close every canary whose rollout run is gone; each action audited.

    Args:
        timeout_seconds: how old a run's last heartbeat may be (default:
            MLSTEWARD_REAPER_TIMEOUT_SECONDS, else 300 s).
    """
    return reap_dead_runs(timeout_seconds)

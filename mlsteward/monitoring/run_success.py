"""The pipeline's own health: the share of a model's flow runs that completed (seed: alert
below 95%), from Prefect's run history, the one place every run is recorded.

A model's runs are those carrying its tag, which every deployment of it sets (``prefect.yaml``:
``tags: [mlsteward, <stage>, <model>]``). Runs still going, and runs a person cancelled, say
nothing about health and are not counted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig

_FINISHED = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]


def run_success(cfg: ModelConfig, *, now: datetime | None = None) -> Observation:
    """Completed over finished runs of the model's deployments in the rule's window."""
    rule = cfg.alerts.rules.success_rate
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=rule.window_hours)

    def runs(states: list[StateType]) -> FlowRunFilter:
        return FlowRunFilter(
            tags=FlowRunFilterTags(all_=["mlsteward", cfg.name]),
            start_time=FlowRunFilterStartTime(after_=since),  # type: ignore[arg-type]
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
        )

    with get_client(sync_client=True) as client:
        finished = client.count_flow_runs(flow_run_filter=runs(_FINISHED))
        failing = runs([StateType.FAILED, StateType.CRASHED])
        failed = client.count_flow_runs(flow_run_filter=failing)
        worst = sorted({r.name for r in client.read_flow_runs(flow_run_filter=failing, limit=5)})
    rate = (finished - failed) / finished if finished else 1.0
    return Observation(
        rule="success_rate",
        breached=(rate < rule.min) if finished >= rule.min_runs else None,
        summary=f"{finished - failed:,} of {finished:,} runs completed in the last "
        f"{rule.window_hours:g} h ({rate:.0%}; alert below {rule.min:.0%})",
        value=rate,
        limit=rule.min,
        details={"finished": finished, "failed": failed, "failed_runs": worst},
    )

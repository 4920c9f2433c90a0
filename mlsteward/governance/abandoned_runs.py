"""MLflow training runs left RUNNING by a flow run that has ended: ended as FAILED.

A training flow that fails ends its MLflow run as FAILED, unless the failure is the tracking
server itself: then the run cannot be ended either, and stays RUNNING after the server is back
(measured: tests/faults/test_mlflow_faults.py), for ever, with the trial run it was logging; a
RUNNING training run keeps its snapshot from ``mlsteward gc`` and reads as work in progress in
the MLflow UI. The reaper ends the runs of flow runs whose process died; this ends those of
flow runs that ended (failed, crashed, cancelled) but could not say so to MLflow. The next
training run of the model calls it as it opens its own run.
"""

from __future__ import annotations

import logging
from uuid import UUID

from mlsteward.governance.approvals import prefect_api_configured
from mlsteward.governance.mlflow_adapter import PARENT_TAG, client
from mlsteward.governance.reaper import FLOW_RUN_TAG

log = logging.getLogger("mlsteward.governance")


def end_abandoned_runs(model: str) -> list[str]:
    """End as FAILED every RUNNING training run of ``model`` whose flow run is over, and its
    trial runs still RUNNING; the ids ended. Nothing is judged without a Prefect server (the
    flow runs cannot be read) or for a run whose flow run it does not know."""
    if not prefect_api_configured():
        return []
    c = client()
    experiment = c.get_experiment_by_name(model)
    if experiment is None:
        return []
    running = c.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    training = {
        r.info.run_id: r.data.tags[FLOW_RUN_TAG]
        for r in running
        if PARENT_TAG not in r.data.tags and FLOW_RUN_TAG in r.data.tags
    }
    over = [run_id for run_id, flow_run in training.items() if _flow_run_over(flow_run)]
    trials = [r.info.run_id for r in running if r.data.tags.get(PARENT_TAG) in over]
    for run_id in [*trials, *over]:
        c.set_terminated(run_id, status="FAILED")
    if over:
        log.warning(
            "%s: ended %d MLflow training run(s) left RUNNING by flow runs that are over: %s",
            model, len(over), ", ".join(over),
        )  # fmt: skip
    return [*over, *trials]


def _flow_run_over(flow_run_id: str) -> bool:
    """Whether the flow run is in a final state; False when it cannot be read."""
    from prefect import get_client  # start-up time: Prefect loads lazily
    from prefect.exceptions import ObjectNotFound

    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        return False  # "none": trained without a flow run to ask about
    with get_client(sync_client=True) as prefect:
        try:
            state = prefect.read_flow_run(run_id).state
        except ObjectNotFound:
            return False
    return state is not None and state.is_final()

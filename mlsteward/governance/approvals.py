"""Answering a paused promotion from outside the Prefect UI (``mlsteward approve``).

The flow records the decision in the audit trail when it resumes, with the approver and
reason sent here, so one place writes approval records whichever channel was used.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from mlsteward.errors import MlstewardError, NotFoundError

FORM_WAIT_SECONDS = 15.0


def answer_approval(
    flow_run_id: str, *, approve: bool, approver: str, reason: str
) -> dict[str, Any]:
    """Resume a paused flow run with an approval form answer.

    Raises:
        NotFoundError: no such flow run.
        MlstewardError: the run is not paused waiting for an approval, or the input is empty.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    if not approver.strip() or not reason.strip():
        raise MlstewardError("--approver and --reason must not be empty")
    try:
        run_uuid = UUID(flow_run_id)
    except ValueError as exc:
        raise MlstewardError(f"{flow_run_id!r} is not a flow run id (a UUID)") from exc
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_uuid)
        except ObjectNotFound as exc:
            raise NotFoundError(f"no flow run {flow_run_id} on this Prefect API") from exc
    state = run.state
    if state is None or not state.is_paused():
        raise MlstewardError(
            f"flow run {flow_run_id} ({run.name}) is {state.name if state else 'without state'}, "
            "not paused waiting for approval"
        )
    keyset = state.state_details.run_input_keyset
    if keyset is None:
        raise MlstewardError(f"flow run {flow_run_id} ({run.name}) is paused but asks for no input")
    _wait_for_form(run_uuid, keyset["schema"])
    decision = "approve" if approve else "reject"
    resume_flow_run(
        run_uuid, run_input={"decision": decision, "approver": approver, "reason": reason}
    )
    return {
        "flow_run_id": flow_run_id,
        "flow_run_name": run.name,
        "decision": decision,
        "approver": approver,
        "reason": reason,
    }


def _wait_for_form(flow_run_id: UUID, schema_key: str, timeout: float = FORM_WAIT_SECONDS) -> None:
    """A flow enters Paused a moment before it stores its form; an answer sent in between
    would be refused, so wait for the form."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                client.read_flow_run_input(flow_run_id, schema_key)
                return
            except (ObjectNotFound, PrefectHTTPStatusError) as exc:
                # the sync client reports a missing input as a plain HTTP 404
                status = getattr(getattr(exc, "response", None), "status_code", 404)
                if status != 404:
                    raise
                if time.monotonic() > deadline:
                    raise MlstewardError(
                        f"flow run {flow_run_id} is paused but its approval form never appeared"
                    ) from None
                time.sleep(0.2)

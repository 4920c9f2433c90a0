"""Answering a paused promotion from outside the Prefect UI: the one place that resumes a
flow run with a form answer (``governance.decisions`` calls it for ``mlsteward approve`` and
the API).

The answer carries an approval token minted for the approving principal; the flow redeems it
when it resumes and records the decision itself, so one place writes approval records
whichever channel was used.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from mlsteward.errors import MlstewardError, NotFoundError

FORM_WAIT_SECONDS = 15.0

log = logging.getLogger("mlsteward")


def prefect_api_configured() -> bool:
    """Whether this process talks to a Prefect server. Without one, asking Prefect would start
    a temporary server (10-15 s) that knows no run: no run can be waiting on it."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def check_run_id(flow_run_id: str) -> UUID:
    """Raises:
    MlstewardError: not a flow run id.
    """
    try:
        return UUID(str(flow_run_id))
    except ValueError:
        raise MlstewardError(f"{flow_run_id!r} is not a flow run id (a UUID)") from None


def paused_run(flow_run_id: str) -> tuple[str, str]:
    """(run name, form schema key) of a run paused for an answer.

    Raises:
        NotFoundError: no such flow run.
        MlstewardError: the run is not paused waiting for input.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    run_uuid = check_run_id(flow_run_id)
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
    return run.name, keyset["schema"]


def first_paused(flow_run_ids: list[str]) -> str | None:
    """The first of ``flow_run_ids`` paused waiting for an answer, or None (also when no
    Prefect server is configured, or a run is on another server)."""
    if not flow_run_ids or not prefect_api_configured():
        return None
    for run_id in flow_run_ids:
        try:
            paused_run(run_id)
        except MlstewardError:
            continue
        except Exception as exc:  # the server is down or refuses: no run can be answered there
            log.warning("could not ask Prefect about flow run %s: %s", run_id, exc)
            continue
        return run_id
    return None


def resume_with_answer(
    flow_run_id: str, *, decision: str, reason: str, approval_token: str, approver: str
) -> dict[str, Any]:
    """Resume a paused flow run with a form answer carrying an approval token.

    Raises:
        NotFoundError: no such flow run.
        MlstewardError: the run is not paused waiting for an answer.
    """
    from prefect.flow_runs import resume_flow_run

    name, schema_key = paused_run(flow_run_id)
    run_uuid = check_run_id(flow_run_id)
    _wait_for_form(run_uuid, schema_key)
    resume_flow_run(
        run_uuid,
        run_input={
            "decision": decision,
            "reason": reason,
            "approval_token": approval_token,
            "approver": approver,
        },
    )
    return {"flow_run_id": str(flow_run_id), "flow_run_name": name, "decision": decision}


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

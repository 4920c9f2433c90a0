"""Small helpers shared by task modules."""

from __future__ import annotations

import logging
import re

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run (so lines show in the UI), plain logging outside."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("mlsteward")


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    return "-".join(p.lower().replace("_", "-") for p in parts)


ACTING_FOR = re.compile(r"(user|service|local):[A-Za-z][A-Za-z0-9._@-]{0,63}")
"""A principal's identity as a run's ``requested_by`` parameter (``user:alice``)."""


def run_actor(requested_by: str | None = None) -> str:
    """The audit actor of this run: the flow run (so the trail links to its logs), acting for
    ``requested_by`` when the CLI, the API or the gateway started it for a principal
    (``flow-run:<id> for user:alice``)."""
    from mlsteward.errors import MlstewardError

    if requested_by is not None and not ACTING_FOR.fullmatch(requested_by):
        raise MlstewardError(
            f"requested_by {requested_by[:80]!r} is not a principal (user:NAME or service:NAME)"
        )
    run_id = flow_run.get_id()
    who = f"flow-run:{run_id}" if run_id else None
    if who and requested_by:
        return f"{who} for {requested_by}"
    return who or requested_by or "system"

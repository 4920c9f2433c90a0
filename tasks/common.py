"""Small helpers shared by task modules."""

from __future__ import annotations

import logging

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


def run_actor() -> str:
    """Who acts when no person does: the flow run, so the audit trail links to its logs."""
    run_id = flow_run.get_id()
    return f"flow-run:{run_id}" if run_id else "system"

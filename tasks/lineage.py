"""OpenLineage run events of the ingestion, training, scoring and drift flows, as state hooks.

A flow takes them in its decorator (``@flow(..., **lineage_hooks("training"))``): START when
it runs, COMPLETE with what it read and wrote (its result says), FAIL with the error, ABORT when
it crashed or was cancelled. A hook only gathers what Prefect knows (the run's id, parameters,
parent run, result or exception) and hands it to ``mlsteward.data.lineage_events``; the events
go where ``mlsteward.config.settings.lineage_settings`` says. Nothing here fails a run: an
event that cannot be built or sent is one warning, and the run goes on.

Imports nothing of governance, training or monitoring, so ``mlsteward ingest`` stays light.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import Flow
from prefect.client.schemas.objects import FlowRun
from prefect.logging.loggers import flow_run_logger
from prefect.states import State

from mlsteward.config.lineage import LineageSettings
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.settings import lineage_settings

if TYPE_CHECKING:
    from mlsteward.data.lineage_events import EventType, FlowKind, ParentRef

Hook = Callable[[Flow[Any, Any], FlowRun, State[Any]], None]
_MAX_DEPTH = 8
"""Subflows nest this deep at most when the root run is looked for."""


def lineage_hooks(kind: FlowKind) -> dict[str, list[Hook]]:
    """The state hooks that report a ``kind`` flow's runs, as ``@flow`` keyword arguments."""

    def openlineage_start(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        report(kind, "START", flow, flow_run, state)

    def openlineage_complete(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        report(kind, "COMPLETE", flow, flow_run, state)

    def openlineage_fail(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        report(kind, "FAIL", flow, flow_run, state)

    def openlineage_abort(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        report(kind, "ABORT", flow, flow_run, state)

    return {
        "on_running": [openlineage_start],
        "on_completion": [openlineage_complete],
        "on_failure": [openlineage_fail],
        "on_crashed": [openlineage_abort],
        "on_cancellation": [openlineage_abort],
    }


def report(
    kind: FlowKind,
    event_type: EventType,
    flow: Flow[Any, Any],
    flow_run: FlowRun,
    state: State[Any],
) -> None:
    """Build and send one event of the run; any failure is one warning, never the run's."""
    logger = _logger(flow, flow_run)
    settings: LineageSettings | None = None
    try:
        settings = lineage_settings()
        if not settings.enabled:
            return
        # start-up time: the OpenLineage client is ~0.4 s of imports, paid at a run's first
        # event rather than by every command that imports a flow
        from mlsteward.data.lineage_emitter import emit_event
        from mlsteward.data.lineage_events import flow_io, run_event

        parameters = _parameters(flow, flow_run)
        model = _text(parameters.get("model"))
        result = _result(state) if event_type == "COMPLETE" else None
        event = run_event(
            event_type,
            run_id=str(flow_run.id),
            flow=flow.name,
            model=model,
            namespace=settings.namespace,
            io=flow_io(kind, _config(model), parameters, result),
            parent=_parent(flow_run),
            error=_error(state) if event_type in ("FAIL", "ABORT") else None,
        )
    except Exception as exc:  # a bad setting or an unexpected result: the run goes on
        _warn(settings, exc, logger)
        return
    emit_event(event, settings, logger)


def _warn(
    settings: LineageSettings | None,
    exc: Exception,
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Once per process: per destination when the settings are known, else per error."""
    try:
        from mlsteward.data.lineage_emitter import first_time, warn_once

        if settings is not None:
            warn_once(settings, exc, logger)
            return
        if not first_time(f"settings: {exc}"):
            return
    except Exception:  # the emitter itself cannot load: say so plainly below
        pass
    logger.warning("OpenLineage events are off: %s (said once per process)", exc)


def _logger(flow: Flow[Any, Any], flow_run: FlowRun) -> logging.Logger | logging.LoggerAdapter:
    """The run's own logger, so a warning shows with the run in the UI."""
    try:
        return flow_run_logger(flow_run=flow_run, flow=flow)
    except Exception:  # no API to log to (a bare process): plain logging
        return logging.getLogger("mlsteward.lineage")


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _parameters(flow: Flow[Any, Any], flow_run: FlowRun) -> dict[str, Any]:
    """The run's parameters over the flow's defaults (a call may leave ``model`` out)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(flow.fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **(flow_run.parameters or {})}


def _config(model: str | None) -> ModelConfig | None:
    """The model's config, or None when it cannot be read (the run fails on it by itself)."""
    if model is None:
        return None
    try:
        return get_model_config(model)
    except Exception:  # an unknown model or a broken config: events without its columns
        return None


def _result(state: State[Any]) -> Mapping[str, Any] | None:
    """The completed flow's return value as a dict (every result is a pydantic model)."""
    value = state.result(raise_on_failure=False, _sync=True)
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump()
        return dumped
    return value if isinstance(value, Mapping) else None


def _error(state: State[Any]) -> BaseException | str:
    """The exception a failed run raised, else the state's message (a crash, a cancel)."""
    try:
        value = state.result(raise_on_failure=False, _sync=True)
    except Exception:  # a result that cannot be read back: the message says enough
        value = None
    if isinstance(value, BaseException):
        return value
    return state.message or state.name or "unknown"


def _parent(flow_run: FlowRun) -> ParentRef | None:
    """The flow run that started this one as a subflow, and the root of the chain, from the
    Prefect API (a subflow knows only the task run in its parent that stands for it)."""
    if flow_run.parent_task_run_id is None:
        return None
    # start-up time: only a subflow asks the API about its parents
    from prefect import get_client

    from mlsteward.data.lineage_events import ParentRef, job_name

    chain: list[tuple[str, str]] = []
    task_run_id: UUID | None = flow_run.parent_task_run_id
    with get_client(sync_client=True) as client:
        while task_run_id is not None and len(chain) < _MAX_DEPTH:
            task_run = client.read_task_run(task_run_id)
            if task_run.flow_run_id is None:
                break
            parent = client.read_flow_run(task_run.flow_run_id)
            name = client.read_flow(parent.flow_id).name
            chain.append((str(parent.id), job_name(name, _text(parent.parameters.get("model")))))
            task_run_id = parent.parent_task_run_id
    if not chain:
        return None
    (run_id, job), (root_id, root_job) = chain[0], chain[-1]
    return ParentRef(run_id=run_id, job=job, root_run_id=root_id, root_job=root_job)

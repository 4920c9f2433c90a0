"""What the process metrics read: the audit trail's governance events and Prefect's run history,
each read once and kept as plain data.

No second bookkeeping: every delivery event is already an audit record (ingestion, registration,
validation, approval, promotion, rollback, drift, retrain) and every run is already in Prefect.
Reading is the expensive part of a process report, so it reads only what the metrics use:

* the audit trail: one query per action the metrics use (``ACTIONS``), each from the store's
  ``(action, seq)`` index, starting ``lookback`` before the period (a version decided in the
  period may have been ingested before it); each record's details are reduced once to the few
  facts the metrics join on (a data digest, the failed gates and their metrics, a rollback's
  ``from``, a promotion's intent) and its actor to the flow run it names;
* Prefect: the flow runs that started in the period, in pages of ``PAGE`` (the server caps a
  page at 200), the names of their flows once by id, and, of the training runs, the task runs of
  the stages that have a cycle time (``STAGE_TASKS``). Subflow runs (``tune-trials``) are left
  out: each is a part of its parent run, whose tuning stage is its tracking task run.

When no Prefect API answers, the run history is empty and says why (``RunHistory.note``): the
audit part of the report still stands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterId,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentTaskRunId,
    FlowRunFilterStartTime,
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from mlsteward.audit import Action, AuditRecord, AuditStore, audit_store
from mlsteward.errors import MlstewardError

ACTIONS: tuple[str, ...] = tuple(
    a.value
    for a in (
        Action.INGESTION_ACCEPTED,
        Action.VERSION_REGISTERED,
        Action.VALIDATION_PASSED,
        Action.VALIDATION_FAILED,
        Action.APPROVAL_REQUESTED,
        Action.APPROVAL_GRANTED,
        Action.APPROVAL_REJECTED,
        Action.APPROVAL_TIMED_OUT,
        Action.PROMOTION_INTENT,
        Action.PROMOTED,
        Action.PROMOTION_REFUSED,
        Action.ROLLBACK,
        Action.DRIFT_DETECTED,
        Action.RETRAIN_TRIGGERED,
        Action.WEBHOOK_ACCEPTED,
    )
)
"""The audit actions the metrics use; nothing else is read."""

DEFAULT_LOOKBACK = timedelta(days=90)
"""How far before the period the audit trail is read: a version decided in the period was
ingested, registered and first validated before its decision. A data version ingested longer
ago than this before the period has no lead time."""

PAGE = 200
"""Flow and task runs per request: the Prefect server's default (and largest) page."""

TRAINING_FLOW = "train-model"
INGEST_FLOW = "ingest-data"

STAGE_TASKS: Mapping[str, str] = {
    "retrieve-training-set": "retrieval",
    "retrieve-partitioned-training-set": "retrieval",
    "tune-hyperparameters": "tuning",
    "tune-trials": "tuning",  # the tracking task run of the tuning subflow: its whole span
    "score-holdout": "gates",
    "gate-metric-thresholds": "gates",
    "gate-fairness": "gates",
    "gate-champion-comparison": "gates",
    "record-validation": "gates",
}
"""The training flow's task names (``tasks/``, ``flows/training.py``) by the stage they time."""

_TASK_PATTERNS = ("retrieve-", "tune-", "gate-", "score-holdout", "record-validation")
"""Name fragments the server matches (``like_``): one query each, only the stages' tasks."""

FLOW_RUN_ACTOR = re.compile(r"^flow-run:([0-9a-fA-F-]{36})\b")
"""An audit actor naming the run that wrote the record (``flow-run:<id> for local:root``)."""


class ProcessError(MlstewardError):
    """The process history or its metrics were asked something that cannot be answered (a
    period that ends before it starts, an unknown subgroup)."""


# -- the audit part ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record as the metrics see it: when, what, about which version, written by
    which flow run, and the few details they join on."""

    seq: int
    at: datetime
    action: str
    model: str | None
    version: str | None
    flow_run: str | None = None
    """The flow run the actor names (``flow-run:<id> …``), if any."""
    digest: str | None = None
    """``ingestion_accepted``: the data version; ``version_registered``: its data digest."""
    reasons: tuple[tuple[str, str | None], ...] = ()
    """``validation_failed``: each failed gate with a metric its violations name (one entry per
    gate and metric; a failed gate whose violations name none: ``(gate, None)``)."""
    rolled_from: str | None = None
    """``rollback``: the version rolled away from; ``promoted``: the champion it replaced."""
    intent_seq: int | None = None
    """``promoted``: the ``promotion_intent`` record it completes."""
    runs: tuple[tuple[str, str, str], ...] = ()
    """``webhook_accepted``: the runs it started, as (action, model, flow run id)."""


@dataclass(frozen=True)
class AuditHistory:
    """The audit events the metrics use, oldest first, read from ``since`` on."""

    events: list[AuditEvent]
    since: datetime | None
    url: str = ""


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _reasons(details: Mapping[str, Any]) -> tuple[tuple[str, str | None], ...]:
    gates = details.get("gates") or {}
    failed = [g for g, ok in gates.items() if not ok] if isinstance(gates, Mapping) else []
    named: dict[str, list[str]] = {}
    for v in details.get("violations") or ():
        if isinstance(v, Mapping) and v.get("gate"):
            metrics = named.setdefault(str(v["gate"]), [])
            metric = v.get("metric")
            if metric is not None and str(metric) not in metrics:
                metrics.append(str(metric))
    out: list[tuple[str, str | None]] = []
    for gate in [*failed, *(g for g in named if g not in failed)]:
        metrics = named.get(gate) or []
        out += [(gate, m) for m in metrics] if metrics else [(gate, None)]
    return tuple(out)


def _started_runs(details: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    out = []
    for run in details.get("runs") or ():
        if isinstance(run, Mapping) and run.get("flow_run_id"):
            out.append((str(run.get("action")), str(run.get("model")), str(run["flow_run_id"])))
    return tuple(out)


def audit_event(record: AuditRecord) -> AuditEvent:
    """The facts of one record the metrics use (details are read here, once)."""
    d = record.details
    action = record.action
    found = FLOW_RUN_ACTOR.match(record.actor)
    digest = rolled_from = None
    intent = None
    reasons: tuple[tuple[str, str | None], ...] = ()
    runs: tuple[tuple[str, str, str], ...] = ()
    if action == Action.INGESTION_ACCEPTED:
        digest = d.get("data_version")
    elif action == Action.VERSION_REGISTERED:
        digest = d.get("data_digest")
    elif action == Action.VALIDATION_FAILED:
        reasons = _reasons(d)
    elif action == Action.ROLLBACK:
        rolled_from = d.get("from")
    elif action == Action.PROMOTED:
        rolled_from = d.get("from")
        intent = d.get("intent_seq")
    elif action == Action.WEBHOOK_ACCEPTED:
        runs = _started_runs(d)
    return AuditEvent(
        seq=record.seq,
        at=_ts(record.ts),
        action=action,
        model=record.model,
        version=record.version,
        flow_run=found.group(1).lower() if found else None,
        digest=str(digest) if digest is not None else None,
        reasons=reasons,
        rolled_from=str(rolled_from) if rolled_from is not None else None,
        intent_seq=intent if isinstance(intent, int) else None,
        runs=runs,
    )


def read_audit(
    store: AuditStore | None = None,
    *,
    since: datetime | None,
    model: str | None = None,
    actions: Iterable[str] = ACTIONS,
) -> AuditHistory:
    """The events of ``actions`` (default: those the metrics use) from ``since`` on (None: the
    whole trail), of ``model`` or of every model; one indexed query per action."""
    own = store is None
    audit = audit_store() if store is None else store
    try:
        events = [
            audit_event(r)
            for action in actions
            for r in audit.query(model=model, action=action, since=since)
        ]
    finally:
        if own:
            audit.close()
    events.sort(key=lambda e: e.seq)
    return AuditHistory(events=events, since=since, url=audit.url)


# -- the Prefect part -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowRunRecord:
    """One flow run as the metrics see it."""

    id: str
    flow: str
    name: str
    model: str | None
    """From the run's parameters (``model``, or the ``cfg`` of a run given a whole spec)."""
    tags: tuple[str, ...]
    state: str | None
    """The state type (``COMPLETED``, ``FAILED``, ``CRASHED``, ``CANCELLED``, ``RUNNING``…)."""
    start: datetime | None
    end: datetime | None
    seconds: float
    """Time spent running (Prefect's ``total_run_time``: pauses and waits not counted)."""
    auto_scheduled: bool = False
    created_by: str | None = None
    """Who created the run, as Prefect says: ``AUTOMATION`` for a run an automation's
    RunDeployment action started (the drift trigger), else usually None."""
    deployment_id: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRunRecord:
    """One finished task run of a stage that has a cycle time."""

    flow_run: str
    task: str
    stage: str
    start: datetime | None
    end: datetime | None
    seconds: float


@dataclass(frozen=True)
class RunHistory:
    """The flow runs that started in the period and their stages' task runs; empty with a
    ``note`` saying why when Prefect could not be read."""

    flow_runs: list[FlowRunRecord] = field(default_factory=list)
    task_runs: list[TaskRunRecord] = field(default_factory=list)
    available: bool = True
    note: str | None = None
    api_url: str | None = None

    @classmethod
    def unavailable(cls, note: str, api_url: str | None = None) -> RunHistory:
        return cls(available=False, note=note, api_url=api_url)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).astimezone(UTC) if text else None


def _seconds(run: Mapping[str, Any], start: datetime | None, end: datetime | None) -> float:
    total = float(run.get("total_run_time") or 0.0)
    if total <= 0 and start is not None and end is not None:
        return max(0.0, (end - start).total_seconds())
    return total


def run_model(parameters: Mapping[str, Any]) -> str | None:
    """The model a flow run is about, from its parameters: ``model`` (every flow of a model
    takes it), else the name in a ``cfg`` given directly or inside a ``spec``."""
    model = parameters.get("model")
    if isinstance(model, str) and model:
        return model
    for holder in (parameters, parameters.get("spec")):
        cfg = holder.get("cfg") if isinstance(holder, Mapping) else None
        if isinstance(cfg, Mapping) and isinstance(cfg.get("name"), str):
            return str(cfg["name"])
    return None


def flow_run_record(run: Mapping[str, Any], flows: Mapping[str, str]) -> FlowRunRecord:
    """A flow run as the API answers it (JSON), with its flow's name from ``flows`` by id."""
    start, end = _time(run.get("start_time")), _time(run.get("end_time"))
    created_by = run.get("created_by") or {}
    return FlowRunRecord(
        id=str(run["id"]),
        flow=flows.get(str(run.get("flow_id")), "?"),
        name=str(run.get("name") or ""),
        model=run_model(run.get("parameters") or {}),
        tags=tuple(run.get("tags") or ()),
        state=run.get("state_type"),
        start=start,
        end=end,
        seconds=_seconds(run, start, end),
        auto_scheduled=bool(run.get("auto_scheduled")),
        created_by=created_by.get("type"),
        deployment_id=run.get("deployment_id"),
    )


def task_name(run_name: str) -> str:
    """The task a task run belongs to: Prefect names a run ``<task name>-<dynamic key>``."""
    return run_name.rpartition("-")[0] or run_name


def _filter(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def _read(
    client: SyncPrefectClient, path: str, body: dict[str, Any], sort: str = "ID_DESC"
) -> list[dict[str, Any]]:
    """Every item a ``/…/filter`` route answers to ``body``, ``PAGE`` at a time, as JSON.

    Sorted by something unique (runs by id, flows by name), so offsets neither skip nor repeat
    an item (one seen twice because a new run shifted a page is dropped). The pages are read as
    plain JSON, without Prefect's response models (validating 10,000 flow runs costs about a
    second), and without gzip (compressing costs the server more than it saves on a local
    network: about a third of its time per page on the loopback).
    """
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.request(
            "POST",
            path,  # type: ignore[arg-type]
            json={**body, "sort": sort, "limit": PAGE, "offset": offset},
            headers={"Accept-Encoding": "identity"},
        )
        response.raise_for_status()
        page = response.json()
        for item in page:
            if item["id"] not in seen:
                seen.add(item["id"])
                out.append(item)
        if len(page) < PAGE:
            return out
        offset += PAGE


def _read_runs(client: SyncPrefectClient, since: datetime, until: datetime) -> RunHistory:
    started = _filter(
        FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=since, before_=until),  # type: ignore[arg-type]
            parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True),
        )
    )
    raw = _read(client, "/flow_runs/filter", {"flow_runs": started})
    flow_ids = sorted({str(run["flow_id"]) for run in raw})
    flows: dict[str, str] = {}
    for i in range(0, len(flow_ids), PAGE):
        ids = flow_ids[i : i + PAGE]
        body = {"flows": _filter(FlowFilter(id=FlowFilterId(any_=ids)))}  # type: ignore[arg-type]
        flows.update((f["id"], f["name"]) for f in _read(client, "/flows/filter", body, "NAME_ASC"))
    runs = [flow_run_record(run, flows) for run in raw]
    runs = [r for r in runs if r.start is not None and since <= r.start < until]
    runs.sort(key=lambda r: (r.start, r.id))
    training = {r.id for r in runs if r.flow == TRAINING_FLOW}
    tasks = _read_stage_tasks(client, started, training) if training else []
    return RunHistory(flow_runs=runs, task_runs=tasks, api_url=str(client.api_url))


def _read_stage_tasks(
    client: SyncPrefectClient, started: dict[str, Any], training: set[str]
) -> list[TaskRunRecord]:
    """Completed task runs of the stages, of the training runs read: one query per name
    fragment, which the server narrows to the training flow's runs of the period."""
    flows = _filter(FlowFilter(name=FlowFilterName(any_=[TRAINING_FLOW])))
    done = TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED]))
    out: dict[str, TaskRunRecord] = {}
    for fragment in _TASK_PATTERNS:
        tasks = _filter(TaskRunFilter(name=TaskRunFilterName(like_=fragment), state=done))
        body = {"flows": flows, "flow_runs": started, "task_runs": tasks}
        for run in _read(client, "/task_runs/filter", body):
            name = task_name(str(run.get("name") or ""))
            stage = STAGE_TASKS.get(name)
            flow_run = str(run.get("flow_run_id"))
            if stage is None or flow_run not in training:
                continue
            start, end = _time(run.get("start_time")), _time(run.get("end_time"))
            out[str(run["id"])] = TaskRunRecord(
                flow_run=flow_run,
                task=name,
                stage=stage,
                start=start,
                end=end,
                seconds=_seconds(run, start, end),
            )
    return sorted(out.values(), key=lambda t: (t.end or _EPOCH, t.flow_run, t.task))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_runs(
    *, since: datetime, until: datetime, client: SyncPrefectClient | None = None
) -> RunHistory:
    """The flow runs that started in ``[since, until)`` and their stages' task runs, from
    ``client`` or the configured Prefect API; an empty history with a note when none answers."""
    since, until = period(since, until)
    try:
        if client is not None:
            return _checked_read(client, since, until)
        with get_client(sync_client=True) as own:
            return _checked_read(own, since, until)
    except (httpx.TransportError, httpx.HTTPStatusError, OSError) as exc:
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
            raise  # a request this module got wrong: a bug to see, not a gap to report
        return RunHistory.unavailable(
            f"Prefect's run history could not be read ({type(exc).__name__}: {exc}); run "
            "counts, retrain causes and stage cycle times are missing"
        )


def _checked_read(client: SyncPrefectClient, since: datetime, until: datetime) -> RunHistory:
    url = str(client.api_url)
    failure = client.api_healthcheck()
    if failure is not None:
        return RunHistory.unavailable(
            f"no Prefect API answered at {url} ({type(failure).__name__}: {failure}); run "
            "counts, retrain causes and stage cycle times are missing",
            api_url=url,
        )
    return _read_runs(client, since, until)


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def period(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC, refused unless it ends after it starts."""
    since, until = utc(since), utc(until)
    if since >= until:
        raise ProcessError(
            f"the period must end after it starts (since {since:%Y-%m-%d %H:%M}, until "
            f"{until:%Y-%m-%d %H:%M} UTC)"
        )
    return since, until


# -- both -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """Everything the process metrics of one period read, as plain data (built by
    ``read_history``, or by hand and cached by tests and benchmarks)."""

    audit: AuditHistory
    runs: RunHistory
    since: datetime
    until: datetime

    @property
    def notes(self) -> list[str]:
        """What the report must say about gaps in what was read."""
        return [self.runs.note] if self.runs.note else []


def read_history(
    *,
    since: datetime,
    until: datetime | None = None,
    lookback: timedelta | None = DEFAULT_LOOKBACK,
    store: AuditStore | None = None,
    client: SyncPrefectClient | None = None,
    model: str | None = None,
    runs: bool = True,
) -> History:
    """The audit events from ``lookback`` before ``since`` (None: the whole trail) and the runs
    that started in ``[since, until)`` (``until`` default: now); ``runs=False`` reads no
    Prefect (the history then says so)."""
    since, until = period(since, until or datetime.now(UTC))
    audit = read_audit(store, since=None if lookback is None else since - lookback, model=model)
    run_history = (
        read_runs(since=since, until=until, client=client)
        if runs
        else RunHistory.unavailable("Prefect's run history was not read")
    )
    return History(audit=audit, runs=run_history, since=since, until=until)

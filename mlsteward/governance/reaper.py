"""Runs whose process died: found by their silent heartbeat, marked Crashed, their canary closed.

A flow run whose process is killed (SIGKILL, a lost machine, a worker that died with it) stays
Running or Paused in Prefect for ever: nothing is left to report its end. Such a run is not
harmless debris. A training run that never ends blocks every drift-triggered retrain of its
model (``monitoring.retrain`` refuses while one is active), and a rollout that never ends leaves
its canary taking traffic with no guardrail watching, and refuses every new rollout.

Prefect 3.8.8's flow engine emits a ``prefect.flow-run.heartbeat`` event from a daemon thread of
the process running the flow (every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds, default 180,
at least 30), as soon as the run starts and for as long as it runs or waits paused in its
process. The server stores the events and answers them through its events API, so the reaper
needs no heartbeat of its own: a run whose newest heartbeat (or, if none arrived yet, the
moment it entered its state) is older than the timeout has no process left. The reaper
marks it Crashed with a message naming the heartbeat's age, ends as KILLED the MLflow run it
left RUNNING (which would keep its snapshot from ``mlsteward gc``) and as FAILED a model it was
still logging there (MLflow would show it PENDING, half its files copied), and audits it
(``run_reaped``); an open canary whose rollout run was reaped, or has ended without closing
it, is closed (all traffic back to the champion) and audited (``rollout_reaped``). A change of
champion a reaped run's model was left in the middle of (the run died between the promotion's
intent and its signed completion) is finished or undone at once, as the next governance call
would, so the alias and the record agree again without waiting for one.

Which run opened a canary is what its ``rollout_started`` record's actor says
(``flow-run:<id> …``), as the API reads it. A canary without such a record was not opened by a
rollout run (or by hand): it is left alone.

The timeout is ``MLSTEWARD_REAPER_TIMEOUT_SECONDS`` (default: twice the heartbeat frequency, at
least 300 s; 360 s with Prefect's default): keep it well above the heartbeat frequency of the
processes that run flows, or a slow but live run could be taken for a dead one.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlsteward.audit import Action, AuditStore, audit_store
from mlsteward.config.models import model_names
from mlsteward.config.names import NAME_PATTERN
from mlsteward.errors import ConfigError
from mlsteward.governance import canary as canary_state
from mlsteward.governance import champion
from mlsteward.governance.approvals import prefect_api_configured
from mlsteward.governance.mlflow_adapter import client as mlflow_client
from mlsteward.governance.promotion import LOCK_TIMEOUT_SECONDS as PROMOTION_LOCK_SECONDS
from mlsteward.governance.promotion import promotion_lock_name, recover

TIMEOUT_VARIABLE = "MLSTEWARD_REAPER_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 300.0
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
ROLLOUT_FLOW = "rollout-model"
REAPED_FLOWS = (
    "train-model",
    "tune-trials",
    ROLLOUT_FLOW,
    "drift-model",
    "promote-model",
    "rollback-model",
    "score-model",
    "reproduce-model",
    "ingest-data",
    "audit-upkeep",
    "materialize-features",
)
"""The project's flows. Training blocks retrains, a rollout holds the canary, a promotion
holds a version waiting for approval; any of them left Running says something false."""
LOCK_NAME = "reaper"
LOCK_TIMEOUT_SECONDS = 60.0
EVENTS_PAGE = 50
"""The most events the server answers in one page."""
SUSPENDED = "Suspended"
"""A Paused run with no process by design (``suspend_flow_run``): it sends no heartbeat."""
FLOW_RUN_TAG = "mlsteward.prefect_flow_run_id"
"""The tag naming the flow run that opened an MLflow training run."""
FLOW_RUN_ACTOR = re.compile(r"^flow-run:([0-9a-fA-F-]{36})\b")

log = logging.getLogger("mlsteward")


@dataclass(frozen=True)
class ReapedRun:
    """A run marked Crashed because its heartbeat stopped."""

    flow_run_id: str
    flow_run_name: str
    flow_name: str
    model: str | None
    state: str
    """The state it was left in (Running, Paused)."""
    last_heartbeat: str | None
    """None: no heartbeat ever arrived; the age counts from when it entered ``state``."""
    heartbeat_age_seconds: float
    message: str
    mlflow_runs_ended: list[str] = field(default_factory=list)
    """Its MLflow runs still RUNNING, ended as KILLED (a running training run's snapshot is
    never collected by ``mlsteward gc``)."""
    mlflow_models_failed: list[str] = field(default_factory=list)
    """Models those runs were logging when the process died (MLflow keeps them PENDING, their
    files half-copied), marked FAILED."""


@dataclass(frozen=True)
class ClosedCanary:
    """A canary closed because the rollout run that opened it is gone."""

    model: str
    rollout_id: str
    version: str
    fraction: float
    step: int
    flow_run_id: str
    run_state: str
    reason: str


@dataclass(frozen=True)
class ReapReport:
    """What one pass found and did."""

    timeout_seconds: float
    runs_checked: int
    reaped: list[ReapedRun] = field(default_factory=list)
    closed: list[ClosedCanary] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """What was seen but left alone, and why."""
    promotions: list[str] = field(default_factory=list)
    """Changes of champion a reaped run's model was left in the middle of (its intent recorded,
    its completion not), each finished or undone, in words."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{len(self.reaped)} run(s) reaped, {len(self.closed)} canary(ies) closed, "
            f"{len(self.promotions)} interrupted promotion(s) settled "
            f"({self.runs_checked} live run(s) checked, timeout {self.timeout_seconds:g} s)"
        )


def heartbeat_frequency() -> int | None:
    """Seconds between Prefect's flow-run heartbeats as this process's settings say (None: off).

    The flow engine never beats more often than every 30 s, whatever the setting."""
    from prefect.settings import get_current_settings  # start-up time: Prefect loads lazily

    value = get_current_settings().flows.heartbeat_frequency
    return None if value is None else max(int(value), 30)


def reaper_timeout() -> float:
    """``MLSTEWARD_REAPER_TIMEOUT_SECONDS``, else 300 s or twice the heartbeat frequency,
    whichever is longer.

    Raises:
        ConfigError: the variable is not a positive number of seconds.
    """
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return max(DEFAULT_TIMEOUT_SECONDS, 2.0 * (heartbeat_frequency() or 0))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r}: expected a positive number of seconds")
    return seconds


def reap(
    *,
    timeout_seconds: float | None = None,
    actor: str = "reaper",
    models: Sequence[str] | None = None,
) -> ReapReport:
    """Mark Crashed every run of the project's flows whose heartbeat is older than the timeout,
    and close every canary whose rollout run is gone; each action audited.

    ``models`` limits the canaries looked at (default: every configured model). The run this
    is called from is never judged. Without a configured Prefect server nothing is judged: the
    temporary server a process would start knows no other run.

    Raises:
        ConfigError: a timeout that is not a positive number of seconds.
    """
    timeout = reaper_timeout() if timeout_seconds is None else float(timeout_seconds)
    if not timeout > 0:
        raise ConfigError(f"reaper timeout {timeout_seconds!r}: expected a positive number")
    if not prefect_api_configured():
        return ReapReport(timeout, 0, left=["no Prefect server configured: no run to judge"])
    frequency = heartbeat_frequency()
    if frequency is None:
        return ReapReport(
            timeout, 0, left=["Prefect's flow-run heartbeats are off: no run can be judged"]
        )
    if timeout <= frequency:
        log.warning(
            "reaper timeout %g s is not above the heartbeat frequency (%d s): live runs may "
            "be taken for dead ones", timeout, frequency,
        )  # fmt: skip
    names = list(models) if models is not None else configured_models()
    survey = _survey(timeout)
    canaries = _open_canaries(names)
    if not survey.stale and not canaries:
        return ReapReport(timeout, len(survey.live))
    # Something to do: under the lock, judge again (another reaper may have just done it)
    with audit_store() as store, store.lock(LOCK_NAME, LOCK_TIMEOUT_SECONDS):
        survey = _survey(timeout)
        reaped = [r for c in survey.stale if (r := _crash(c, store, actor, timeout)) is not None]
        promotions = _finish_promotions(reaped, store, actor)
        closed: list[ClosedCanary] = []
        left: list[str] = []
        for model in names:
            outcome = _judge_canary(model, survey, reaped, store, actor, timeout)
            if isinstance(outcome, ClosedCanary):
                closed.append(outcome)
            elif outcome:
                left.append(outcome)
    return ReapReport(timeout, len(survey.live), reaped, closed, left, promotions)


def configured_models() -> list[str]:
    """Model names from the config directory."""
    return model_names()


@dataclass(frozen=True)
class _Candidate:
    run: Any  # prefect.client.schemas.objects.FlowRun
    last_heartbeat: datetime | None
    age: float


@dataclass(frozen=True)
class _Survey:
    live: list[_Candidate]
    stale: list[_Candidate]

    def live_ids(self) -> set[str]:
        return {str(c.run.id) for c in self.live}


def _survey(timeout: float) -> _Survey:
    """Running and paused runs of the project's flows, each with its newest heartbeat: two
    API calls (the second only when some run is active)."""
    from prefect import get_client  # start-up time: Prefect loads lazily
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    own = _own_flow_run_id()
    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=list(REAPED_FLOWS))),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PAUSED])
                    )
                ),
            )
            if str(r.id) != own and r.state is not None and r.state.name != SUSPENDED
        ]
        beats = _last_heartbeats(client, [str(r.id) for r in runs]) if runs else {}
    now = datetime.now(UTC)
    live: list[_Candidate] = []
    stale: list[_Candidate] = []
    for run in runs:
        beat = beats.get(str(run.id))
        entered = _utc(run.state.timestamp) if run.state is not None else None
        known = [t for t in (beat, entered) if t is not None]
        since = max(known) if known else now
        candidate = _Candidate(run, beat, (now - since).total_seconds())
        (stale if candidate.age > timeout else live).append(candidate)
    return _Survey(live, stale)


def _last_heartbeats(client: Any, run_ids: list[str]) -> dict[str, datetime]:
    """The newest heartbeat event of each run (one page per 50 runs)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    out: dict[str, datetime] = {}
    for i in range(0, len(run_ids), EVENTS_PAGE):
        chunk = run_ids[i : i + EVENTS_PAGE]
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                resource=EventResourceFilter(
                    id=[f"prefect.flow-run.{r}" for r in chunk], distinct=True
                ),
            ),
            limit=EVENTS_PAGE,
        )
        for event in page.events:
            run_id = event.resource.id.removeprefix("prefect.flow-run.")
            occurred = _utc(event.occurred)
            if occurred is not None and (run_id not in out or occurred > out[run_id]):
                out[run_id] = occurred
    return out


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value.timestamp(), UTC)


def _own_flow_run_id() -> str | None:
    """The flow run this process is in, if any: alive by definition."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None


def _crash(
    candidate: _Candidate, store: AuditStore, actor: str, timeout: float
) -> ReapedRun | None:
    """Crashed, forced (the run's own process can no longer object), then audited; None when
    the run changed state since it was judged."""
    from prefect import get_client
    from prefect.states import Crashed

    run = candidate.run
    beat = candidate.last_heartbeat
    heard = f"last heartbeat {beat.isoformat(timespec='seconds')}" if beat else \
        f"no heartbeat since it became {run.state.name}"  # fmt: skip
    message = (
        f"reaped: no heartbeat for {candidate.age:.0f} s ({heard}), over the reaper's "
        f"{timeout:g} s timeout; the process running it is gone"
    )
    with get_client(sync_client=True) as client:
        now = client.read_flow_run(run.id).state
        if now is None or now.id != run.state.id:
            return None  # it moved on (finished, resumed): not ours to judge any more
        flow_name = client.read_flow(run.flow_id).name
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    model = (run.parameters or {}).get("model")
    model = model if isinstance(model, str) and NAME_PATTERN.fullmatch(model) else None
    ended, failed = _end_mlflow_runs(model, str(run.id)) if model else ([], [])
    reaped = ReapedRun(
        flow_run_id=str(run.id),
        flow_run_name=run.name,
        flow_name=flow_name,
        model=model,
        state=run.state.name,
        last_heartbeat=beat.isoformat() if beat else None,
        heartbeat_age_seconds=round(candidate.age, 1),
        message=message,
        mlflow_runs_ended=ended,
        mlflow_models_failed=failed,
    )
    store.append(
        Action.RUN_REAPED,
        model=reaped.model,
        actor=actor,
        reason=message,
        details={
            "flow_run_id": reaped.flow_run_id,
            "flow_run_name": reaped.flow_run_name,
            "flow_name": flow_name,
            "model": reaped.model,
            "state": reaped.state,
            "last_heartbeat": reaped.last_heartbeat,
            "heartbeat_age_seconds": reaped.heartbeat_age_seconds,
            "timeout_seconds": timeout,
            "mlflow_runs_ended": ended,
            "mlflow_models_failed": failed,
        },
    )
    return reaped


def _finish_promotions(reaped: list[ReapedRun], store: AuditStore, actor: str) -> list[str]:
    """Finish or undo the change of champion each reaped run's model was left in the middle of.

    A run killed between a promotion's intent and its signed completion leaves the champion
    alias and the record disagreeing until the next governance call on the model, which may be
    days away: serving and ``status`` would report the model inconsistent all that time. Its
    process is gone, so the change is settled now, under the promotion lock (a live promotion
    holding it finishes first, and then nothing is left to settle).
    """
    done = []
    for model in sorted({r.model for r in reaped if r.model is not None}):
        with store.lock(promotion_lock_name(model), PROMOTION_LOCK_SECONDS) as fence:
            interrupted = champion.pending(model, store)
            outcome = recover(store, fence, model, actor=actor)
        if outcome is not None and interrupted is not None:
            done.append(f"{model}: {interrupted.describe()} {outcome}")
    return done


def _end_mlflow_runs(model: str, flow_run_id: str) -> tuple[list[str], list[str]]:
    """End as KILLED the MLflow runs of MODEL's experiment that the flow run opened and never
    closed, and mark FAILED the models they were still logging; the runs' and models' ids."""
    c = mlflow_client()
    experiment = c.get_experiment_by_name(model)
    if experiment is None:
        return [], []
    found = c.search_runs(
        [experiment.experiment_id],
        f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}' and attributes.status = 'RUNNING'",
    )
    failed = []
    for mlflow_run in found:
        run_id = mlflow_run.info.run_id
        c.set_terminated(run_id, status="KILLED")
        # PENDING until MLflow finalises it after the last file: a model whose logging the
        # process died in (status is compared here, MLflow's filter does not match it)
        for logged in c.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        ):
            if str(logged.status) == "PENDING":
                c.finalize_logged_model(logged.model_id, "FAILED")
                failed.append(logged.model_id)
    return [r.info.run_id for r in found], failed


def _open_canaries(models: Iterable[str]) -> list[str]:
    return [m for m in models if canary_state.read_target(m).canary is not None]


def _judge_canary(
    model: str,
    survey: _Survey,
    reaped: list[ReapedRun],
    store: AuditStore,
    actor: str,
    timeout: float,
) -> ClosedCanary | str | None:
    """Close the canary if its rollout run is gone; a note when it is left open for want of a
    run to judge; None when there is none or its run still holds it."""
    canary = canary_state.read_target(model).canary
    if canary is None:
        return None
    run_id = _opened_by(store, model, canary.rollout_id)
    if run_id is None:
        return f"{model}: canary of rollout {canary.rollout_id} has no rollout_started record " \
            "naming its run; left open"  # fmt: skip
    if run_id in survey.live_ids() or run_id == _own_flow_run_id():
        return None
    gone = next((r for r in reaped if r.flow_run_id == run_id), None)
    if gone is not None:
        run_state = "Crashed"
        reason = f"its rollout run {gone.flow_run_name} ({run_id}) was reaped: {gone.message}"
        last_heartbeat = gone.last_heartbeat
    else:
        state = _run_state(run_id)
        if state is None:
            return f"{model}: canary of rollout {canary.rollout_id}: its run {run_id} is " \
                "unknown to this Prefect server; left open"  # fmt: skip
        if not state.is_final():
            return None  # pending, cancelling, or just resumed: its own process ends it
        run_state = state.name or str(state.type)
        reason = f"its rollout run {run_id} is {run_state} and left the canary open"
        last_heartbeat = None
    current = canary_state.read_target(model).canary
    if current is None or current.rollout_id != canary.rollout_id:
        return None  # closed meanwhile, or another rollout's now
    canary_state.close_canary(model)
    closed = ClosedCanary(
        model=model,
        rollout_id=canary.rollout_id,
        version=canary.challenger_version,
        fraction=canary.fraction,
        step=canary.step,
        flow_run_id=run_id,
        run_state=run_state,
        reason=f"canary closed, all traffic back to the champion: {reason}"[:2000],
    )
    store.append(
        Action.ROLLOUT_REAPED,
        model=model,
        version=canary.challenger_version,
        actor=actor,
        reason=closed.reason,
        details={
            "flow_run_id": run_id,
            "flow_name": ROLLOUT_FLOW,
            "model": model,
            "rollout_id": canary.rollout_id,
            "fraction": canary.fraction,
            "step": canary.step,
            "run_state": run_state,
            "last_heartbeat": last_heartbeat,
            "timeout_seconds": timeout,
        },
    )
    return closed


def _opened_by(store: AuditStore, model: str, rollout_id: str) -> str | None:
    """The flow run its ``rollout_started`` record names as actor."""
    for record in reversed(store.query(model=model, action=Action.ROLLOUT_STARTED)):
        if record.details.get("rollout_id") == rollout_id:
            match = FLOW_RUN_ACTOR.match(record.actor or "")
            return match.group(1) if match else None
    return None


def _run_state(run_id: str) -> Any:
    """The run's state, or None when this server has no such run."""
    from uuid import UUID

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return None
    return run.state

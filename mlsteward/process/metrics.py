"""The delivery process measured: lead times, stage cycle times, first-pass yield, rejection
reasons, retrain causes, drift recovery, promotions and run failures of one scope (a model, or
every model: ``ALL``) over one period ``[since, until)``, from a ``History``.

Everything is as known at ``until``: events after it are ignored, so a report of a past period
reads the same later. Times are UTC; time metrics are hours, each a ``Point`` placed at the event
that ends it. The definitions, which the report repeats:

* **Decision** on a version: the first of ``validation_failed``, ``approval_rejected``,
  ``approval_timed_out``, ``promotion_refused`` or ``promoted`` about it.
* **Lead time to decision**: a data version D is ingested at t0 (its *first*
  ``ingestion_accepted``); the first decision on any version registered with ``data_digest`` D
  ends it. One point per data version, at the decision; a data version ingested before the
  history was read (its lookback) has none. **Lead time to champion**: t0 to the first
  ``promoted`` of a version trained on D.
* **Cycle times** per stage: ``ingest``: each completed ``ingest-data`` run's running time;
  ``retrieval``, ``tuning``, ``gates``: per ``train-model`` run started in the period, the
  running time of its completed task runs of that stage (``history.STAGE_TASKS``), *summed*
  when a stage has several tasks in one run (the gates: holdout scoring, three gates and the
  record), at the stage's last end; ``approval_wait``: ``approval_requested`` to the first
  answer after it (granted, rejected or timed out) on that version, a repeated request before
  an answer counted from the first; ``promotion``: ``promotion_intent`` to the ``promoted``
  record that completes it.
* **First-pass yield**: of the versions whose *first* validation falls in the period, those
  whose first validation passed every gate. ``gate_failures``: per subgroup period (a UTC day,
  or an ISO week from Monday 00:00 UTC; the first and last clipped to the period), versions
  whose first validation failed of those first validated then. A period without versions is
  kept with size 0, so a chart's time axis is honest.
* **Rejections**: every ``validation_failed`` in the period, each failed gate and the metric
  its violations name counted once per record (a failed gate naming no metric: metric None);
  sorted by count, with the share of all counted reasons and the running share.
* **Retrains** by cause: ``train-model`` runs started in the period: tag ``webhook`` → ci, tag
  ``api`` → api, ``auto_scheduled`` → schedule, created by an automation (the drift trigger) →
  drift, else manual. Without Prefect's run history: each ``retrain_triggered`` record counts as
  drift and each training run a ``webhook_accepted`` record started as ci.
* **Drift to recovery**: ``drift_detected`` at t to the first decision on a version of that
  model registered after t. Several detections before one recovery are one point, measured
  from the *first* of them. ``unrecovered_drift``: detections in the period with no recovery
  yet.
* **Promotions** and **rollbacks**: their records in the period. ``promotions_rolled_back``:
  promotions in the period whose version a later rollback (up to ``until``) rolled away from
  (``rollback.details.from``; a version promoted twice: the promotion just before it).
* **Runs**: per flow, the runs that started in the period (subflows are part of their parent)
  by final state; ``run_failures``: per subgroup period, failed and crashed runs of the runs
  that finished then (completed, failed, crashed; cancelled runs are not counted).

A model's runs are those whose parameters name it, else those an audit record of it names as
actor (``flow-run:<id> …``) or a webhook record started for it, else those carrying its tag.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from mlsteward.audit import Action
from mlsteward.process.history import (
    INGEST_FLOW,
    TRAINING_FLOW,
    AuditEvent,
    FlowRunRecord,
    History,
    ProcessError,
    TaskRunRecord,
    period,
)
from mlsteward.process.model import (
    ALL,
    CAUSES,
    STAGES,
    ParetoItem,
    Point,
    RunCounts,
    ScopeMetrics,
    Subgroup,
)

Period = Literal["day", "week"]

DECISIONS = frozenset(
    a.value
    for a in (
        Action.VALIDATION_FAILED,
        Action.APPROVAL_REJECTED,
        Action.APPROVAL_TIMED_OUT,
        Action.PROMOTION_REFUSED,
        Action.PROMOTED,
    )
)
"""The records that decide a version (see the module doc)."""

ANSWERS = frozenset(
    a.value for a in (Action.APPROVAL_GRANTED, Action.APPROVAL_REJECTED, Action.APPROVAL_TIMED_OUT)
)
VALIDATIONS = frozenset((Action.VALIDATION_PASSED.value, Action.VALIDATION_FAILED.value))
FINISHED = ("COMPLETED", "FAILED", "CRASHED")
FAILURES = ("FAILED", "CRASHED")

Key = tuple[str | None, str | None]
"""(model, version) or (model, data digest)."""


def hours(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600.0


# -- the history, indexed once ----------------------------------------------------------------


@dataclass
class _Indexed:
    """A history split once for every scope asked of it."""

    until: datetime
    events: list[AuditEvent]
    """Every event before ``until``, oldest first."""
    by_model: dict[str | None, list[AuditEvent]]
    runs: list[FlowRunRecord]
    run_models: dict[str, str | None]
    tasks: dict[str, list[TaskRunRecord]]
    available: bool
    scopes: dict[str, tuple[list[AuditEvent], list[FlowRunRecord]]] = field(default_factory=dict)

    @classmethod
    def of(cls, history: History, until: datetime) -> _Indexed:
        events = [e for e in history.audit.events if e.at < until]
        by_model: dict[str | None, list[AuditEvent]] = defaultdict(list)
        linked: dict[str, str] = {}
        for e in events:
            by_model[e.model].append(e)
            if e.flow_run and e.model and e.flow_run not in linked:
                linked[e.flow_run] = e.model
            for _, model, run_id in e.runs:
                linked.setdefault(run_id.lower(), model)
        tasks: dict[str, list[TaskRunRecord]] = defaultdict(list)
        for t in history.runs.task_runs:
            tasks[t.flow_run].append(t)
        runs = history.runs.flow_runs
        return cls(
            until=until,
            events=events,
            by_model=by_model,
            runs=runs,
            run_models={r.id: r.model or linked.get(r.id.lower()) for r in runs},
            tasks=tasks,
            available=history.runs.available,
        )

    def scope(self, scope: str) -> tuple[list[AuditEvent], list[FlowRunRecord]]:
        if scope not in self.scopes:
            if scope == ALL:
                self.scopes[scope] = (self.events, self.runs)
            else:
                models = self.run_models
                runs = [
                    r
                    for r in self.runs
                    if models[r.id] == scope or (models[r.id] is None and scope in r.tags)
                ]
                self.scopes[scope] = (self.by_model.get(scope, []), runs)
        return self.scopes[scope]


# -- subgroups --------------------------------------------------------------------------------


class _Periods:
    """The subgroup periods covering ``[since, until)``: UTC days or ISO weeks."""

    def __init__(self, since: datetime, until: datetime, kind: str) -> None:
        if kind not in ("day", "week"):
            raise ProcessError(f"subgroup must be 'day' or 'week', not {kind!r}")
        self.step = timedelta(days=1 if kind == "day" else 7)
        first = since.replace(hour=0, minute=0, second=0, microsecond=0)
        if kind == "week":
            first -= timedelta(days=first.weekday())
        self.first, self.since, self.until = first, since, until
        self.count = max(1, -(-(until - first) // self.step))

    def index(self, at: datetime) -> int | None:
        if not self.since <= at < self.until:
            return None
        return (at - self.first) // self.step

    def subgroups(self, defects: Sequence[int], sizes: Sequence[int]) -> list[Subgroup]:
        out = []
        for i in range(self.count):
            start = self.first + i * self.step
            out.append(
                Subgroup(
                    start=max(start, self.since),
                    end=min(start + self.step, self.until),
                    defects=defects[i],
                    size=sizes[i],
                )
            )
        return out


# -- the metrics ------------------------------------------------------------------------------


def scope_metrics(
    history: History, scope: str, *, since: datetime, until: datetime, subgroup: str = "week"
) -> ScopeMetrics:
    """Every process metric of ``scope`` (a model's name, or ``ALL``) over ``[since, until)``."""
    since, until = period(since, until)
    return _scope_metrics(_Indexed.of(history, until), scope, since, until, subgroup)


def process_metrics(
    history: History,
    models: Sequence[str],
    *,
    since: datetime,
    until: datetime,
    subgroup: str = "week",
) -> dict[str, ScopeMetrics]:
    """The metrics of each model and of all of them together (``ALL``), from one index."""
    since, until = period(since, until)
    indexed = _Indexed.of(history, until)
    return {
        scope: _scope_metrics(indexed, scope, since, until, subgroup)
        for scope in (*dict.fromkeys(models), ALL)
    }


def _scope_metrics(
    indexed: _Indexed, scope: str, since: datetime, until: datetime, subgroup: str
) -> ScopeMetrics:
    if not scope or not isinstance(scope, str):
        raise ProcessError(f"scope must be a model's name or {ALL!r}, not {scope!r}")
    periods = _Periods(since, until, subgroup)
    events, runs = indexed.scope(scope)
    started = [r for r in runs if r.start is not None and since <= r.start < until]

    def inside(at: datetime) -> bool:
        return since <= at < until

    by_action: dict[str, list[AuditEvent]] = defaultdict(list)
    for e in events:
        by_action[e.action].append(e)
    registered: dict[Key, AuditEvent] = {}
    for e in by_action[Action.VERSION_REGISTERED]:
        registered.setdefault((e.model, e.version), e)
    decisions = [e for e in events if e.action in DECISIONS]

    decision, champion = _lead_times(by_action, registered, decisions, inside)
    validated, first_pass, gate_failures = _first_pass(events, periods)
    recovery, unrecovered = _drift_recovery(by_action, registered, decisions, inside)
    promotions = [e for e in by_action[Action.PROMOTED] if inside(e.at)]
    rolled_back = _rolled_back(by_action)
    return ScopeMetrics(
        scope=scope,
        since=since,
        until=until,
        lead_time_to_decision=decision,
        lead_time_to_champion=champion,
        cycle_times=_cycle_times(by_action, started, indexed, inside),
        versions_validated=validated,
        first_pass=first_pass,
        gate_failures=gate_failures,
        rejections=_rejections(e for e in by_action[Action.VALIDATION_FAILED] if inside(e.at)),
        retrains=_retrains(scope, indexed, started, inside),
        drift_to_recovery=recovery,
        unrecovered_drift=unrecovered,
        promotions=len(promotions),
        rollbacks=sum(1 for e in by_action[Action.ROLLBACK] if inside(e.at)),
        promotions_rolled_back=sum(1 for e in promotions if e.seq in rolled_back),
        runs=_run_counts(started, until),
        run_failures=_run_failures(started, periods),
    )


def _point(e: AuditEvent, value: float) -> Point:
    return Point(
        at=e.at, value=value, label=f"{e.model} v{e.version}", model=e.model, version=e.version
    )


def _lead_times(
    by_action: dict[str, list[AuditEvent]],
    registered: dict[Key, AuditEvent],
    decisions: list[AuditEvent],
    inside: Callable[[datetime], bool],
) -> tuple[list[Point], list[Point]]:
    ingested: dict[Key, datetime] = {}
    for e in by_action[Action.INGESTION_ACCEPTED]:
        ingested.setdefault((e.model, e.digest), e.at)
    decided: set[Key] = set()
    crowned: set[Key] = set()
    to_decision: list[Point] = []
    to_champion: list[Point] = []
    for e in decisions:
        reg = registered.get((e.model, e.version))
        if reg is None or reg.digest is None:
            continue
        data: Key = (e.model, reg.digest)
        t0 = ingested.get(data)
        if data not in decided:
            decided.add(data)
            if t0 is not None and inside(e.at):
                to_decision.append(_point(e, hours(t0, e.at)))
        if e.action == Action.PROMOTED and data not in crowned:
            crowned.add(data)
            if t0 is not None and inside(e.at):
                to_champion.append(_point(e, hours(t0, e.at)))
    return to_decision, to_champion


def _cycle_times(
    by_action: dict[str, list[AuditEvent]],
    started: list[FlowRunRecord],
    indexed: _Indexed,
    inside: Callable[[datetime], bool],
) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {stage: [] for stage in STAGES}
    for run in started:
        model = indexed.run_models.get(run.id)
        label = f"{model or '-'} {run.name}"
        if run.flow == INGEST_FLOW and run.state == "COMPLETED" and run.end and inside(run.end):
            out["ingest"].append(Point(run.end, run.seconds / 3600.0, label, model))
        if run.flow != TRAINING_FLOW:
            continue
        spans: dict[str, list[TaskRunRecord]] = defaultdict(list)
        for task in indexed.tasks.get(run.id, ()):
            spans[task.stage].append(task)
        for stage, tasks in spans.items():
            ends = [t.end for t in tasks if t.end is not None]
            if ends and inside(max(ends)):
                seconds = sum(t.seconds for t in tasks)
                out[stage].append(Point(max(ends), seconds / 3600.0, label, model))
    out["approval_wait"] = _approval_waits(by_action, inside)
    out["promotion"] = _promotion_times(by_action, inside)
    for points in out.values():
        points.sort(key=lambda p: p.at)
    return out


def _approval_waits(
    by_action: dict[str, list[AuditEvent]], inside: Callable[[datetime], bool]
) -> list[Point]:
    flow = sorted(
        (
            *by_action[Action.APPROVAL_REQUESTED],
            *(e for a in ANSWERS for e in by_action[a]),
        ),
        key=lambda e: e.seq,
    )
    waiting: dict[Key, datetime] = {}
    points = []
    for e in flow:
        key = (e.model, e.version)
        if e.action == Action.APPROVAL_REQUESTED:
            waiting.setdefault(key, e.at)
        elif key in waiting:
            asked = waiting.pop(key)
            if inside(e.at):
                points.append(_point(e, hours(asked, e.at)))
    return points


def _promotion_times(
    by_action: dict[str, list[AuditEvent]], inside: Callable[[datetime], bool]
) -> list[Point]:
    intents = {e.seq: e for e in by_action[Action.PROMOTION_INTENT]}
    points = []
    for e in by_action[Action.PROMOTED]:
        intent = intents.get(e.intent_seq) if e.intent_seq is not None else None
        if intent is not None and inside(e.at):
            points.append(_point(e, hours(intent.at, e.at)))
    return points


def _first_pass(events: list[AuditEvent], periods: _Periods) -> tuple[int, int, list[Subgroup]]:
    first: dict[Key, AuditEvent] = {}
    for e in events:
        if e.action in VALIDATIONS:
            first.setdefault((e.model, e.version), e)
    defects = [0] * periods.count
    sizes = [0] * periods.count
    validated = passed = 0
    for e in first.values():
        i = periods.index(e.at)
        if i is None:
            continue
        validated += 1
        sizes[i] += 1
        if e.action == Action.VALIDATION_PASSED:
            passed += 1
        else:
            defects[i] += 1
    return validated, passed, periods.subgroups(defects, sizes)


def _rejections(failed: Iterable[AuditEvent]) -> list[ParetoItem]:
    counts: Counter[tuple[str, str | None]] = Counter()
    for e in failed:
        counts.update(set(e.reasons))
    total = sum(counts.values())
    items = []
    running = 0
    for (gate, metric), count in sorted(
        counts.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or "")
    ):
        running += count
        items.append(ParetoItem(gate, metric, count, count / total, running / total))
    return items


def cause(run: FlowRunRecord) -> str:
    """Why a training run started (``CAUSES``; see the module doc)."""
    if "webhook" in run.tags:
        return "ci"
    if "api" in run.tags:
        return "api"
    if run.auto_scheduled:
        return "schedule"
    if run.created_by == "AUTOMATION":
        return "drift"
    return "manual"


def _retrains(
    scope: str,
    indexed: _Indexed,
    started: list[FlowRunRecord],
    inside: Callable[[datetime], bool],
) -> dict[str, int]:
    counts: Counter[str] = Counter()
    if indexed.available:
        counts.update(cause(r) for r in started if r.flow == TRAINING_FLOW)
    else:
        events = indexed.events if scope == ALL else indexed.by_model.get(scope, [])
        counts["drift"] = sum(
            1 for e in events if e.action == Action.RETRAIN_TRIGGERED and inside(e.at)
        )
        counts["ci"] = sum(
            1
            for e in indexed.events
            if e.action == Action.WEBHOOK_ACCEPTED and inside(e.at)
            for action, model, _ in e.runs
            if action == "train" and (scope == ALL or model == scope)
        )
    return {c: counts[c] for c in CAUSES}


def _drift_recovery(
    by_action: dict[str, list[AuditEvent]],
    registered: dict[Key, AuditEvent],
    decisions: list[AuditEvent],
    inside: Callable[[datetime], bool],
) -> tuple[list[Point], int]:
    # per model: first decision of each version, ordered by when the version was registered;
    # the earliest decision among versions registered after t is a suffix minimum
    firsts: dict[Key, AuditEvent] = {}
    for e in decisions:
        if (e.model, e.version) in registered:
            firsts.setdefault((e.model, e.version), e)
    by_model: dict[str | None, list[tuple[datetime, AuditEvent]]] = defaultdict(list)
    for key, e in firsts.items():
        by_model[key[0]].append((registered[key].at, e))
    lookup: dict[str | None, tuple[list[datetime], list[AuditEvent | None]]] = {}
    for model, pairs in by_model.items():
        pairs.sort(key=lambda p: p[0])
        best: list[AuditEvent | None] = [None] * (len(pairs) + 1)
        for i in range(len(pairs) - 1, -1, -1):
            e, later = pairs[i][1], best[i + 1]
            best[i] = e if later is None or e.at <= later.at else later
        lookup[model] = ([p[0] for p in pairs], best)

    recovered: dict[int, tuple[AuditEvent, AuditEvent]] = {}
    unrecovered = 0
    nothing: tuple[list[datetime], list[AuditEvent | None]] = ([], [None])
    for d in by_action[Action.DRIFT_DETECTED]:
        regs, best = lookup.get(d.model, nothing)
        answer = best[bisect.bisect_right(regs, d.at)]
        if answer is None:
            unrecovered += inside(d.at)
        else:
            recovered.setdefault(answer.seq, (d, answer))  # the first detection it ends
    points = [
        Point(
            at=answer.at,
            value=hours(first.at, answer.at),
            label=f"{answer.model} v{answer.version}",
            model=answer.model,
            version=answer.version,
        )
        for first, answer in recovered.values()
        if inside(answer.at)
    ]
    points.sort(key=lambda p: p.at)
    return points, unrecovered


def _rolled_back(by_action: dict[str, list[AuditEvent]]) -> set[int]:
    """Seqs of promotions a later rollback rolled away from."""
    promoted: dict[Key, list[AuditEvent]] = defaultdict(list)
    for e in by_action[Action.PROMOTED]:
        promoted[(e.model, e.version)].append(e)
    out: set[int] = set()
    for r in by_action[Action.ROLLBACK]:
        earlier = [p for p in promoted.get((r.model, r.rolled_from), ()) if p.seq < r.seq]
        if earlier:
            out.add(earlier[-1].seq)
    return out


def _run_counts(started: list[FlowRunRecord], until: datetime) -> list[RunCounts]:
    states: dict[str, Counter[str]] = defaultdict(Counter)
    for r in started:
        if r.state in (*FINISHED, "CANCELLED") and r.end is not None and r.end < until:
            states[r.flow][r.state] += 1
        else:
            states.setdefault(r.flow, Counter())
    return [
        RunCounts(
            flow=flow,
            total=sum(c.values()),
            completed=c["COMPLETED"],
            failed=c["FAILED"],
            crashed=c["CRASHED"],
            cancelled=c["CANCELLED"],
        )
        for flow, c in sorted(states.items())
    ]


def _run_failures(started: list[FlowRunRecord], periods: _Periods) -> list[Subgroup]:
    defects = [0] * periods.count
    sizes = [0] * periods.count
    for r in started:
        if r.state not in FINISHED or r.end is None:
            continue
        i = periods.index(r.end)
        if i is None:
            continue
        sizes[i] += 1
        defects[i] += r.state in FAILURES
    return periods.subgroups(defects, sizes)

"""A synthetic delivery history with known answers, for the process metrics' tests and benchmark.

``write_synthetic_history`` plans data versions week by week (ingested, registered, validated,
then either failed by a gate or approved and promoted), drift detections, rollbacks and the
flow runs behind them, all at planted times, and writes the audit records into a real audit
store through the store's bulk path (``_bulk_append``: the store's own write transaction and
hash chain, with each record's ``ts`` given; the chain verifies). It returns the truth: what
was planted, from which every metric's expected value follows without the metrics' code.

``create_synthetic_runs`` writes the planned flow runs (and a few task runs) into a Prefect
server's database through Prefect's own server models (``prefect.server.models``), the code
the API itself writes with: the REST API stamps every state with the server's clock (a state
sent to it carries no time), so a history weeks long can only be planted there. The process
must point at the server's database (``PREFECT_SERVER_DATABASE_CONNECTION_URL``, as the test
harness sets it); the runs are then read back through the API like any others.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlsteward.audit import audit_store
from mlsteward.audit.records import format_ts

HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)

REASONS: tuple[tuple[str, str], ...] = (
    ("metric_thresholds", "roc_auc"),
    ("metric_thresholds", "roc_auc"),
    ("metric_thresholds", "brier"),
    ("fairness", "equalized_odds_difference"),
    ("champion_comparison", "roc_auc"),
)
"""Why a planted version fails (drawn with these weights: roc_auc floors most often)."""

CAUSE_TAGS: dict[str, tuple[str, ...]] = {"ci": ("webhook",), "api": ("api", "requested_by:x")}

STAGE_TASK_SECONDS: dict[str, tuple[tuple[str, float], ...]] = {
    "retrieval": (("retrieve-training-set", 90.0),),
    "tuning": (("tune-hyperparameters", 600.0),),
    "gates": (
        ("score-holdout", 40.0),
        ("gate-metric-thresholds", 2.0),
        ("gate-fairness", 6.0),
        ("gate-champion-comparison", 1.0),
        ("record-validation", 3.0),
    ),
}
"""The task runs planted in a traced training run, by stage; ``register-model`` is planted too
and belongs to no stage."""


@dataclass(frozen=True)
class SyntheticTask:
    name: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class SyntheticRun:
    """A flow run to plant: its flow, state and times, and how it started."""

    id: str
    flow: str
    name: str
    model: str | None
    state: str
    start: datetime
    end: datetime
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    auto_scheduled: bool = False
    automation: bool = False
    cause: str | None = None
    tasks: tuple[SyntheticTask, ...] = ()


@dataclass(frozen=True)
class PlantedVersion:
    model: str
    version: str
    digest: str
    ingested_at: datetime
    validated_at: datetime
    """Its first (and only) validation."""
    decided_at: datetime
    passed: bool
    reason: tuple[str, str] | None
    approval_hours: float | None = None
    promotion_hours: float | None = None

    @property
    def lead_hours(self) -> float:
        return (self.decided_at - self.ingested_at).total_seconds() / 3600

    @property
    def promoted(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class PlantedDrift:
    model: str
    detected_at: datetime


@dataclass
class SyntheticTruth:
    """What was planted; the expected metrics follow from it directly."""

    start: datetime
    end: datetime
    records: int
    versions: list[PlantedVersion]
    drift: list[PlantedDrift]
    rollbacks: list[tuple[str, str, datetime]]
    """(model, the version rolled away from, when)."""
    runs: list[SyntheticRun]

    def _of(self, model: str | None) -> list[PlantedVersion]:
        return [v for v in self.versions if model is None or v.model == model]

    def lead_times(self, model: str | None = None) -> dict[tuple[str, str], float]:
        """Hours from ingestion to decision, per (model, version) (each has its own data)."""
        return {(v.model, v.version): v.lead_hours for v in self._of(model)}

    def champion_lead_times(self, model: str | None = None) -> dict[tuple[str, str], float]:
        return {(v.model, v.version): v.lead_hours for v in self._of(model) if v.promoted}

    def gate_failures(self, model: str | None = None) -> dict[datetime, tuple[int, int]]:
        """(failed first validations, first validations) per ISO week start."""
        weeks: dict[datetime, list[int]] = {}
        for v in self._of(model):
            day = v.validated_at.replace(hour=0, minute=0, second=0, microsecond=0)
            week = day - timedelta(days=day.weekday())
            counts = weeks.setdefault(week, [0, 0])
            counts[0] += not v.passed
            counts[1] += 1
        return {w: (c[0], c[1]) for w, c in sorted(weeks.items())}

    def rejections(self, model: str | None = None) -> Counter[tuple[str, str]]:
        return Counter(v.reason for v in self._of(model) if v.reason is not None)

    def run_states(self, model: str | None = None) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for r in self.runs:
            if model is None or r.model == model:
                out.setdefault(r.flow, Counter())[r.state] += 1
        return out

    def retrains(self, model: str | None = None) -> Counter[str]:
        return Counter(
            r.cause
            for r in self.runs
            if r.flow == "train-model" and (model is None or r.model == model)
        )

    def drift_recoveries(self, model: str) -> tuple[list[float], int]:
        """Hours from each first unrecovered detection to the first decision on a version
        registered after it (the definition, applied by brute force), and how many detections
        have none."""
        versions = self._of(model)
        answers: dict[datetime, datetime] = {}
        unrecovered = 0
        for d in sorted(self.drift, key=lambda d: d.detected_at):
            if d.model != model:
                continue
            after = [
                v.decided_at for v in versions if v.ingested_at + _registered(v) > d.detected_at
            ]
            if not after:
                unrecovered += 1
                continue
            answers.setdefault(min(after), d.detected_at)
        hours = [(a - d).total_seconds() / 3600 for a, d in sorted(answers.items())]
        return hours, unrecovered


def _registered(v: PlantedVersion) -> timedelta:
    """When a planted version is registered, after its ingestion: 30 % of its lead time."""
    return (v.decided_at - v.ingested_at) * 0.3


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _actor(run_id: str) -> str:
    return f"flow-run:{run_id} for local:root"


@dataclass
class _Plan:
    """Audit records to write, each with its planted time; ``promoted`` records are completed
    (``from``, ``intent_seq``) once the order, and so the seqs, are known."""

    items: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)

    def add(self, at: datetime, **fields: Any) -> dict[str, Any]:
        fields.setdefault("actor", "system")
        self.items.append((at, len(self.items), fields))
        return fields


def write_synthetic_history(
    audit_url: str,
    *,
    models: Sequence[str],
    start: datetime,
    weeks: int,
    versions_per_week: int,
    shift_at: datetime | None,
    lead_time_hours: tuple[float, float],
    gate_failure_rate: tuple[float, float],
    seed: int,
    filler_records: int = 0,
    other_runs_per_week: int = 4,
    traced_runs: int = 2,
    drift_every_weeks: int = 3,
    rollback_every: int = 7,
) -> SyntheticTruth:
    """Plant ``weeks`` of delivery history for each of ``models`` from ``start`` into the audit
    store at ``audit_url`` (empty, or holding only older records) and return the truth.

    Each week a model gets ``versions_per_week`` data versions, each ingested and trained into
    one version, with a lead time of ``lead_time_hours`` (before ``shift_at``, after it) ±20 %
    and a first validation that fails with probability ``gate_failure_rate`` (before, after);
    a passing version is approved and promoted. Every ``drift_every_weeks`` weeks drift is
    detected (and a retrain triggered) at the week's start; every ``rollback_every``-th
    promotion is rolled back a minute later. ``filler_records`` records the metrics never read
    (``batch_scored``) are spread over the period; ``other_runs_per_week`` scoring runs a model
    and week, some failed, crashed or cancelled; the first ``traced_runs`` training runs of a
    model carry task runs.
    """
    rng = random.Random(seed)
    start = start.astimezone(UTC)
    end = start + weeks * WEEK
    plan = _Plan()
    versions: list[PlantedVersion] = []
    drift: list[PlantedDrift] = []
    rollbacks: list[tuple[str, str, datetime]] = []
    runs: list[SyntheticRun] = []
    promoted_records: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    spacing = WEEK / versions_per_week
    for model in models:
        number = 0
        promotions = 0
        for week in range(weeks):
            week_start = start + week * WEEK
            if drift_every_weeks and week % drift_every_weeks == drift_every_weeks - 1:
                at = week_start + HOUR
                drift.append(PlantedDrift(model, at))
                plan.add(at, action="drift_detected", model=model, details={"drifted": ["age"]})
                plan.add(
                    at + timedelta(minutes=1),
                    action="retrain_triggered",
                    model=model,
                    details={"drift_reasons": ["age drifted"]},
                )
            for j in range(versions_per_week):
                number += 1
                t0 = week_start + spacing * (j + 0.5 * rng.random())
                after = shift_at is not None and t0 >= shift_at
                lead = lead_time_hours[after] * rng.uniform(0.8, 1.2) * HOUR
                failed = rng.random() < gate_failure_rate[after]
                version = str(number)
                digest = hashlib.sha256(f"{seed}:{model}:{version}".encode()).hexdigest()
                ingest_id, train_id = _uuid(rng), _uuid(rng)
                runs.append(
                    SyntheticRun(
                        id=ingest_id,
                        flow="ingest-data",
                        name=f"ingest-{model}-{version}",
                        model=model,
                        state="COMPLETED",
                        start=t0 - timedelta(minutes=5),
                        end=t0 + timedelta(seconds=30),
                        tags=("mlsteward", "ingestion", model),
                        parameters={"model": model},
                    )
                )
                plan.add(
                    t0,
                    action="ingestion_accepted",
                    model=model,
                    actor=_actor(ingest_id),
                    details={"data_version": digest, "rows": 1000},
                )
                plan.add(
                    t0 + lead * 0.3,
                    action="version_registered",
                    model=model,
                    version=version,
                    actor=_actor(train_id),
                    details={"data_digest": digest, "run_id": train_id},
                )
                gates = {"metric_thresholds": True, "fairness": True, "champion_comparison": True}
                if failed:
                    reason = rng.choice(REASONS)
                    gates[reason[0]] = False
                    plan.add(
                        t0 + lead,
                        action="validation_failed",
                        model=model,
                        version=version,
                        actor=_actor(train_id),
                        details={
                            "gates": gates,
                            "violations": [
                                {"gate": reason[0], "metric": reason[1], "rule": "planted"}
                            ],
                        },
                    )
                    versions.append(
                        PlantedVersion(
                            model, version, digest, t0, t0 + lead, t0 + lead, False, reason
                        )
                    )
                else:
                    for at, action in (
                        (0.5, "validation_passed"),
                        (0.6, "approval_requested"),
                        (0.9, "approval_granted"),
                    ):
                        plan.add(
                            t0 + lead * at,
                            action=action,
                            model=model,
                            version=version,
                            actor=_actor(train_id),
                            details={"gates": gates, "violations": []} if at == 0.5 else {},
                        )
                    intent = plan.add(
                        t0 + lead * 0.95,
                        action="promotion_intent",
                        model=model,
                        version=version,
                        actor=_actor(train_id),
                        details={"action": "promoted", "to": version},
                    )
                    done = plan.add(
                        t0 + lead,
                        action="promoted",
                        model=model,
                        version=version,
                        actor=_actor(train_id),
                        details={},
                    )
                    promoted_records.append((model, intent, done))
                    lead_h = lead / HOUR
                    versions.append(
                        PlantedVersion(
                            model,
                            version,
                            digest,
                            t0,
                            t0 + lead * 0.5,
                            t0 + lead,
                            True,
                            None,
                            approval_hours=0.3 * lead_h,
                            promotion_hours=0.05 * lead_h,
                        )
                    )
                    promotions += 1
                    if rollback_every and promotions % rollback_every == 0:
                        at = t0 + lead + timedelta(minutes=1)
                        rollbacks.append((model, version, at))
                        plan.add(
                            at,
                            action="rollback",
                            model=model,
                            version=None,
                            details={"from": version, "reason": "planted"},
                        )
                runs.append(_training_run(rng, model, version, train_id, t0, lead, traced_runs))
            runs += _other_runs(rng, model, week_start, other_runs_per_week)
    for i in range(filler_records):
        at = start + (end - start) * (i / max(1, filler_records))
        plan.add(at, action="batch_scored", model=models[i % len(models)], details={"rows": 10})
    records = _write(audit_url, plan, promoted_records)
    runs.sort(key=lambda r: r.start)
    return SyntheticTruth(start, end, records, versions, drift, rollbacks, runs)


def _training_run(
    rng: random.Random,
    model: str,
    version: str,
    run_id: str,
    t0: datetime,
    lead: timedelta,
    traced_runs: int,
) -> SyntheticRun:
    cause = rng.choice(("drift", "schedule", "ci", "api", "manual", "manual"))
    begin = t0 + lead * 0.1
    tasks: list[SyntheticTask] = []
    if int(version) <= traced_runs:
        at = begin + timedelta(seconds=5)
        for stage in ("retrieval", "tuning"):
            for name, seconds in STAGE_TASK_SECONDS[stage]:
                tasks.append(SyntheticTask(name, at, at + timedelta(seconds=seconds)))
                at += timedelta(seconds=seconds + 1)
        tasks.append(SyntheticTask("register-model", at, at + timedelta(seconds=7)))
        at += timedelta(seconds=8)
        for name, seconds in STAGE_TASK_SECONDS["gates"]:
            tasks.append(SyntheticTask(name, at, at + timedelta(seconds=seconds)))
            at += timedelta(seconds=seconds + 1)
    # a run from the command line has no tags; half of them name no model either, so only the
    # audit records it wrote (their actor) link it to its model
    parameters: dict[str, Any] = (
        {"max_evals": 5} if cause == "manual" and rng.random() < 0.5 else {"model": model}
    )
    return SyntheticRun(
        id=run_id,
        flow="train-model",
        name=f"train-{model}-{version}",
        model=model,
        state="COMPLETED",
        start=begin,
        end=t0 + lead + timedelta(minutes=2),
        tags=()
        if cause == "manual"
        else ("mlsteward", "training", model, *CAUSE_TAGS.get(cause, ())),
        parameters=parameters,
        auto_scheduled=cause == "schedule",
        automation=cause == "drift",
        cause=cause,
        tasks=tuple(tasks),
    )


def _other_runs(
    rng: random.Random, model: str, week_start: datetime, count: int
) -> list[SyntheticRun]:
    out = []
    for i in range(count):
        begin = week_start + WEEK * ((i + rng.random() * 0.5) / max(1, count))
        state = rng.choices(("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), (14, 3, 2, 1))[0]
        out.append(
            SyntheticRun(
                id=_uuid(rng),
                flow="score-model",
                name=f"score-{model}-{begin:%Y%m%d%H%M}-{i}",
                model=model,
                state=state,
                start=begin,
                end=begin + timedelta(minutes=3),
                tags=("mlsteward", "scoring", model),
                parameters={"model": model},
                auto_scheduled=True,
            )
        )
    return out


def _write(
    audit_url: str,
    plan: _Plan,
    promoted: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> int:
    """Every planned record in time order through the store's bulk path."""
    plan.items.sort(key=lambda item: (item[0], item[1]))
    with audit_store(audit_url) as store:
        head = store.last()
        first_seq = (head.seq if head else 0) + 1
        seqs = {id(fields): first_seq + i for i, (_, _, fields) in enumerate(plan.items)}
        champion: dict[str, str | None] = {}
        order = sorted(promoted, key=lambda p: seqs[id(p[2])])
        for model, intent, done in order:
            done["details"] = {
                "from": champion.get(model),
                "intent_seq": seqs[id(intent)],
                "approval": {"approvers": ["user:alice"]},
            }
            intent["details"]["from"] = champion.get(model)
            champion[model] = done["version"]
        return store._bulk_append(  # type: ignore[attr-defined]
            {**fields, "ts": format_ts(at)} for at, _, fields in plan.items
        )


# -- Prefect ----------------------------------------------------------------------------------


def create_synthetic_runs(runs: Sequence[SyntheticRun], *, batch: int = 50) -> int:
    """Write ``runs`` (with their task runs) into the Prefect server database this process is
    configured for; returns how many flow runs were written."""
    return asyncio.run(_create_runs(runs, batch))


async def _create_runs(runs: Sequence[SyntheticRun], batch: int) -> int:
    # the server's models: a test-only import (they load the server's ORM)
    from prefect.server import models, schemas
    from prefect.server.database import provide_database_interface

    core, states = schemas.core, schemas.states
    db = provide_database_interface()
    flows: dict[str, uuid.UUID] = {}
    async with db.session_context(begin_transaction=True) as session:
        for name in sorted({r.flow for r in runs}):
            flow = await models.flows.create_flow(session=session, flow=core.Flow(name=name))
            flows[name] = flow.id
    for i in range(0, len(runs), batch):
        async with db.session_context(begin_transaction=True) as session:
            for r in runs[i : i + batch]:
                state = states.State(type=states.StateType[r.state], timestamp=r.end)
                await models.flow_runs.create_flow_run(
                    session=session,
                    flow_run=core.FlowRun(
                        id=uuid.UUID(r.id),
                        name=r.name,
                        flow_id=flows[r.flow],
                        parameters=r.parameters,
                        tags=list(r.tags),
                        auto_scheduled=r.auto_scheduled,
                        created_by=core.CreatedBy(
                            id=uuid.uuid4(), type="AUTOMATION", display_value="drift retrain"
                        )
                        if r.automation
                        else None,
                        expected_start_time=r.start,
                        start_time=r.start,
                        end_time=r.end,
                        total_run_time=r.end - r.start,
                        state=state,
                    ),
                )
                for n, t in enumerate(r.tasks):
                    await models.task_runs.create_task_run(
                        session=session,
                        task_run=core.TaskRun(
                            name=f"{t.name}-0",
                            flow_run_id=uuid.UUID(r.id),
                            task_key=f"synthetic.{t.name}",
                            dynamic_key=str(n),
                            expected_start_time=t.start,
                            start_time=t.start,
                            end_time=t.end,
                            total_run_time=t.end - t.start,
                            state=states.State(type=states.StateType.COMPLETED, timestamp=t.end),
                        ),
                    )
    return len(runs)

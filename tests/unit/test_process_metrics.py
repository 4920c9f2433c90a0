"""The process metrics on hand-built histories: each definition, its edge cases (a version not
decided yet, a rollback, an empty period, runs without Prefect), and reading the audit part
from a real store and the Prefect part when no API answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlsteward.audit import audit_store
from mlsteward.process.history import (
    ACTIONS,
    AuditEvent,
    AuditHistory,
    FlowRunRecord,
    History,
    ProcessError,
    RunHistory,
    TaskRunRecord,
    audit_event,
    read_audit,
    read_runs,
    run_model,
    task_name,
)
from mlsteward.process.metrics import cause, process_metrics, scope_metrics
from mlsteward.process.model import ALL, CAUSES, STAGES

T0 = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
SINCE, UNTIL = T0, T0 + timedelta(weeks=2)
RUN = "0b8f7d4e-2a31-4c55-9d7e-1f0a2b3c4d5e"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class Trail:
    """Audit events in the order they are added (seq), at hours after T0."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def add(
        self, hours: float, action: str, version: str | None = None, model: str = "m", **kw: Any
    ) -> AuditEvent:
        event = AuditEvent(
            seq=len(self.events) + 1,
            at=at(hours),
            action=action,
            model=model,
            version=version,
            **kw,
        )
        self.events.append(event)
        return event

    def history(self, runs: RunHistory | None = None) -> History:
        return History(
            audit=AuditHistory(self.events, since=None),
            runs=runs if runs is not None else RunHistory.unavailable("no Prefect in this test"),
            since=SINCE,
            until=UNTIL,
        )


def flow_run(
    flow: str,
    start: float,
    end: float | None,
    state: str = "COMPLETED",
    *,
    id: str | None = None,
    model: str | None = "m",
    tags: tuple[str, ...] = (),
    **kw: Any,
) -> FlowRunRecord:
    return FlowRunRecord(
        id=id or f"{flow}-{start}-{state}",
        flow=flow,
        name=f"{flow}-{start}",
        model=model,
        tags=tags,
        state=state,
        start=at(start),
        end=at(end) if end is not None else None,
        seconds=((end - start) * 3600) if end is not None else 0.0,
        **kw,
    )


def metrics(trail: Trail, runs: RunHistory | None = None, **kw: Any) -> Any:
    kw = {"since": SINCE, "until": UNTIL, **kw}
    return scope_metrics(trail.history(runs), kw.pop("scope", "m"), **kw)


# -- lead times -------------------------------------------------------------------------------


def test_lead_time_runs_from_the_first_ingestion_to_the_first_decision_on_its_data() -> None:
    t = Trail()
    t.add(0, "ingestion_accepted", digest="D")
    t.add(1, "version_registered", "1", digest="D")
    t.add(2, "ingestion_accepted", digest="D")  # the same data again: still measured from 0
    t.add(3, "validation_failed", "1", reasons=(("fairness", None),))
    t.add(4, "version_registered", "2", digest="D")
    t.add(5, "validation_passed", "2")
    t.add(10, "promoted", "2")
    t.add(6, "ingestion_accepted", digest="E")  # registered, never decided: no point yet
    t.add(7, "version_registered", "3", digest="E")
    m = metrics(t)
    assert [(p.value, p.version, p.at) for p in m.lead_time_to_decision] == [(3.0, "1", at(3))]
    assert [(p.value, p.label) for p in m.lead_time_to_champion] == [(10.0, "m v2")]


@pytest.mark.parametrize(
    "action", ["approval_rejected", "approval_timed_out", "promotion_refused", "promoted"]
)
def test_every_kind_of_decision_ends_a_lead_time(action: str) -> None:
    t = Trail()
    t.add(0, "ingestion_accepted", digest="D")
    t.add(1, "version_registered", "1", digest="D")
    t.add(2.5, action, "1")
    m = metrics(t)
    assert [p.value for p in m.lead_time_to_decision] == [2.5]
    assert [p.value for p in m.lead_time_to_champion] == ([2.5] if action == "promoted" else [])


def test_lead_times_count_only_decisions_inside_the_period() -> None:
    t = Trail()
    for i, decided in enumerate((-2.0, 5.0, 24 * 14.0)):  # before, inside, at until
        t.add(decided - 10, "ingestion_accepted", digest=f"D{i}")
        t.add(decided - 5, "version_registered", str(i), digest=f"D{i}")
        t.add(decided, "promoted", str(i))
    m = metrics(t)
    assert [p.version for p in m.lead_time_to_decision] == ["1"]
    # a decision on data decided before the period is not a first decision in it
    t.add(30, "promoted", "0")
    assert [p.version for p in metrics(t).lead_time_to_decision] == ["1"]


def test_a_decision_on_data_ingested_before_the_history_was_read_has_no_lead_time() -> None:
    t = Trail()
    t.add(1, "version_registered", "1", digest="OLD")
    t.add(2, "promoted", "1")
    m = metrics(t)
    assert m.lead_time_to_decision == [] and m.promotions == 1


# -- cycle times ------------------------------------------------------------------------------


def test_approval_wait_and_promotion_cycle_times() -> None:
    t = Trail()
    t.add(1, "approval_requested", "1")
    t.add(2, "approval_requested", "1")  # asked again before an answer: from the first
    t.add(4, "approval_granted", "1")
    intent = t.add(4.25, "promotion_intent", "1")
    t.add(4.75, "promoted", "1", intent_seq=intent.seq)
    t.add(5, "approval_requested", "2")
    t.add(6.5, "approval_timed_out", "2")
    t.add(7, "approval_requested", "3")  # not answered yet: no point
    t.add(8, "approval_granted", "4")  # an answer without a request: no point
    m = metrics(t)
    assert [(p.version, p.value) for p in m.cycle_times["approval_wait"]] == [
        ("1", 3.0),
        ("2", 1.5),
    ]
    assert [(p.version, p.value) for p in m.cycle_times["promotion"]] == [("1", 0.5)]


def test_stage_cycle_times_come_from_the_runs_and_sum_a_stages_tasks() -> None:
    train = flow_run("train-model", 1, 3, id=RUN)
    ingest = flow_run("ingest-data", 0, 0.5)
    failed_ingest = flow_run("ingest-data", 0.6, 0.7, "FAILED")

    def task(name: str, stage: str, start: float, seconds: float) -> TaskRunRecord:
        begin = at(start)
        return TaskRunRecord(RUN, name, stage, begin, begin + timedelta(seconds=seconds), seconds)

    tasks = [
        task("retrieve-training-set", "retrieval", 1.1, 360),
        task("tune-hyperparameters", "tuning", 1.2, 1800),
        task("score-holdout", "gates", 2.0, 900),
        task("gate-fairness", "gates", 2.3, 900),
    ]
    m = metrics(Trail(), RunHistory([train, ingest, failed_ingest], tasks))
    assert set(m.cycle_times) == set(STAGES)
    assert [p.value for p in m.cycle_times["ingest"]] == [0.5]  # completed runs only
    assert [p.value for p in m.cycle_times["retrieval"]] == [0.1]
    assert [p.value for p in m.cycle_times["tuning"]] == [0.5]
    gates = m.cycle_times["gates"]
    assert [p.value for p in gates] == [0.5]
    assert gates[0].at == at(2.3) + timedelta(seconds=900)  # the stage's last end


# -- first-pass yield and rejections ----------------------------------------------------------


def test_first_pass_yield_judges_a_versions_first_validation_only() -> None:
    t = Trail()
    t.add(-5, "validation_failed", "0")  # first validated before the period: not counted
    t.add(1, "validation_passed", "0")
    t.add(2, "validation_passed", "1")
    t.add(3, "validation_failed", "2", reasons=(("fairness", "tpr"),))
    t.add(4, "validation_passed", "2")  # passes later: still a first-pass failure
    t.add(24 * 8, "validation_failed", "3", reasons=(("metric_thresholds", "roc_auc"),))
    m = metrics(t)
    assert (m.versions_validated, m.first_pass, m.first_pass_yield) == (3, 1, 1 / 3)
    assert [(g.start, g.end, g.defects, g.size) for g in m.gate_failures] == [
        (SINCE, SINCE + timedelta(weeks=1), 1, 2),
        (SINCE + timedelta(weeks=1), UNTIL, 1, 1),
    ]


def test_subgroups_keep_empty_periods_and_clip_the_first_and_last() -> None:
    t = Trail()
    t.add(24 * 2 + 1, "validation_failed", "1", reasons=(("fairness", None),))
    since = T0 + timedelta(hours=12)  # a Monday noon: the first day is clipped
    m = metrics(t, since=since, until=T0 + timedelta(days=4, hours=6), subgroup="day")
    assert [(g.start, g.defects, g.size) for g in m.gate_failures] == [
        (since, 0, 0),
        (T0 + timedelta(days=1), 0, 0),
        (T0 + timedelta(days=2), 1, 1),
        (T0 + timedelta(days=3), 0, 0),
        (T0 + timedelta(days=4), 0, 0),
    ]
    assert m.gate_failures[-1].end == T0 + timedelta(days=4, hours=6)
    assert m.gate_failures[0].proportion is None and m.gate_failures[2].proportion == 1.0


def test_rejections_are_a_pareto_of_failed_gates_and_their_metrics() -> None:
    t = Trail()
    roc, fair = ("metric_thresholds", "roc_auc"), ("fairness", "equalized_odds_difference")
    t.add(1, "validation_failed", "1", reasons=(roc, fair))
    t.add(2, "validation_failed", "2", reasons=(roc,))
    t.add(3, "validation_failed", "3", reasons=(roc, ("champion_comparison", None)))
    t.add(4, "validation_failed", "3", reasons=(fair,))  # a second validation counts too
    items = metrics(t).rejections
    assert [(i.gate, i.metric, i.count) for i in items] == [
        ("metric_thresholds", "roc_auc", 3),
        ("fairness", "equalized_odds_difference", 2),
        ("champion_comparison", None, 1),
    ]
    assert [i.share for i in items] == [0.5, pytest.approx(1 / 3), pytest.approx(1 / 6)]
    assert [i.cumulative for i in items] == [0.5, pytest.approx(5 / 6), pytest.approx(1.0)]


def test_a_failed_validation_record_becomes_its_gates_and_metrics() -> None:
    """The record as ``governance.promotion.record_validation`` writes it."""
    from mlsteward.audit.records import AuditRecord

    violation = {"gate": "fairness", "rule": "sex: tpr_difference <= 0.1", "metric": "tpr"}
    record = AuditRecord(
        seq=7,
        ts="2025-03-03T10:00:00.000000Z",
        actor=f"flow-run:{RUN} for local:root",
        action="validation_failed",
        model="m",
        version="3",
        reason="",
        details={
            "gates": {"metric_thresholds": False, "fairness": False, "champion_comparison": True},
            "violations": [violation, {**violation, "rule": "race: tpr_difference <= 0.1"}],
        },
        prev_hash="",
        hash="",
    )
    event = audit_event(record)
    assert event.reasons == (("metric_thresholds", None), ("fairness", "tpr"))
    assert event.flow_run == RUN and event.at == at(10)


# -- retrains ---------------------------------------------------------------------------------


def test_retrain_causes_come_from_how_each_training_run_started() -> None:
    runs = [
        flow_run("train-model", 1, 2, tags=("mlsteward", "training", "m", "webhook")),
        flow_run("train-model", 2, 3, tags=("mlsteward", "training", "m", "api")),
        flow_run("train-model", 3, 4, tags=("mlsteward", "training", "m"), auto_scheduled=True),
        flow_run("train-model", 4, 5, tags=("mlsteward", "training", "m"), created_by="AUTOMATION"),
        flow_run("train-model", 5, 6),
        flow_run("train-model", 6, None, "RUNNING"),  # started in the period: counted
        flow_run("score-model", 7, 8, auto_scheduled=True),  # not a training run
    ]
    assert [cause(r) for r in runs[:5]] == ["ci", "api", "schedule", "drift", "manual"]
    m = metrics(Trail(), RunHistory(runs))
    assert m.retrains == {"drift": 1, "schedule": 1, "ci": 1, "api": 1, "manual": 2}
    assert list(m.retrains) == list(CAUSES) and m.retrain_count == 6


def test_without_prefect_retrains_come_from_the_audit_trail() -> None:
    t = Trail()
    t.add(1, "retrain_triggered")
    t.add(2, "retrain_triggered", model="other")
    started = (("train", "m", RUN), ("train", "other", "x"), ("score", "m", "y"))
    t.add(3, "webhook_accepted", model=None, runs=started)
    m = metrics(t)
    assert m.retrains == {"drift": 1, "schedule": 0, "ci": 1, "api": 0, "manual": 0}
    assert metrics(t, scope=ALL).retrains["ci"] == 2
    assert t.history().notes == ["no Prefect in this test"]


# -- drift, promotions, rollbacks -------------------------------------------------------------


def test_drift_recovery_is_measured_from_the_first_detection_it_ends() -> None:
    t = Trail()
    t.add(0, "drift_detected")
    t.add(1, "version_registered", "1", digest="D")  # after the first detection
    t.add(2, "drift_detected")  # before any recovery: one point with the first
    t.add(3, "version_registered", "2", digest="E")
    t.add(6, "validation_failed", "2")
    t.add(8, "promoted", "1")
    t.add(9, "drift_detected")  # no version registered after it: not recovered
    t.add(10, "drift_detected", model="other")  # another model's drift
    t.add(11, "version_registered", "9", digest="F", model="other")
    t.add(12, "promoted", "9", model="other")
    m = metrics(t)
    assert [(p.value, p.version) for p in m.drift_to_recovery] == [(6.0, "2")]
    assert m.unrecovered_drift == 1
    every = metrics(t, scope=ALL)
    assert sorted(p.value for p in every.drift_to_recovery) == [2.0, 6.0]


def test_a_version_registered_before_the_drift_does_not_recover_it() -> None:
    t = Trail()
    t.add(0, "version_registered", "1", digest="D")
    t.add(1, "drift_detected")
    t.add(2, "promoted", "1")
    m = metrics(t)
    assert m.drift_to_recovery == [] and m.unrecovered_drift == 1


def test_rollbacks_and_the_promotions_they_undo() -> None:
    t = Trail()
    t.add(1, "promoted", "1")
    t.add(2, "promoted", "2")
    t.add(3, "rollback", "1", rolled_from="2")
    t.add(4, "promoted", "3")
    t.add(5, "promoted", "2")  # promoted again (an override) and not rolled back this time
    m = metrics(t)
    assert (m.promotions, m.rollbacks, m.promotions_rolled_back) == (4, 1, 1)
    assert m.rollback_rate == 0.25 and m.change_failure_rate == 0.25
    # a rollback after the period still marks a promotion made in it (as known at until)
    t.add(24 * 20, "rollback", "3", rolled_from="2")
    assert metrics(t).promotions_rolled_back == 1
    assert metrics(t, until=T0 + timedelta(weeks=4)).promotions_rolled_back == 2


# -- runs -------------------------------------------------------------------------------------


def test_runs_by_flow_and_failures_by_period() -> None:
    runs = [
        flow_run("score-model", 1, 2),
        flow_run("score-model", 2, 3, "FAILED"),
        flow_run("score-model", 3, 4, "CRASHED"),
        flow_run("score-model", 4, 5, "CANCELLED"),
        flow_run("score-model", 200, 201),
        flow_run("train-model", 5, None, "RUNNING"),
        flow_run("ingest-data", -3, -2, "FAILED"),  # started before the period
    ]
    m = metrics(Trail(), RunHistory(runs))
    counts = {r.flow: r for r in m.runs}
    assert set(counts) == {"score-model", "train-model"}
    score = counts["score-model"]
    assert (score.total, score.completed, score.failed, score.crashed, score.cancelled) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert score.failure_rate == 0.5 and counts["train-model"].total == 0
    assert [(g.defects, g.size) for g in m.run_failures] == [(2, 3), (0, 1)]


def test_a_models_runs_are_found_by_parameters_audit_actor_or_tag() -> None:
    t = Trail()
    t.add(1, "version_registered", "1", digest="D", flow_run=RUN)
    runs = [
        flow_run("train-model", 1, 2, id=RUN, model=None),  # the CLI's run: linked by actor
        flow_run("train-model", 2, 3, model=None, tags=("mlsteward", "training", "m")),
        flow_run("train-model", 3, 4, model="other"),
        flow_run("reaper", 4, 5, model=None),
    ]
    got = process_metrics(t.history(RunHistory(runs)), ["m", "other"], since=SINCE, until=UNTIL)
    assert set(got) == {"m", "other", ALL}
    assert [r.total for r in got["m"].runs] == [2]
    assert [r.total for r in got["other"].runs] == [1]
    assert {r.flow: r.total for r in got[ALL].runs} == {"reaper": 1, "train-model": 3}


def test_an_empty_period_has_every_key_and_honest_subgroups() -> None:
    m = metrics(Trail(), RunHistory([]))
    assert m.lead_time_to_decision == [] and m.drift_to_recovery == []
    assert set(m.cycle_times) == set(STAGES) and not any(m.cycle_times.values())
    assert (m.versions_validated, m.first_pass_yield, m.rollback_rate) == (0, None, None)
    assert [(g.defects, g.size) for g in m.gate_failures] == [(0, 0), (0, 0)]
    assert [(g.defects, g.size) for g in m.run_failures] == [(0, 0), (0, 0)]
    assert m.retrains == dict.fromkeys(CAUSES, 0) and m.runs == [] and m.rejections == []
    assert m.to_dict()["scope"] == "m"


def test_events_after_until_are_not_known_yet() -> None:
    t = Trail()
    t.add(0, "ingestion_accepted", digest="D")
    t.add(1, "version_registered", "1", digest="D")
    t.add(24 * 15, "promoted", "1")  # after until
    t.add(2, "drift_detected")
    m = metrics(t)
    assert m.lead_time_to_decision == [] and m.promotions == 0 and m.unrecovered_drift == 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"subgroup": "month"}, "subgroup must be 'day' or 'week'"),
        ({"until": SINCE}, "the period must end after it starts"),
        ({"scope": ""}, "scope must be a model's name"),
    ],
)
def test_bad_requests_are_refused_with_one_clear_message(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ProcessError, match=message):
        metrics(Trail(), **kw)


# -- reading ----------------------------------------------------------------------------------


def test_run_model_and_task_name() -> None:
    assert run_model({"model": "m", "seed": 1}) == "m"
    assert run_model({"spec": {"cfg": {"name": "m"}}, "data_key": "k"}) == "m"
    assert run_model({"cfg": {"name": "m"}}) == "m"
    assert run_model({"max_evals": 3}) is None
    assert task_name("gate-champion-comparison-0") == "gate-champion-comparison"
    assert task_name("tune-trials-12") == "tune-trials"


def test_read_audit_reads_only_the_actions_the_metrics_use(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    with audit_store(url) as store:
        store.append("ingestion_accepted", model="m", details={"data_version": "D"})
        store.append("batch_scored", model="m", details={"rows": 3})
        store.append("alias_changed", model="m", version="1")
        actor = f"flow-run:{RUN} for local:root"
        store.append(
            "version_registered", model="m", version="1", actor=actor, details={"data_digest": "D"}
        )
        store.append("promoted", model="m", version="1", details={"from": None, "intent_seq": 9})
        history = read_audit(store, since=None)
    assert [e.action for e in history.events] == [
        "ingestion_accepted",
        "version_registered",
        "promoted",
    ]
    ingested, registered, promoted = history.events
    assert ingested.digest == registered.digest == "D"
    assert registered.flow_run == RUN and promoted.intent_seq == 9
    assert "batch_scored" not in ACTIONS and len(set(ACTIONS)) == len(ACTIONS)


def test_no_prefect_api_means_an_empty_run_history_with_a_note() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        runs = read_runs(since=SINCE, until=UNTIL)
    assert not runs.available and runs.flow_runs == [] and runs.task_runs == []
    assert runs.note is not None and "127.0.0.1:9" in runs.note

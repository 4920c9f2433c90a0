"""The process history read back from real stores: a planted history (a real SQLite audit
trail and real runs in the session's Prefect server) gives back what was planted, and the
metrics of a real trained stack agree with its own audit records.

The stack is the module's shared one (v1 promoted, v2 a challenger, both on one data version);
the planted history lies in 2024, apart from every run the session makes now.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlsteward.audit import Action, audit_store
from mlsteward.process.history import read_history
from mlsteward.process.metrics import process_metrics, scope_metrics
from mlsteward.process.model import ALL, CAUSES
from tests.support.governance import MODEL
from tests.support.process_history import (
    STAGE_TASK_SECONDS,
    create_synthetic_runs,
    write_synthetic_history,
)

START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
MODELS = ("alpha", "beta")


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


def test_a_planted_history_is_read_back_as_planted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    truth = write_synthetic_history(
        url,
        models=MODELS,
        start=START,
        weeks=3,
        versions_per_week=4,
        shift_at=START + timedelta(weeks=2),
        lead_time_hours=(10.0, 30.0),
        gate_failure_rate=(0.2, 0.6),
        seed=3,
        filler_records=40,
    )
    assert create_synthetic_runs(truth.runs) == len(truth.runs)
    until = truth.end + timedelta(weeks=1)  # every planted decision falls inside
    with audit_store(url) as store:
        assert store.verify().ok
        history = read_history(since=START, until=until, store=store)
    assert history.notes == [] and len(history.runs.flow_runs) == len(truth.runs)
    got = process_metrics(history, MODELS, since=START, until=until)

    for model in MODELS:
        m = got[model]
        lead = {(p.model, p.version): p.value for p in m.lead_time_to_decision}
        assert lead == pytest.approx(truth.lead_times(model), abs=1e-6)
        crowned = {(p.model, p.version): p.value for p in m.lead_time_to_champion}
        assert crowned == pytest.approx(truth.champion_lead_times(model), abs=1e-6)
        weeks = {g.start: (g.defects, g.size) for g in m.gate_failures}
        planted = truth.gate_failures(model)
        assert {w: weeks[w] for w in planted} == planted
        assert all(weeks[w] == (0, 0) for w in weeks.keys() - planted.keys())
        assert Counter({(r.gate, r.metric): r.count for r in m.rejections}) == (
            truth.rejections(model)
        )
        states = {r.flow: Counter(_states(r)) for r in m.runs}
        assert states == truth.run_states(model)
        assert m.retrains == {c: truth.retrains(model)[c] for c in CAUSES}
        waits = sorted(p.value for p in m.cycle_times["approval_wait"])
        versions = [v for v in truth.versions if v.model == model]
        assert waits == pytest.approx(sorted(v.approval_hours for v in versions if v.passed))
        for stage, tasks in STAGE_TASK_SECONDS.items():  # two traced runs a model
            assert [p.value * 3600 for p in m.cycle_times[stage]] == pytest.approx(
                [sum(s for _, s in tasks)] * 2
            )
        recoveries, unrecovered = truth.drift_recoveries(model)
        assert [p.value for p in m.drift_to_recovery] == pytest.approx(recoveries)
        assert m.unrecovered_drift == unrecovered
        assert m.promotions == sum(v.passed for v in versions)
        rolled = [r for r in truth.rollbacks if r[0] == model]
        assert m.rollbacks == m.promotions_rolled_back == len(rolled) > 0

    every = got[ALL]
    assert every.versions_validated == len(truth.versions)
    assert every.retrain_count == sum(truth.retrains().values())
    failures = sum(s in ("FAILED", "CRASHED") for r in truth.runs for s in [r.state])
    assert sum(g.defects for g in every.run_failures) == failures > 0


def _states(counts: Any) -> dict[str, int]:
    out = {
        "COMPLETED": counts.completed,
        "FAILED": counts.failed,
        "CRASHED": counts.crashed,
        "CANCELLED": counts.cancelled,
    }
    return {k: v for k, v in out.items() if v}


def test_metrics_of_a_real_run_agree_with_its_audit_records(
    champion_and_challenger: dict[str, Any],
) -> None:
    champion = champion_and_challenger["champion"]
    with audit_store() as store:
        records = store.query()
        since = datetime.fromisoformat(records[0].ts) - timedelta(minutes=1)
        until = datetime.now(UTC) + timedelta(minutes=1)
        history = read_history(since=since, until=until, store=store)
    m = scope_metrics(history, MODEL, since=since, until=until)

    def ts(action: str, version: str | None = None) -> datetime:
        found = [r for r in records if r.action == action and version in (None, r.version)]
        return datetime.fromisoformat(found[0].ts)

    promoted = ts(Action.PROMOTED, champion)
    expected = (promoted - ts(Action.INGESTION_ACCEPTED)).total_seconds() / 3600
    # both versions were trained on the one data version: v1's promotion decided it first
    assert [(p.version, p.at) for p in m.lead_time_to_champion] == [(champion, promoted)]
    assert m.lead_time_to_champion[0].value == pytest.approx(expected)
    assert [(p.version, p.value) for p in m.lead_time_to_decision] == [
        (champion, pytest.approx(expected))
    ]

    validations = [r for r in records if r.action.startswith("validation_")]
    first = {r.version: r.action for r in reversed(validations)}
    assert m.versions_validated == len(first) == 2
    assert m.first_pass == sum(a == Action.VALIDATION_PASSED for a in first.values())
    assert m.promotions == sum(r.action == Action.PROMOTED for r in records) == 1

    # the training runs, found through Prefect and named by their flow, wrote the records
    registered = {r.actor.split()[0].removeprefix("flow-run:") for r in records}
    # (the session's Prefect server also holds other test modules' runs of this model name,
    # which the metrics rightly count: one server, one model name)
    training = [r for r in history.runs.flow_runs if r.flow == "train-model" and r.model == MODEL]
    ours = [r for r in training if r.id in registered]
    assert len(ours) == 2
    counts = {r.flow: r for r in m.runs}
    assert counts["train-model"].completed == len(training) >= 2
    assert counts["ingest-data"].completed >= 1
    assert m.retrains["manual"] >= 2  # started in-process, as `mlsteward train` does
    for stage in ("retrieval", "tuning", "gates"):
        assert len(m.cycle_times[stage]) >= 2, stage
        assert all(0 < p.value < 1 for p in m.cycle_times[stage]), stage
    assert len(m.cycle_times["ingest"]) == 1

"""The process history read back from real stores: a planted history (a real SQLite audit
trail and real runs in the session's Prefect server) gives back what was planted.

The planted history lies in 2024, apart from every run the session makes now. The metrics of a
real trained stack are checked against its own audit records beside the evidence pack, in
``test_evidence_pack.py``, which trains that stack anyway.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlsteward.audit import audit_store
from mlsteward.process.history import read_history
from mlsteward.process.metrics import process_metrics
from mlsteward.process.model import ALL, CAUSES
from tests.support.process_history import (
    STAGE_TASK_SECONDS,
    create_synthetic_runs,
    write_synthetic_history,
)

START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
MODELS = ("alpha", "beta")


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

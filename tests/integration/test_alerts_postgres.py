"""Alert incidents on PostgreSQL (the production profile keeps them beside the audit trail):
four monitor processes that see the same breach at once fire it once."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest

from mlsteward.alerts.engine import observe
from mlsteward.alerts.observation import Observation
from mlsteward.alerts.state import AlertState, Transition
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.config.settings import alerts_url

FORK = multiprocessing.get_context("fork")


def _check(
    url: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue[str]
) -> None:
    with AlertState(url) as state:
        barrier.wait()
        got = state.check("m", "error_rate", "", breached=True, quiet_period=timedelta(hours=1))
        out.put(got.transition.value)


def test_incidents_on_postgres_fire_once_across_processes(
    postgres_database: str, mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", postgres_database)
    assert alerts_url() == postgres_database  # beside the audit trail
    AlertState().close()  # the tables, before the race
    barrier, out = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=_check, args=(postgres_database, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    seen = sorted(out.get(timeout=5) for _ in procs)
    assert seen == sorted(["fired", "suppressed", "suppressed", "suppressed"])

    cfg = get_model_config("heart_disease")
    breach = Observation(rule="skew", breached=True, subject="bmi", summary="bmi differs")
    assert observe(cfg, [breach], actor="a")[0].transition is Transition.FIRED
    with AlertState() as state:
        assert [i["subject"] for i in state.firing("heart_disease")] == ["bmi"]
        state.put("heart_disease", "last_p99", {"version": "1", "p99": 0.004})
        assert state.get("heart_disease", "last_p99") == {"version": "1", "p99": 0.004}
    with audit_store() as store:
        assert [r.details["subject"] for r in store.query(action=Action.ALERT_FIRED)] == ["bmi"]

"""Drift decision policy and retrain-storm protection (real SQLite audit store)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.monitoring.retrain import claim_retrain, cooldown_verdict, decide, performance_drop

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def cfg():
    base = get_model_config("heart_disease")
    drift = base.drift.model_copy(
        update={"drift_share": 0.3, "key_features": ["st_depression"], "cooldown_hours": 24}
    )
    return base.model_copy(update={"drift": drift})


def perf(ref: float, cur: float, metric: str = "roc_auc") -> dict:
    return {"reference": {metric: ref}, "current": {metric: cur}}


def test_no_drift_no_retrain(cfg) -> None:
    d = decide([], 0.0, perf(0.86, 0.85), cfg)
    assert not d.retrain and d.reasons == []


def test_drifted_share_at_the_limit_retrains(cfg) -> None:
    cols = ["bmi", "cholesterol", "age", "resting_bp", "max_heart_rate"]
    d = decide(cols[:4], 4 / 14, None, cfg)
    assert not d.retrain  # 0.29 < 0.3
    d = decide(cols, 5 / 14, None, cfg)
    assert d.retrain and "5 of 14 features drifted" in d.reasons[0] and "bmi" in d.reasons[0]


def test_a_key_feature_alone_retrains(cfg) -> None:
    d = decide(["st_depression"], 1 / 14, None, cfg)
    assert d.retrain and d.reasons == ["key feature(s) drifted: st_depression"]


def test_performance_drop_with_labels_retrains(cfg) -> None:
    assert not decide([], 0.0, perf(0.86, 0.82), cfg).retrain  # drop 0.04 < 0.05
    d = decide([], 0.0, perf(0.86, 0.80), cfg)
    assert d.retrain and "roc_auc fell from 0.8600 to 0.8000" in d.reasons[0]


def test_performance_drop_direction_for_lower_is_better() -> None:
    assert performance_drop(perf(0.14, 0.20, "brier"), "brier") == pytest.approx(0.06)
    assert performance_drop(perf(0.86, 0.90), "roc_auc") == pytest.approx(-0.04)
    assert performance_drop(None, "roc_auc") is None
    assert performance_drop({"reference": {}, "current": {}}, "roc_auc") is None


def test_cooldown_rule() -> None:
    assert cooldown_verdict(T0, None, [], 24).allowed
    inside = cooldown_verdict(T0 + timedelta(hours=23), T0, [], 24)
    assert not inside.allowed and "cooldown" in inside.reason
    assert cooldown_verdict(T0 + timedelta(hours=24), T0, [], 24).allowed
    running = cooldown_verdict(T0, None, ["flow-run-1"], 24)
    assert not running.allowed and "already running" in running.reason


def test_claims_are_recorded_and_the_second_is_suppressed(cfg) -> None:
    store = audit_store()
    try:
        first = claim_retrain(cfg, store, reasons=["bmi drifted"], actor="drift", running=[])
        second = claim_retrain(
            cfg, store, reasons=["bmi drifted"], actor="drift", running=[],
            now=datetime.now(UTC) + timedelta(hours=1),
        )  # fmt: skip
        later = claim_retrain(
            cfg, store, reasons=["bmi drifted"], actor="drift", running=[],
            now=datetime.now(UTC) + timedelta(hours=25),
        )  # fmt: skip
        busy = claim_retrain(
            cfg, store, reasons=["x"], actor="drift", running=["run-9"],
            now=datetime.now(UTC) + timedelta(hours=100),
        )  # fmt: skip
        assert (first.allowed, second.allowed, later.allowed, busy.allowed) == (
            True, False, True, False,
        )  # fmt: skip
        actions = [r.action for r in store.query(model=cfg.name)]
        assert actions == [
            Action.RETRAIN_TRIGGERED,
            Action.RETRAIN_SUPPRESSED,
            Action.RETRAIN_TRIGGERED,
            Action.RETRAIN_SUPPRESSED,
        ]
        suppressed = store.query(model=cfg.name, action=Action.RETRAIN_SUPPRESSED)
        assert "cooldown" in suppressed[0].reason and "already running" in suppressed[1].reason
        assert suppressed[0].details["drift_reasons"] == ["bmi drifted"]
        assert store.verify().ok
    finally:
        store.close()


def test_concurrent_claims_allow_exactly_one(cfg) -> None:
    verdicts = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        store = audit_store()
        try:
            barrier.wait()
            verdicts.append(
                claim_retrain(cfg, store, reasons=["drift"], actor="drift", running=[]).allowed
            )
        finally:
            store.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(verdicts) == [False, False, False, True]

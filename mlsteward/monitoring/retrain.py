"""When drift means retrain, and retrain-storm protection.

Two plain decisions: :func:`decide` reads a drift result against the model's policy (the
quality rule's arithmetic is in ``quality``); and
:func:`claim_retrain` lets at most one drift-triggered retrain per model start inside the
cooldown window, and none while one is running. The claim is checked and recorded under a
per-model lock in the audit store, so drift flows that fire repeatedly or at the same moment
cannot both start a retrain; every suppressed trigger is recorded with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlsteward.audit import Action, AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.monitoring.quality import performance_drop as performance_drop
from mlsteward.monitoring.quality import quality_check

LOCK_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class DriftDecision:
    """Whether the drift seen warrants a retrain, with one reason per rule that fired."""

    retrain: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"retrain": self.retrain, "reasons": list(self.reasons)}


def decide(
    drifted_columns: list[str],
    dataset_drift_share: float,
    performance: dict[str, Any] | None,
    cfg: ModelConfig,
) -> DriftDecision:
    """Apply the policy in ``cfg.drift``: drifted share, key features, quality worsening.

    ``performance`` is ``{"reference": {metric: v}, "current": {...}, ...}`` when labels exist
    for the window, else None (then only the data rules apply). The quality rule watches
    ``drift.performance_metric`` (else the promotion's primary metric) in its own direction
    and retrains when it is worse by ``performance_drop``, in the metric's units or as a share
    of the reference value (``performance_drop_mode``); a better window never retrains.
    """
    policy = cfg.drift
    reasons = []
    features = len(cfg.features)
    if dataset_drift_share >= policy.drift_share:
        reasons.append(
            f"{len(drifted_columns)} of {features} features drifted (share "
            f"{dataset_drift_share:.2f} >= {policy.drift_share:.2f}): {', '.join(drifted_columns)}"
        )
    key = [c for c in policy.key_features if c in drifted_columns]
    if key:
        reasons.append(f"key feature(s) drifted: {', '.join(key)}")
    check = quality_check(performance, cfg)
    if check is not None and check.worse:
        reasons.append(check.reason())
    return DriftDecision(retrain=bool(reasons), reasons=reasons)


@dataclass(frozen=True)
class TriggerVerdict:
    allowed: bool
    reason: str
    last_trigger: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cooldown_verdict(
    now: datetime,
    last_trigger: datetime | None,
    running: list[str],
    cooldown_hours: float,
) -> TriggerVerdict:
    """The pure rule: nothing while a retrain runs; at most one per cooldown window."""
    last = last_trigger.isoformat() if last_trigger else None
    if running:
        return TriggerVerdict(
            False, f"a retrain is already running for this model ({', '.join(running)})", last
        )
    if last_trigger is not None:
        ready = last_trigger + timedelta(hours=cooldown_hours)
        if now < ready:
            return TriggerVerdict(
                False,
                f"cooldown: last drift-triggered retrain at {last}, next allowed after "
                f"{ready.isoformat(timespec='seconds')} ({cooldown_hours:g} h window)",
                last,
            )
    return TriggerVerdict(True, "no retrain running and outside the cooldown window", last)


def _parse_ts(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def claim_retrain(
    cfg: ModelConfig,
    audit: AuditStore,
    *,
    reasons: list[str],
    actor: str,
    running: list[str],
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> TriggerVerdict:
    """Check the cooldown and record the outcome atomically (per-model lock in the store).

    Returns the verdict; the caller starts the training run only when ``allowed``. The record
    is written before the run starts, so a concurrent drift flow waiting on the lock sees it.
    """
    now = now or datetime.now(UTC)
    with audit.lock(f"retrain:{cfg.name}", LOCK_TIMEOUT_SECONDS):
        last = audit.last(model=cfg.name, action=Action.RETRAIN_TRIGGERED)
        verdict = cooldown_verdict(
            now, _parse_ts(last.ts) if last else None, running, cfg.drift.cooldown_hours
        )
        audit.append(
            Action.RETRAIN_TRIGGERED if verdict.allowed else Action.RETRAIN_SUPPRESSED,
            model=cfg.name,
            actor=actor,
            reason="; ".join(reasons) if verdict.allowed else verdict.reason,
            details={
                **(details or {}),
                "drift_reasons": reasons,
                "cooldown_hours": cfg.drift.cooldown_hours,
                "last_trigger": verdict.last_trigger,
                "running": running,
            },
        )
    return verdict

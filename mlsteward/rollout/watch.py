"""The watch after a promotion: the standing rules, more often, for a while, and a rollback
when a rule marked ``rollback: true`` breaks.

A canary rollout judges a challenger before it takes all the traffic; the watch judges the new
champion once it has it (Argo Rollouts' post-promotion analysis, SageMaker's auto-rollback on
an alarm). A rollback goes through governance like any other (the promotion lock, the signed
record), and only while the watched version is still the champion: a person's later decision
is never undone by the watch of an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mlsteward.alerts.engine import AlertOutcome, rule_config
from mlsteward.alerts.observation import Observation
from mlsteward.audit import AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.governance import champion as champion_record
from mlsteward.governance import registry
from mlsteward.governance.promotion import champion_history


@dataclass(frozen=True)
class ChampionNow:
    """The champion as the watch needs it: since when, and what it was promoted on."""

    version: str
    since: datetime
    promoted_value: float | None
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "since": self.since.isoformat(),
            "promoted_value": self.promoted_value,
            "threshold": self.threshold,
        }


def champion_now(cfg: ModelConfig, audit: AuditStore) -> ChampionNow | None:
    """The recorded champion, when it became champion, and its holdout value of the watched
    metric (None: no champion)."""
    version, _ = champion_record.recorded(cfg.name, audit)
    if version is None:
        return None
    changes = [c for c in champion_history(cfg.name, audit) if c["to"] == version]
    since = datetime.fromisoformat(changes[-1]["ts"].replace("Z", "+00:00")) if changes else None
    info = registry.get_version(cfg.name, version)
    rule = cfg.alerts.rules.quality_drop
    metric = rule.metric or cfg.drift.performance_metric or cfg.promotion.primary_metric
    return ChampionNow(
        version=str(version),
        since=since or datetime.fromtimestamp(info.created_at_ms / 1000, UTC),
        promoted_value=info.metric(metric),
        threshold=None if cfg.is_regression else info.decision_threshold,
    )


def watching(cfg: ModelConfig, champ: ChampionNow, now: datetime | None = None) -> bool:
    """Within the watch window after the champion's promotion."""
    watch = cfg.alerts.watch
    now = now or datetime.now(UTC)
    return watch.enabled and now < champ.since + timedelta(minutes=watch.window_minutes)


def rollback_breaches(cfg: ModelConfig, outcomes: list[AlertOutcome]) -> list[Observation]:
    """Breaches that roll back: a rule marked ``rollback: true``, or one whose verdict asks for
    it (the error rate above ``rollback_above``, below the alert level)."""
    out = []
    for o in outcomes:
        obs = o.observation
        rule = rule_config(cfg, obs.rule)
        if rule.enabled and ((obs.breached and rule.rollback) or obs.rollback):
            out.append(obs)
    return out


def rollback_reason(version: str, breaches: list[Observation]) -> str:
    rules = "; ".join(f"{b.rule}: {b.summary}" for b in breaches)
    return f"post-promotion watch of v{version}: {rules}"

"""The standing alert rules: a scheduled monitor run, and the watch after each promotion that
runs them more often and rolls back on a breach of a rule marked ``rollback: true``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.rollout.watch import ChampionNow, rollback_breaches, watching
from tasks.alerts import raise_alerts
from tasks.common import run_actor, run_logger
from tasks.monitor import (
    attribution_checks,
    current_champion,
    quality_since_promotion,
    run_success_check,
    serving_checks,
    watch_rollback,
)
from tasks.production_checks import check_bias_task
from tasks.skew import check_skew


def standing_checks(cfg: ModelConfig, champ: ChampionNow) -> list[Observation]:
    """Every standing rule that does not need a drift run, on the current champion."""
    return [
        *serving_checks(cfg, champ.version),
        *run_success_check(cfg),
        *quality_since_promotion(cfg, champ),
    ]


def production_checks(cfg: ModelConfig, champ: ChampionNow, actor: str) -> list[Observation]:
    """The checks over the prediction log: the features served against Feast's offline store,
    SHAP attribution against the training reference, fairness on the labelled window."""
    skew = check_skew(cfg)
    bias = check_bias_task(cfg, champ.version)
    return [
        *skew.observations(cfg, champ.version),
        *attribution_checks(cfg, champ, actor),
        *bias.observations(cfg, champ.version),
    ]


@flow(name="monitor-model", log_prints=True)
def monitor_flow(model: str = "heart_disease", requested_by: str | None = None) -> dict[str, Any]:
    """Check MODEL's standing alert rules once; breaches become alerts (events, audit records,
    notifications through the model's automations).

    Args:
        model: name of a model config in config/models.
        requested_by: the principal this run acts for (``user:alice``).
    """
    # 0. The run's settings and the champion watched
    cfg, actor = get_model_config(model), run_actor(requested_by)
    champ = current_champion(cfg)
    if champ is None:
        return {"model": model, "champion": None, "alerts": []}

    # 1. The rules, then what people must hear
    observations = standing_checks(cfg, champ) + production_checks(cfg, champ, actor)
    alerts = raise_alerts(cfg, observations, actor)
    return {"model": model, "champion": champ.to_dict(), "alerts": [a.to_dict() for a in alerts]}


@flow(name="watch-model", log_prints=True)
def watch_flow(
    model: str = "heart_disease",
    version: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Watch MODEL's new champion for ``alerts.watch.window_minutes`` after its promotion,
    every ``alerts.watch.interval_minutes``; roll back on a breach of a rollback rule.

    Args:
        model: name of a model config in config/models.
        version: the champion to watch (default: the current one); the watch ends when
            another version becomes champion.
        requested_by: the principal this run acts for.
    """
    # 0. The run's settings and the champion watched
    cfg, actor = get_model_config(model), run_actor(requested_by)
    champ = current_champion(cfg)
    version = str(version or (champ.version if champ else ""))
    checks: list[dict[str, Any]] = []
    interval = timedelta(minutes=cfg.alerts.watch.interval_minutes)

    # 1. Check, alert, roll back on a rollback rule's breach; until the window ends
    while champ is not None and champ.version == version and watching(cfg, champ):
        started = datetime.now(UTC)
        outcomes = raise_alerts(cfg, standing_checks(cfg, champ), actor)
        checks.append({"at": started.isoformat(), "alerts": [o.to_dict() for o in outcomes]})
        breaches = rollback_breaches(cfg, outcomes)
        if breaches:
            result = watch_rollback(cfg, version, breaches, actor)
            return {
                "model": model,
                "version": version,
                "rolled_back_to": result.version if result else None,
                "checks": checks,
            }
        time.sleep(max(0.0, (started + interval - datetime.now(UTC)).total_seconds()))
        champ = current_champion(cfg)
    run_logger().info("%s: watch of v%s over (%d checks)", model, version, len(checks))
    return {"model": model, "version": version, "rolled_back_to": None, "checks": checks}

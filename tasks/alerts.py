"""Alert tasks: a stage's verdicts handed to the alerting core, logged as a person would read
them. The incidents, audit records and Prefect events are ``mlsteward.alerts.engine``'s."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.alerts.engine import AlertOutcome, observe
from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig
from mlsteward.monitoring.drift_alerts import drift_observations
from mlsteward.monitoring.drift_result import DriftResult
from tasks.common import run_logger


@task(name="raise-alerts", cache_policy=NO_CACHE)
def raise_alerts(
    cfg: ModelConfig, observations: list[Observation], actor: str
) -> list[AlertOutcome]:
    """Each verdict moves its incident; what fired, reminded or resolved is logged."""
    outcomes = observe(cfg, observations, actor=actor)
    _log(cfg, outcomes)
    return outcomes


@task(name="drift-alerts", cache_policy=NO_CACHE)
def raise_drift_alerts(
    cfg: ModelConfig, result: DriftResult, version: str | None, actor: str
) -> list[dict]:
    """The drift run's measurements against the standing rules (drift, PSI, output, quality)."""
    outcomes = observe(cfg, drift_observations(cfg, result, version), actor=actor)
    _log(cfg, outcomes)
    return [o.to_dict() for o in outcomes]


def _log(cfg: ModelConfig, outcomes: list[AlertOutcome]) -> None:
    logger = run_logger()
    for o in outcomes:
        if o.transition is not None and o.transition.value in ("fired", "reminded", "resolved"):
            logger.warning(
                "alert %s: %s %s %s: %s",
                o.transition.value,
                cfg.name,
                o.observation.rule,
                o.observation.subject,
                o.observation.summary,
            )
    firing = sum(1 for o in outcomes if o.breached and o.transition is not None)
    logger.info("%s: %d rule(s) checked, %d breached", cfg.name, len(outcomes), firing)

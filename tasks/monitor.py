"""Standing-rule tasks: the checks a monitor or watch run makes, each around one core
function, and the watch's automatic rollback through governance."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.alerts.engine import announce_once
from mlsteward.alerts.observation import Observation
from mlsteward.alerts.state import AlertState
from mlsteward.audit import audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.config.settings import serving_url
from mlsteward.errors import MlstewardError
from mlsteward.governance import promotion as governance
from mlsteward.governance.promotion import PromotionResult
from mlsteward.monitoring.run_success import run_success
from mlsteward.monitoring.version_quality import version_quality
from mlsteward.rollout.service import ServiceUnavailable
from mlsteward.rollout.slo import serving_observations
from mlsteward.rollout.watch import ChampionNow, champion_now, rollback_reason
from tasks.common import run_logger
from tasks.production_checks import attribution_reference_task, check_attribution_task


@task(name="current-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def current_champion(cfg: ModelConfig) -> ChampionNow | None:
    champ = champion_now(cfg, audit_store())
    if champ is None:
        run_logger().warning("%s has no champion: nothing to monitor", cfg.name)
    return champ


@task(name="serving-checks", cache_policy=NO_CACHE)
def serving_checks(cfg: ModelConfig, version: str) -> list[Observation]:
    """Error rate and p99 of the champion since the last run; none while the service is
    down (its own health checks and the Prometheus rules cover an outage)."""
    try:
        with AlertState() as state:
            return serving_observations(cfg, version, url=serving_url(), state=state)
    except ServiceUnavailable as exc:
        run_logger().warning("%s: serving rules not checked: %s", cfg.name, exc)
        return []


@task(name="run-success-check", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def run_success_check(cfg: ModelConfig) -> list[Observation]:
    return [run_success(cfg)]


@task(name="quality-since-promotion", cache_policy=NO_CACHE)
def quality_since_promotion(cfg: ModelConfig, champ: ChampionNow) -> list[Observation]:
    return [
        version_quality(
            cfg,
            champ.version,
            since=champ.since,
            promoted_value=champ.promoted_value,
            threshold=champ.threshold,
        )
    ]


@task(name="watch-rollback", cache_policy=NO_CACHE)
def watch_rollback(
    cfg: ModelConfig, version: str, breaches: list[Observation], actor: str
) -> PromotionResult | None:
    """Back to the previous champion while ``version`` is still the champion; a refusal (no
    earlier champion, a later decision) is logged, not raised: the alert already went out."""
    reason = rollback_reason(version, breaches)
    try:
        result = governance.rollback(cfg, reason=reason, actor=actor, only_from=version)
    except MlstewardError as exc:
        run_logger().warning("%s: no automatic rollback of v%s: %s", cfg.name, version, exc)
        return None
    run_logger().warning(
        "%s rolled back: v%s -> v%s (%s)", cfg.name, version, result.version, reason
    )
    announce_once(
        cfg,
        Observation(
            rule=breaches[0].rule,
            breached=True,
            subject="rollback",
            severity="critical",
            summary=f"v{version} rolled back to v{result.version} ({reason})",
            version=version,
            details={"to": result.version, "audit_seq": result.audit_seq},
        ),
        actor=actor,
    )
    return result


@task(name="attribution-checks", cache_policy=NO_CACHE)
def attribution_checks(cfg: ModelConfig, champ: ChampionNow, actor: str) -> list[Observation]:
    """Attribution drift of the champion; none when it has no reference to compare with (a
    version registered without a SHAP sample or a holdout), which is said, not raised."""
    try:
        champion = governance.load_version(cfg.name, champ.version, actor=actor)
        reference = attribution_reference_task(cfg, champion)
    except MlstewardError as exc:
        run_logger().warning("%s: attribution drift not checked: %s", cfg.name, exc)
        return []
    return check_attribution_task(cfg, reference).observations(cfg, champ.version)

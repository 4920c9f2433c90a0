"""Monitoring task: training-serving skew of the served features against the offline store."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.config.models import ModelConfig
from mlsteward.monitoring import skew
from mlsteward.monitoring.skew import SkewResult
from tasks.common import run_logger


@task(name="check-skew", cache_policy=NO_CACHE)
def check_skew(
    cfg: ModelConfig,
    now: datetime | None = None,
    since: datetime | None = None,
    max_rows: int | None = None,
) -> SkewResult:
    """The newest served rows of the window against Feast's offline store at their serve time
    (:func:`mlsteward.monitoring.skew.check_skew`); the caller turns the result into alerts
    with ``result.observations(cfg, version)``.

    No retries: the next scheduled check reads the same window again.
    """
    result = skew.check_skew(cfg, now=now, since=since, max_rows=max_rows)
    log = run_logger()
    log.info(
        "skew: %s (%d sent by clients, %d batch-scored, not compared)",
        result.scope(),
        result.excluded["request"],
        result.excluded["batch"],
    )
    if result.rows_without_offline:
        log.warning(
            "skew: %d checked row(s) have no offline value for any feature at their serve time",
            result.rows_without_offline,
        )
    if result.not_logged:
        log.warning("skew: feature(s) %s are in no logged batch", ", ".join(result.not_logged))
    if result.skewed:
        log.warning(
            "skew: %d feature(s) above the %.2f%% limit: %s",
            len(result.skewed),
            100 * result.max_mismatch_rate,
            "; ".join(_line(result, name) for name in result.skewed),
        )
    if result.rows_checked and not result.skewed:
        log.info("skew: every feature agrees with the offline store within the limit")
    return result


def _line(result: SkewResult, name: str) -> str:
    f = result.features[name]
    return (
        f"{name} {100 * (f.mismatch_rate or 0.0):.2f}% of {f.rows:,} rows "
        f"({f.differing:,} differ, {f.missing_offline:,} no offline value)"
    )

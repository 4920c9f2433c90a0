"""One process report, from the records to the verdicts: the history read once, each scope's
metrics, and the review. What the command line, the scheduled review, the API and the console
call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlsteward.audit import AuditStore
from mlsteward.config.models import ModelConfig, get_model_config, load_all_model_configs
from mlsteward.errors import MlstewardError
from mlsteward.process.history import read_history, utc
from mlsteward.process.metrics import process_metrics
from mlsteward.process.review import ProcessReport, review

DEFAULT_DAYS = 90
"""The period a report covers by default: a quarter, enough weeks for a p-chart's baseline."""


def parse_when(text: str | None, option: str) -> datetime | None:
    """An ISO date or time from a person (``2026-11-01``, ``2026-11-01T08:00``, with or
    without a zone; no zone means UTC)."""
    if text is None:
        return None
    try:
        return utc(datetime.fromisoformat(text.strip()))
    except (ValueError, OverflowError):  # not a time, or one at the calendar's edge
        raise MlstewardError(
            f"{option} {text[:64]!r} is not an ISO-8601 date or time between the years 1 and "
            "9999 (e.g. 2026-11-01 or 2026-11-01T08:00Z)"
        ) from None


def model_configs(model: str | None) -> dict[str, ModelConfig]:
    """The model asked for (refused clearly when it has no config), or every model."""
    if model is not None:
        return {model: get_model_config(model)}
    return dict(sorted(load_all_model_configs().items()))


def build_report(
    model: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    audit: AuditStore | None = None,
) -> ProcessReport:
    """The report of ``model`` (and, for every model, ``all`` of them together) over
    ``since``..``until`` (default: the last ``DEFAULT_DAYS`` days)."""
    now = now or datetime.now(UTC)
    until = until or now
    try:
        since = since or until - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        raise MlstewardError(
            f"until ({until:%Y-%m-%d}) leaves no {DEFAULT_DAYS} days before it for the default "
            "since: give --since"
        ) from None
    if since >= until:
        raise MlstewardError(
            f"since ({since:%Y-%m-%d %H:%M}) must be before until ({until:%Y-%m-%d %H:%M})"
        )
    configs = model_configs(model)
    subgroup = next(iter(configs.values())).process.subgroup if configs else "week"
    history = read_history(since=since, until=until, store=audit, model=model)
    metrics = process_metrics(history, list(configs), since=since, until=until, subgroup=subgroup)
    if model is not None:
        metrics = {model: metrics[model]}
    return review(metrics, configs, since=since, until=until, now=now, notes=history.notes)

"""The serving rules between two monitor runs: the champion's error rate and p99 latency,
read from the prediction service's Prometheus metrics.

Each monitor run scrapes ``/metrics`` and keeps the model's part of it in the alert state; the
next run's window is the difference of the two scrapes (``guardrails.arm_window``: counter
resets after a restart handled as Prometheus does). The first run after start-up has no window
and judges nothing.

The latency baseline is "recorded at promotion": the p99 the previous champion served at in
the last window it was champion. A version that became champion with no earlier p99 known takes
its own first window as its baseline (a fresh start has nothing else to compare with). It is
kept per version, so a rollback finds the old baseline again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlsteward.alerts.observation import Observation
from mlsteward.alerts.state import AlertState
from mlsteward.config.models import ModelConfig
from mlsteward.rollout.guardrails import arm_window, parse_metrics
from mlsteward.rollout.service import scrape

CHAMPION = "champion"


def _model_lines(text: str, model: str) -> str:
    """The exposition text of one model (and the HELP/TYPE lines), to keep between runs."""
    tag = f'model="{model}"'
    return (
        "\n".join(line for line in text.splitlines() if line.startswith("#") or tag in line) + "\n"
    )


def serving_observations(
    cfg: ModelConfig,
    version: str,
    *,
    url: str,
    state: AlertState,
    now: datetime | None = None,
) -> list[Observation]:
    """Error rate and p99 latency of the champion since the last run (None: no verdict)."""
    return judge_scrape(cfg, version, scrape(url), state=state, now=now)


def judge_scrape(
    cfg: ModelConfig,
    version: str,
    exposition: str,
    *,
    state: AlertState,
    now: datetime | None = None,
) -> list[Observation]:
    """:func:`serving_observations` on a scrape already made (its Prometheus text)."""
    now = now or datetime.now(UTC)
    text = _model_lines(exposition, cfg.name)
    previous = state.get(cfg.name, "serving_scrape")
    state.put(cfg.name, "serving_scrape", {"text": text, "at": now.isoformat()})
    if previous is None:
        note = "first scrape of the prediction service: the next run has a window to judge"
        return [
            Observation(rule="error_rate", breached=None, summary=note, version=version),
            Observation(rule="latency_p99", breached=None, summary=note, version=version),
        ]
    window = arm_window(
        parse_metrics(previous["text"], cfg.name), parse_metrics(text, cfg.name),
        cfg.name, CHAMPION, version,
    )  # fmt: skip
    since = previous["at"]
    return [
        _error_rate(cfg, version, window.errors, window.predictions, since),
        _latency(cfg, version, window.quantile(0.99), window.observations, state, since),
    ]


def _error_rate(
    cfg: ModelConfig, version: str, errors: int, predictions: int, since: str
) -> Observation:
    rule = cfg.alerts.rules.error_rate
    attempted = errors + predictions
    rate = errors / attempted if attempted else 0.0
    judged = attempted >= rule.min_requests
    return Observation(
        rule="error_rate",
        breached=(rate > rule.max) if judged else None,
        summary=f"v{version} failed {errors:,} of {attempted:,} rows since {since} "
        f"({rate:.1%}; alert above {rule.max:.0%})",
        value=rate,
        limit=rule.max,
        version=version,
        rollback=judged and rate > rule.rollback_above,
        details={"errors": errors, "attempted": attempted, "since": since},
    )


def _latency(
    cfg: ModelConfig,
    version: str,
    p99: float | None,
    observed: int,
    state: AlertState,
    since: str,
) -> Observation:
    rule = cfg.alerts.rules.latency_p99
    baseline = _baseline(cfg.name, version, p99 if observed >= rule.min_requests else None, state)
    if p99 is None or observed < rule.min_requests or baseline is None:
        return Observation(
            rule="latency_p99",
            breached=None,
            summary=f"v{version}: {observed:,} requests since {since}, too few to judge p99",
            version=version,
        )
    limit = max(baseline * rule.max_ratio, baseline + rule.slack_ms / 1000)
    return Observation(
        rule="latency_p99",
        breached=p99 > limit,
        summary=f"v{version} p99 {p99 * 1000:.1f} ms since {since}, baseline "
        f"{baseline * 1000:.1f} ms (alert above {rule.max_ratio:g}x)",
        value=p99,
        limit=limit,
        version=version,
        details={"baseline": baseline, "requests": observed, "since": since},
    )


def _baseline(model: str, version: str, p99: float | None, state: AlertState) -> float | None:
    """The version's baseline, recorded the first time it is needed (see the module doc)."""
    key = f"latency_baseline:{version}"
    known: Any = state.get(model, key)
    last: Any = state.get(model, "last_p99")
    if p99 is not None:
        state.put(model, "last_p99", {"version": version, "p99": p99})
    if known is not None:
        return float(known)
    if last is not None and last["version"] != version:
        baseline = float(last["p99"])  # the previous champion's last window
    elif p99 is not None:
        baseline = p99  # nothing earlier: its own first window
    else:
        return None
    state.put(model, key, baseline)
    return baseline

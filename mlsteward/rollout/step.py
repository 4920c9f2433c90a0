"""One rollout step: gather enough challenger traffic at the canary's fraction, then judge it.

Two scrapes of the service's ``/metrics`` bracket the step; the prediction log holds its rows.
``mlsteward.rollout.guardrails`` does the judging.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.governance.canary import Canary
from mlsteward.monitoring import prediction_log
from mlsteward.rollout.guardrails import (
    CHALLENGER,
    StepVerdict,
    arm_window,
    judge_step,
    parse_metrics,
)
from mlsteward.rollout.service import scrape

# Extra wait after a step's last scrape so the service's log writer has flushed its rows.
FLUSH_MARGIN_SECONDS = 0.5

Logger = logging.Logger | logging.LoggerAdapter[Any]


def challenger_rows(start_text: str, end_text: str, model: str, version: str) -> int:
    """Rows the challenger attempted between two scrapes: answered plus failed."""
    window = arm_window(
        parse_metrics(start_text, model), parse_metrics(end_text, model), model, CHALLENGER,
        version,
    )  # fmt: skip
    return window.predictions + window.errors


@dataclass
class StepResult:
    """One step: judged (``verdict`` set) or ended for want of traffic."""

    step: int
    fraction: float
    challenger_rows: int
    started_at: str
    ended_at: str
    seconds: float
    verdict: StepVerdict | None = None
    log_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def enough_traffic(self) -> bool:
        return self.verdict is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "fraction": self.fraction,
            "challenger_rows": self.challenger_rows,
            "log_rows": self.log_rows,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seconds": round(self.seconds, 3),
            "verdict": self.verdict.to_dict() if self.verdict else None,
        }


@dataclass
class _Gathered:
    start_text: str
    end_text: str
    rows: int
    started: datetime
    clock: float
    elapsed: float


def _gather(
    cfg: ModelConfig, url: str, canary: Canary, steps: int, log: Logger
) -> tuple[_Gathered, bool]:
    """Scrape until the challenger has ``min_requests`` rows or the step times out;
    (what was gathered, whether it is enough)."""
    rollout = cfg.rollout
    version = canary.challenger_version
    started, clock = datetime.now(UTC), time.monotonic()
    start_text = scrape(url)
    last_logged = clock
    while True:
        time.sleep(rollout.check_interval_seconds)
        end_text = scrape(url)
        rows = challenger_rows(start_text, end_text, cfg.name, version)
        elapsed = time.monotonic() - clock
        gathered = _Gathered(start_text, end_text, rows, started, clock, elapsed)
        if rows >= rollout.min_requests:
            return gathered, True
        progress = (
            canary.step, steps, canary.fraction * 100, version, rows, rollout.min_requests,
            elapsed,
        )  # fmt: skip
        if elapsed >= rollout.step_timeout_seconds:
            log.warning(
                "step %d/%d (%.0f%% on v%s): only %d of %d challenger rows after %.0f s",
                *progress,
            )
            return gathered, False
        if time.monotonic() - last_logged >= max(10.0, rollout.check_interval_seconds):
            last_logged = time.monotonic()
            log.info(
                "step %d/%d (%.0f%% on v%s): %d of %d challenger rows so far (%.0f s)",
                *progress,
            )


def observe_step(
    cfg: ModelConfig, url: str, canary: Canary, champion: str, steps: int, log: Logger
) -> StepResult:
    """Gather ``min_requests`` challenger rows at the canary's fraction, then judge them."""
    model, version = cfg.name, canary.challenger_version
    got, enough = _gather(cfg, url, canary, steps, log)
    if not enough:
        return StepResult(
            canary.step, canary.fraction, got.rows, got.started.isoformat(),
            datetime.now(UTC).isoformat(), got.elapsed,
        )  # fmt: skip
    ended = datetime.now(UTC)
    # The rows scored before the last scrape reach the log within log_flush_seconds.
    time.sleep(cfg.serving.log_flush_seconds + FLUSH_MARGIN_SECONDS)
    frame = prediction_log.read_with_labels(model, since=got.started, until=ended)
    verdict = judge_step(
        got.start_text, got.end_text, model, champion, version, frame, cfg.rollout.guardrails,
        looks=steps, regression=cfg.is_regression,
    )  # fmt: skip
    result = StepResult(
        canary.step, canary.fraction, got.rows, got.started.isoformat(), ended.isoformat(),
        time.monotonic() - got.clock, verdict, log_rows=len(frame),
    )  # fmt: skip
    log.info(
        "step %d/%d (%.0f%% on v%s): %d challenger rows, %d logged rows in %.1f s -> %s\n%s",
        canary.step, steps, canary.fraction * 100, version, got.rows, len(frame), result.seconds,
        "PASSED" if verdict.passed else "BREACH: " + ", ".join(c.name for c in verdict.breaches),
        verdict.summary(),
    )  # fmt: skip
    return result


def breach_details(verdict: StepVerdict) -> list[dict[str, Any]]:
    """The breached checks with their numbers, as the audit trail and the flow return them."""
    out = []
    for c in verdict.breaches:
        d = c.to_dict()
        out.append(
            {"check": c.name, "message": c.message, "observed": d["observed"], "limit": d["limit"]}
        )
    return out

"""Rollout-stage work: checks before a canary opens, talking to the prediction service, judging
each step against the guardrails, and the audit records of it all.

The flow (``flows/rollout.py``) decides the order; everything that touches the service, the
registry's canary tags, the prediction log or the audit trail is here. The service is only
read (``GET /v1/models/{model}``, ``GET /metrics``): it is steered through the registry's
canary tags (``mlsteward.governance.canary``), which it polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.errors import PromotionError
from mlsteward.governance import canary as canary_state
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.governance.canary import Canary
from mlsteward.monitoring import prediction_log
from mlsteward.rollout.guardrails import (
    CHALLENGER,
    StepVerdict,
    arm_window,
    judge_step,
    parse_metrics,
)
from tasks.common import run_logger
from tasks.promotion import audit_event

HTTP_TIMEOUT_SECONDS = 10.0
# Extra wait after a step's last scrape so the service's log writer has flushed its rows.
FLUSH_MARGIN_SECONDS = 0.5


class RolloutRefused(PromotionError):
    """A rollout was not started; the registry and the service were left as they were."""


class ServiceUnavailable(PromotionError):
    """The prediction service did not answer, or does not serve the model."""


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------


def audit(
    action: Action,
    model: str,
    version: str | None,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one rollout record. A plain function, not a task: it also runs while a
    cancelled or failed flow run is being cleaned up, when no task run may start."""
    return audit_event.fn(action, model, version, actor, reason, details)


def refuse(model: str, version: str | None, actor: str, message: str, **details: Any) -> None:
    """Audit a refusal and raise it."""
    audit(Action.ROLLOUT_REFUSED, model, version, actor, message, details or None)
    run_logger().error("rollout refused: %s", message)
    raise RolloutRefused(message)


# --------------------------------------------------------------------------------------------
# The prediction service
# --------------------------------------------------------------------------------------------


def describe_model(url: str, model: str) -> dict[str, Any]:
    """``GET /v1/models/{model}``: what one service replica serves now."""
    try:
        resp = httpx.get(f"{url}/v1/models/{model}", timeout=HTTP_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"prediction service at {url} is unreachable: {exc}") from exc
    if resp.status_code == 404:
        raise ServiceUnavailable(f"prediction service at {url} does not serve {model}")
    if resp.status_code != 200:
        raise ServiceUnavailable(
            f"prediction service at {url} answered {resp.status_code} for {model}: "
            f"{resp.text[:300]}"
        )
    return resp.json()


def scrape(url: str) -> str:
    """``GET /metrics``: the Prometheus exposition text."""
    try:
        resp = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT_SECONDS)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"cannot scrape {url}/metrics: {exc}") from exc
    return resp.text


def shows_canary(
    described: dict[str, Any],
    rollout_id: str,
    version: str,
    fraction: float | None = None,
    step: int | None = None,
) -> bool:
    """Whether a service description shows this rollout with the challenger loaded (and, if
    given, at this fraction and step)."""
    canary = described.get("canary") or {}
    challenger = described.get("challenger") or {}
    if canary.get("rollout_id") != rollout_id or str(challenger.get("version")) != str(version):
        return False
    if str(canary.get("challenger_version")) != str(version):
        return False
    if fraction is not None and abs(float(described.get("fraction", -1)) - fraction) > 1e-9:
        return False
    return step is None or canary.get("step") == step


def wait_for_service(
    url: str,
    model: str,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float,
    interval: float,
) -> tuple[bool, dict[str, Any]]:
    """Poll the service description until ``condition`` holds; (held, last description)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while True:
        try:
            last = describe_model(url, model)
            if condition(last):
                return True, last
        except ServiceUnavailable as exc:  # a restart in between: keep trying until the end
            last = {"errors": [str(exc)]}
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(interval)


def load_timeout(cfg: ModelConfig) -> float:
    """How long the service may take to follow a registry change: three polls plus loading
    (download, SHA-256 check, audit) of a version."""
    return 3 * cfg.serving.poll_seconds + 30


# --------------------------------------------------------------------------------------------
# Before the canary opens
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eligibility:
    """A version that may go on canary, and what it was checked against."""

    info: registry.VersionInfo
    champion: str
    service: dict[str, Any]


@task(name="check-rollout", cache_policy=NO_CACHE)
def check_eligible(
    cfg: ModelConfig,
    version: str | None,
    actor: str,
    url: str,
) -> Eligibility:
    """Every reason not to start, each refused with a clear message and an audit record."""
    model = cfg.name
    target = canary_state.read_target(model)
    if not version:
        if target.challenger is None:
            refuse(
                model,
                None,
                actor,
                f"{model} has no challenger to roll out; train one, or name a version that "
                "passed validation",
            )
        version = str(target.challenger)
    try:
        info = registry.get_version(model, version)
    except Exception as exc:
        refuse(model, version, actor, f"{model} v{version} is not registered: {exc}")
        raise  # unreachable: refuse raises
    if target.champion is None:
        refuse(
            model,
            info.version,
            actor,
            f"{model} has no champion: a canary needs one to compare with and fall back on; "
            f"promote a first version (mlsteward promote {model} {info.version})",
        )
    assert target.champion is not None
    if info.version == target.champion:
        refuse(model, info.version, actor, f"{model} v{info.version} is already the champion")
    if info.validation_status != "passed":
        refuse(
            model,
            info.version,
            actor,
            f"{model} v{info.version} has validation status {info.validation_status or 'none'}; "
            f"only a version that passed every gate goes on canary (mlsteward promote {model} "
            f"{info.version} --revalidate after changing the config or data)",
            validation_status=info.validation_status,
        )
    if governance.needs_validation(info):
        refuse(
            model,
            info.version,
            actor,
            f"{model} v{info.version} was validated against champion "
            f"{info.tags.get('validated_against_champion', 'none')}, but the champion is now "
            f"v{target.champion}; re-run the gates first (mlsteward promote {model} "
            f"{info.version} --revalidate)",
            validated_against=info.tags.get("validated_against_champion"),
            champion=target.champion,
        )
    if target.canary is not None:
        refuse(
            model,
            info.version,
            actor,
            f"{model} already has a canary open (rollout {target.canary.rollout_id}, "
            f"v{target.canary.challenger_version} at {target.canary.fraction:g}); one rollout "
            "at a time",
            open_canary=target.canary.to_dict(),
        )
    try:
        described = describe_model(url, model)
    except ServiceUnavailable as exc:
        refuse(model, info.version, actor, f"{exc}; start it (mlsteward serve) first", url=url)
        raise  # unreachable
    return Eligibility(info=info, champion=target.champion, service=described)


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


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


@task(name="rollout-step", cache_policy=NO_CACHE)
def run_step(
    cfg: ModelConfig,
    url: str,
    canary: Canary,
    champion: str,
    steps: int,
) -> StepResult:
    """Gather ``min_requests`` challenger rows at the canary's fraction, then judge them."""
    log = run_logger()
    rollout = cfg.rollout
    model, version = cfg.name, canary.challenger_version
    started = datetime.now(UTC)
    clock = time.monotonic()
    start_text = scrape(url)
    end_text, rows = start_text, 0
    last_logged = clock
    while True:
        time.sleep(rollout.check_interval_seconds)
        end_text = scrape(url)
        rows = challenger_rows(start_text, end_text, model, version)
        elapsed = time.monotonic() - clock
        if rows >= rollout.min_requests:
            break
        if elapsed >= rollout.step_timeout_seconds:
            log.warning(
                "step %d/%d (%.0f%% on v%s): only %d of %d challenger rows after %.0f s",
                canary.step, steps, canary.fraction * 100, version, rows, rollout.min_requests,
                elapsed,
            )  # fmt: skip
            return StepResult(
                canary.step, canary.fraction, rows, started.isoformat(),
                datetime.now(UTC).isoformat(), elapsed,
            )  # fmt: skip
        if time.monotonic() - last_logged >= max(10.0, rollout.check_interval_seconds):
            last_logged = time.monotonic()
            log.info(
                "step %d/%d (%.0f%% on v%s): %d of %d challenger rows so far (%.0f s)",
                canary.step, steps, canary.fraction * 100, version, rows, rollout.min_requests,
                elapsed,
            )  # fmt: skip
    ended = datetime.now(UTC)
    # The rows scored before the last scrape reach the log within log_flush_seconds.
    time.sleep(cfg.serving.log_flush_seconds + FLUSH_MARGIN_SECONDS)
    frame = prediction_log.read_with_labels(model, since=started, until=ended)
    verdict = judge_step(
        start_text, end_text, model, champion, version, frame, rollout.guardrails, looks=steps
    )
    result = StepResult(
        canary.step, canary.fraction, rows, started.isoformat(), ended.isoformat(),
        time.monotonic() - clock, verdict, log_rows=len(frame),
    )  # fmt: skip
    log.info(
        "step %d/%d (%.0f%% on v%s): %d challenger rows, %d logged rows in %.1f s -> %s\n%s",
        canary.step, steps, canary.fraction * 100, version, rows, len(frame), result.seconds,
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


def open_canary(model: str, version: str, fraction: float) -> Canary:
    """The canary of ``version`` at its first step's fraction (a new rollout id)."""
    return canary_state.open_canary(model, version, fraction, step=1)


def move_canary(model: str, canary: Canary, fraction: float, step: int) -> Canary:
    """The canary at the next step's fraction."""
    return canary_state.set_fraction(model, canary, fraction, step)


def close_if_ours(model: str, rollout_id: str) -> bool:
    """Close the canary if it is still this rollout's (never another rollout's)."""
    current = canary_state.read_target(model).canary
    if current is None or current.rollout_id != rollout_id:
        return False
    canary_state.close_canary(model)
    return True


def roll_back(
    cfg: ModelConfig,
    canary: Canary,
    actor: str,
    reason: str,
    details: dict[str, Any],
) -> None:
    """All traffic back to the champion first, then the version is rejected (audited)."""
    close_if_ours(cfg.name, canary.rollout_id)
    governance.reject(
        cfg,
        canary.challenger_version,
        actor=actor,
        reason=reason,
        action=Action.ROLLOUT_ROLLED_BACK,
        details={"rollout_id": canary.rollout_id, **details},
    )
    run_logger().warning(
        "%s v%s rolled back (rollout %s): %s", cfg.name, canary.challenger_version,
        canary.rollout_id, reason,
    )  # fmt: skip


def config_snapshot(cfg: ModelConfig) -> dict[str, Any]:
    """The settings a rollout ran under, for its start record."""
    return {
        "rollout": cfg.rollout.model_dump(mode="json"),
        "serving": {
            "poll_seconds": cfg.serving.poll_seconds,
            "log_flush_seconds": cfg.serving.log_flush_seconds,
        },
    }


__all__ = [
    "Eligibility",
    "RolloutRefused",
    "ServiceUnavailable",
    "StepResult",
    "audit",
    "breach_details",
    "challenger_rows",
    "check_eligible",
    "close_if_ours",
    "config_snapshot",
    "describe_model",
    "load_timeout",
    "move_canary",
    "open_canary",
    "refuse",
    "roll_back",
    "run_step",
    "scrape",
    "shows_canary",
    "wait_for_service",
]

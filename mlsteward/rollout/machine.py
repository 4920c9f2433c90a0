"""The canary rollout as a state machine: a validated challenger takes a growing share of live
traffic, and goes on only while it keeps the guardrails.

The machine steers the prediction service through the registry's canary tags
(``mlsteward.governance.canary``) and watches it through its own endpoints
(``mlsteward.rollout.service``); each step gathers traffic and is judged
(``mlsteward.rollout.step``). A breach rolls back at once (all traffic to the champion, the
version rejected); a step that gathers too little traffic ends the rollout without a verdict on
the model; after the last step the version is promoted through the same path as any promotion
(the governance policy: gates if stale, then auto or a person's approval).

Whatever happens, the canary is closed when the machine leaves, and every outcome is audited:
``rollout_started``, ``rollout_step_passed``, ``rollout_rolled_back``, ``rollout_aborted`` (too
little traffic, an error, a cancellation), ``rollout_completed``. Refusals before the canary
opens (``rollout_refused``) are ``mlsteward.rollout.eligibility``'s.

The orchestrator supplies two things (``RolloutHooks``): observing a step (a task run of its
own in the rollout flow) and the promotion, which may pause the flow run for a person.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from mlsteward.alerts.engine import announce_once
from mlsteward.alerts.observation import Observation
from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.governance import canary as canary_state
from mlsteward.governance import promotion as governance
from mlsteward.governance.canary import Canary
from mlsteward.governance.candidate import current_report
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.rollout.eligibility import Eligibility, config_snapshot
from mlsteward.rollout.service import load_timeout, shows_canary, wait_for_service
from mlsteward.rollout.step import StepResult, breach_details

Logger = logging.Logger | logging.LoggerAdapter[Any]


class RolloutResult(BaseModel):
    """How a rollout ended, with every step it took."""

    model: str
    version: str
    champion: str
    rollout_id: str
    service_url: str
    decision: str
    """``rolled_back``, ``aborted``, or the promotion's decision after the last step."""
    step: int
    steps: list[dict[str, Any]]
    reason: str | None = None
    service_errors: list[Any] | None = None
    breaches: list[dict[str, Any]] | None = None
    governance: GovernanceOutcome | None = None

    @model_serializer(mode="wrap")
    def _present_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys that do not apply to an ending are absent, not null."""
        data: dict[str, Any] = handler(self)
        optional = ("reason", "service_errors", "breaches", "governance")
        return {k: v for k, v in data.items() if k not in optional or v is not None}


@dataclass(frozen=True)
class RolloutHooks:
    """What belongs to the orchestrator."""

    observe: Callable[[Canary], StepResult]
    """Gather and judge one step at the canary's fraction."""
    promote: Callable[[ValidationReport | None], GovernanceOutcome]
    """The promotion after the last step, given the stored report if still current (None:
    the gates run again)."""
    log: Logger


class RolloutSpec(BaseModel):
    """A rollout run's settings, worked out once at its start."""

    model_config = ConfigDict(frozen=True)

    cfg: ModelConfig
    version: str | None
    """The version asked for (None: the challenger)."""
    actor: str
    service_url: str
    load_timeout: float
    """How long the service may take to follow a registry change."""
    poll_interval: float
    """How often the service's description is read while waiting for it."""

    @classmethod
    def resolve(
        cls, cfg: ModelConfig, version: str | None, *, actor: str, service_url: str
    ) -> RolloutSpec:
        return cls(
            cfg=cfg,
            version=version,
            actor=actor,
            service_url=service_url,
            load_timeout=load_timeout(cfg),
            poll_interval=min(cfg.serving.poll_seconds, 1.0),
        )


@dataclass
class Rollout:
    """One rollout in progress: against what, and how far it got."""

    spec: RolloutSpec
    canary: Canary
    champion: str
    done: list[StepResult] = field(default_factory=list)
    step: int = 0
    """The step in progress, for the abort record."""

    @property
    def cfg(self) -> ModelConfig:
        return self.spec.cfg

    @property
    def actor(self) -> str:
        return self.spec.actor

    @property
    def service_url(self) -> str:
        return self.spec.service_url

    @property
    def timeout(self) -> float:
        return self.spec.load_timeout

    @property
    def interval(self) -> float:
        return self.spec.poll_interval

    @property
    def model(self) -> str:
        return self.cfg.name

    @property
    def version(self) -> str:
        return self.canary.challenger_version

    @property
    def steps(self) -> list[float]:
        return list(self.cfg.rollout.steps)

    def base(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "champion": self.champion,
            "rollout_id": self.canary.rollout_id,
            "service_url": self.service_url,
        }

    def step_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.done]

    def result(self, decision: str, step: int, **ending: Any) -> RolloutResult:
        return RolloutResult(
            **self.base(), decision=decision, step=step, steps=self.step_dicts(), **ending
        )

    def audit(self, action: Action, reason: str, details: dict[str, Any]) -> None:
        """One rollout record; a plain call, so it also works while a cancelled run is being
        cleaned up."""
        with governance.open_audit() as store:
            store.append(
                action,
                model=self.model,
                version=self.version,
                actor=self.actor,
                reason=reason,
                details=details,
            )


def start(spec: RolloutSpec, eligible: Eligibility) -> Rollout:
    """Open the canary of the eligible version at the first step's fraction."""
    cfg = spec.cfg
    version = eligible.info.version
    canary = canary_state.open_canary(cfg.name, version, cfg.rollout.steps[0], step=1)
    return Rollout(spec=spec, canary=canary, champion=eligible.champion)


def drive(run: Rollout, hooks: RolloutHooks) -> RolloutResult:
    """Step through ``rollout.steps`` until a breach, too little traffic, or the promotion."""
    try:
        _announce(run, hooks.log)
        ended = _await_load(run, hooks.log)
        if ended is not None:
            return ended
        for i, fraction in enumerate(run.steps, start=1):
            ended = _run_step(run, hooks, i, fraction)
            if ended is not None:
                return ended
        return _complete(run, hooks)
    except BaseException as exc:  # failures and cancellations alike: never leave it open
        abort(run, hooks.log, exc)
        raise


def _announce(run: Rollout, log: Logger) -> None:
    steps = run.steps
    run.audit(
        Action.ROLLOUT_STARTED,
        f"canary of v{run.version} against champion v{run.champion}: steps "
        f"{', '.join(f'{s:.0%}' for s in steps)}",
        {**run.base(), "config": config_snapshot(run.cfg)},
    )
    log.info(
        "rollout %s: %s v%s against champion v%s, steps %s, via %s",
        run.canary.rollout_id, run.model, run.version, run.champion, steps, run.service_url,
    )  # fmt: skip


def _await_load(run: Rollout, log: Logger) -> RolloutResult | None:
    """The service loads the challenger for this rollout, or the rollout rolls back."""
    loaded, described = wait_for_service(
        run.service_url,
        run.model,
        lambda d: shows_canary(d, run.canary.started_at, run.version),
        run.timeout,
        run.interval,
    )
    if loaded:
        log.info(
            "the service at %s loaded v%s for rollout %s",
            run.service_url, run.version, run.canary.rollout_id,
        )  # fmt: skip
        return None
    errors = described.get("errors", [])
    reason = "service did not load the challenger"
    roll_back(
        run, f"{reason} within {run.timeout:g} s: {'; '.join(errors) or '-'}",
        {"step": 1, "service_errors": errors, "timeout_seconds": run.timeout}, log,
    )  # fmt: skip
    return run.result("rolled_back", 1, reason=reason, service_errors=errors, breaches=[])


def _run_step(run: Rollout, hooks: RolloutHooks, i: int, fraction: float) -> RolloutResult | None:
    """Step ``i``: the service follows the new fraction, then the step is observed and judged;
    None when it passed."""
    run.step = i
    if i > 1:
        run.canary = canary_state.set_fraction(run.model, run.canary, fraction, i)
    follows = functools.partial(
        shows_canary, started_at=run.canary.started_at, version=run.version,
        fraction=fraction, step=i,
    )  # fmt: skip
    live, described = wait_for_service(
        run.service_url, run.model, follows, run.timeout, run.interval
    )
    if not live:
        errors = described.get("errors", [])
        reason = f"service did not follow step {i} ({fraction:.0%}) within {run.timeout:g} s"
        roll_back(
            run, f"{reason}: {'; '.join(errors) or '-'}",
            {"step": i, "fraction": fraction, "service_errors": errors}, hooks.log,
        )  # fmt: skip
        return run.result("rolled_back", i, reason=reason, service_errors=errors, breaches=[])
    hooks.log.info(
        "step %d/%d: %.0f%% of traffic on v%s", i, len(run.steps), fraction * 100, run.version
    )
    result = hooks.observe(run.canary)
    run.done.append(result)
    return _judge(run, hooks.log, i, fraction, result)


def _judge(
    run: Rollout, log: Logger, i: int, fraction: float, result: StepResult
) -> RolloutResult | None:
    """Too little traffic ends the rollout, a breach rolls it back; None when the step passed."""
    steps = len(run.steps)
    if result.verdict is None:
        close_if_ours(run.model, run.canary.rollout_id)
        reason = (
            f"insufficient traffic: {result.challenger_rows} of {run.cfg.rollout.min_requests} "
            f"challenger rows at step {i} ({fraction:.0%}) within "
            f"{run.cfg.rollout.step_timeout_seconds:g} s; the champion stays"
        )
        run.audit(
            Action.ROLLOUT_ABORTED, reason,
            {**run.base(), "step": i, "fraction": fraction, "reason": "insufficient_traffic",
             "steps": run.step_dicts()},
        )  # fmt: skip
        log.warning("rollout %s ended: %s", run.canary.rollout_id, reason)
        return run.result("aborted", i, reason=reason)
    verdict = result.verdict
    if not verdict.passed:
        breaches = breach_details(verdict)
        reason = f"step {i}/{steps} ({fraction:.0%}): " + "; ".join(
            f"{b['check']}: {b['message']}" for b in breaches
        )
        roll_back(
            run, reason[:2000],
            {"step": i, "fraction": fraction, "breaches": breaches,
             "step_result": result.to_dict()},
            log,
        )  # fmt: skip
        return run.result("rolled_back", i, reason=reason, breaches=breaches)
    run.audit(
        Action.ROLLOUT_STEP_PASSED,
        f"step {i}/{steps} ({fraction:.0%}) passed on {result.challenger_rows} challenger rows",
        {**run.base(), **result.to_dict()},
    )
    return None


def _complete(run: Rollout, hooks: RolloutHooks) -> RolloutResult:
    """Every step passed: promote the way any promotion goes (gates if stale, then policy)."""
    steps = len(run.steps)
    report = current_report(run.model, run.version)
    how = "stored validation report" if report is not None else "re-running the gates"
    if report is None:
        how += ": champion changed"
    hooks.log.info("all %d steps passed; promoting v%s (%s)", steps, run.version, how)
    outcome = hooks.promote(report)
    close_if_ours(run.model, run.canary.rollout_id)
    decision = outcome.decision
    run.audit(
        Action.ROLLOUT_COMPLETED,
        f"all {steps} steps passed; promotion decision: {decision}",
        {**run.base(), "decision": decision, "governance": outcome.model_dump(),
         "steps": run.step_dicts()},
    )  # fmt: skip
    hooks.log.info("rollout %s completed: v%s %s", run.canary.rollout_id, run.version, decision)
    return run.result(decision, steps, governance=outcome)


def close_if_ours(model: str, rollout_id: str) -> bool:
    """Close the canary if it is still this rollout's (never another rollout's)."""
    current = canary_state.read_target(model).canary
    if current is None or current.rollout_id != rollout_id:
        return False
    canary_state.close_canary(model)
    return True


def roll_back(run: Rollout, reason: str, details: dict[str, Any], log: Logger) -> None:
    """All traffic back to the champion first, then the version is rejected (audited)."""
    close_if_ours(run.model, run.canary.rollout_id)
    governance.reject(
        run.cfg,
        run.version,
        actor=run.actor,
        reason=reason,
        action=Action.ROLLOUT_ROLLED_BACK,
        details={"rollout_id": run.canary.rollout_id, **details},
    )
    log.warning(
        "%s v%s rolled back (rollout %s): %s",
        run.model, run.version, run.canary.rollout_id, reason,
    )  # fmt: skip
    tell_rolled_back(run, reason, details, log)


_GUARDRAIL_RULES = {"quality": "quality_drop"}
"""A guardrail's name as the standing rule it is told under (the others share theirs)."""


def tell_rolled_back(run: Rollout, reason: str, details: dict[str, Any], log: Logger) -> None:
    """A canary rolled back is told, not only audited: one critical alert (rule: the first
    breached guardrail, else ``error_rate`` for a service that never followed), which the
    model's automation notifies. Never raised over the rollback itself."""
    breaches = details.get("breaches") or []
    check = breaches[0]["check"] if breaches else "error_rate"
    first = breaches[0] if breaches else {}
    try:
        announce_once(
            run.cfg,
            Observation(
                rule=_GUARDRAIL_RULES.get(check, check),
                breached=True,
                subject="canary",
                severity="critical",
                summary=f"canary v{run.version} rolled back: {reason}",
                value=_number(first.get("observed"), check),
                limit=_number(first.get("limit"), check),
                version=run.version,
                details={"rollout_id": run.canary.rollout_id, "breaches": breaches},
            ),
            actor=run.actor,
        )
    except Exception as exc:  # the rollback is done and audited; the alert is best effort
        log.warning("rollout %s: the rollback alert failed: %s", run.canary.rollout_id, exc)


def _number(found: Any, key: str) -> float | None:
    """A guardrail's observed value or limit as one number (they are dicts of numbers)."""
    if isinstance(found, dict):
        found = found.get(key, next(iter(found.values()), None)) if found else None
    return float(found) if isinstance(found, int | float) else None


def abort(run: Rollout, log: Logger, exc: BaseException) -> None:
    """Close the canary and audit the abort; a failure here is logged, never raised over the
    error that ended the rollout."""
    closed, problem = False, None
    try:
        closed = close_if_ours(run.model, run.canary.rollout_id)
    except Exception as close_exc:
        problem = f"closing the canary failed: {close_exc}"
        log.critical(
            "rollout %s: %s; close it by hand (delete the rollout.* tags of %s)",
            run.canary.rollout_id, problem, run.model,
        )  # fmt: skip
    try:
        run.audit(
            Action.ROLLOUT_ABORTED,
            f"rollout ended by {type(exc).__name__}: {exc}"[:2000],
            {**run.base(), "error": type(exc).__name__, "step": run.step,
             "canary_closed": closed, "cleanup_problem": problem, "steps": run.step_dicts()},
        )  # fmt: skip
    except Exception as audit_exc:
        log.critical("rollout %s: the abort could not be audited: %s", run.canary.rollout_id,
                     audit_exc)  # fmt: skip
    log.error(
        "rollout %s aborted at step %d (%s: %s); canary %s",
        run.canary.rollout_id, run.step, type(exc).__name__, exc,
        "closed" if closed else "was not open any more" if problem is None else "NOT closed",
    )  # fmt: skip

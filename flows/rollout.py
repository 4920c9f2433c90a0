"""The canary rollout flow: a validated challenger takes a growing share of live traffic, and
goes on only while it keeps the guardrails.

The flow steers the prediction service through the registry's canary tags
(``mlsteward.governance.canary``) and watches it through its own endpoints: ``GET
/v1/models/{model}``
says what a replica routes now, two ``/metrics`` scrapes bracket each step, and the prediction
log holds the step's rows. ``mlsteward.rollout.guardrails`` judges each step. A breach rolls back at
once (all traffic to the champion, the version rejected); a step that gathers too little
traffic ends the rollout without a verdict on the model; after the last step the version is
promoted through the same path as any promotion (``govern``: gates if stale, then the
promotion policy, auto or a person's approval).

Whatever happens, the canary is closed when the flow leaves, and every outcome is audited:
``rollout_refused``, ``rollout_started``, ``rollout_step_passed``, ``rollout_rolled_back``,
``rollout_aborted`` (too little traffic, an error, a cancellation), ``rollout_completed``.
"""

from __future__ import annotations

import functools
from typing import Any

from prefect import flow

from flows.governance import govern, run_actor
from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.settings import serving_url
from mlsteward.governance.canary import Canary
from tasks.common import run_logger
from tasks.promotion import current_report
from tasks.rollout import (
    StepResult,
    audit,
    breach_details,
    check_eligible,
    close_if_ours,
    config_snapshot,
    load_timeout,
    move_canary,
    open_canary,
    roll_back,
    run_step,
    shows_canary,
    wait_for_service,
)


@flow(name="rollout-model", log_prints=True)
def rollout_flow(
    model: str = "heart_disease",
    version: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Canary-release VERSION of MODEL: step through rollout.steps of live traffic, judge each
    step against the guardrails, roll back on a breach, promote after the last step.

    Args:
        model: name of a model config in config/models.
        version: registered version that passed validation (default: the challenger).
        requested_by: who asked (recorded as the actor); default: this flow run.
    """
    cfg = get_model_config(model)
    actor = requested_by or run_actor()
    url = serving_url()
    eligible = check_eligible(cfg, version, actor, url)
    version = eligible.info.version
    steps = cfg.rollout.steps
    log = run_logger()

    canary = open_canary(cfg.name, version, steps[0])
    base: dict[str, Any] = {
        "model": cfg.name,
        "version": version,
        "champion": eligible.champion,
        "rollout_id": canary.rollout_id,
        "service_url": url,
    }
    done: list[StepResult] = []
    at = {"step": 0}  # the step in progress, for the abort record
    try:
        audit(
            Action.ROLLOUT_STARTED,
            cfg.name,
            version,
            actor,
            f"canary of v{version} against champion v{eligible.champion}: steps "
            f"{', '.join(f'{s:.0%}' for s in steps)}",
            {**base, "config": config_snapshot(cfg)},
        )
        log.info(
            "rollout %s: %s v%s against champion v%s, steps %s, via %s",
            canary.rollout_id, cfg.name, version, eligible.champion, steps, url,
        )  # fmt: skip
        return _drive(cfg, canary, eligible.champion, actor, url, base, done, at)
    except BaseException as exc:  # failures and cancellations alike: never leave it open
        _clean_up(cfg, canary, actor, base, done, at["step"], exc)
        raise


def _clean_up(
    cfg: ModelConfig,
    canary: Canary,
    actor: str,
    base: dict[str, Any],
    done: list[StepResult],
    step: int,
    exc: BaseException,
) -> None:
    """Close the canary and audit the abort; a failure here is logged, never raised over the
    error that ended the rollout."""
    log = run_logger()
    closed, problem = False, None
    try:
        closed = close_if_ours(cfg.name, canary.rollout_id)
    except Exception as close_exc:
        problem = f"closing the canary failed: {close_exc}"
        log.critical(
            "rollout %s: %s; close it by hand (delete the rollout.* tags of %s)",
            canary.rollout_id, problem, cfg.name,
        )  # fmt: skip
    try:
        audit(
            Action.ROLLOUT_ABORTED,
            cfg.name,
            canary.challenger_version,
            actor,
            f"rollout ended by {type(exc).__name__}: {exc}"[:2000],
            {
                **base,
                "error": type(exc).__name__,
                "step": step,
                "canary_closed": closed,
                "cleanup_problem": problem,
                "steps": [s.to_dict() for s in done],
            },
        )
    except Exception as audit_exc:
        log.critical("rollout %s: the abort could not be audited: %s", canary.rollout_id,
                     audit_exc)  # fmt: skip
    log.error(
        "rollout %s aborted at step %d (%s: %s); canary %s",
        canary.rollout_id, step, type(exc).__name__, exc,
        "closed" if closed else "was not open any more" if problem is None else "NOT closed",
    )  # fmt: skip


def _drive(
    cfg: ModelConfig,
    canary: Canary,
    champion: str,
    actor: str,
    url: str,
    base: dict[str, Any],
    done: list[StepResult],
    at: dict[str, int],
) -> dict[str, Any]:
    log = run_logger()
    model, version, steps = cfg.name, canary.challenger_version, cfg.rollout.steps
    timeout = load_timeout(cfg)
    interval = min(cfg.serving.poll_seconds, 1.0)

    loaded, described = wait_for_service(
        url, model, lambda d: shows_canary(d, canary.rollout_id, version), timeout, interval
    )
    if not loaded:
        errors = described.get("errors", [])
        reason = "service did not load the challenger"
        roll_back(
            cfg, canary, actor, f"{reason} within {timeout:g} s: {'; '.join(errors) or '-'}",
            {"step": 1, "service_errors": errors, "timeout_seconds": timeout},
        )  # fmt: skip
        return {
            **base,
            "decision": "rolled_back",
            "step": 1,
            "reason": reason,
            "service_errors": errors,
            "breaches": [],
            "steps": [],
        }
    log.info("the service at %s loaded v%s for rollout %s", url, version, canary.rollout_id)

    for i, fraction in enumerate(steps, start=1):
        at["step"] = i
        if i > 1:
            canary = move_canary(model, canary, fraction, i)
        live, described = wait_for_service(
            url,
            model,
            functools.partial(
                shows_canary,
                rollout_id=canary.rollout_id,
                version=version,
                fraction=fraction,
                step=i,
            ),
            timeout,
            interval,
        )
        if not live:
            errors = described.get("errors", [])
            reason = f"service did not follow step {i} ({fraction:.0%}) within {timeout:g} s"
            roll_back(
                cfg, canary, actor, f"{reason}: {'; '.join(errors) or '-'}",
                {"step": i, "fraction": fraction, "service_errors": errors},
            )  # fmt: skip
            return {
                **base,
                "decision": "rolled_back",
                "step": i,
                "reason": reason,
                "service_errors": errors,
                "breaches": [],
                "steps": [s.to_dict() for s in done],
            }
        log.info("step %d/%d: %.0f%% of traffic on v%s", i, len(steps), fraction * 100, version)
        result = run_step(cfg, url, canary, champion, len(steps))
        done.append(result)
        if result.verdict is None:
            close_if_ours(model, canary.rollout_id)
            reason = (
                f"insufficient traffic: {result.challenger_rows} of {cfg.rollout.min_requests} "
                f"challenger rows at step {i} ({fraction:.0%}) within "
                f"{cfg.rollout.step_timeout_seconds:g} s; the champion stays"
            )
            audit(
                Action.ROLLOUT_ABORTED, model, version, actor, reason,
                {**base, "step": i, "fraction": fraction, "reason": "insufficient_traffic",
                 "steps": [s.to_dict() for s in done]},
            )  # fmt: skip
            log.warning("rollout %s ended: %s", canary.rollout_id, reason)
            return {
                **base,
                "decision": "aborted",
                "step": i,
                "reason": reason,
                "steps": [s.to_dict() for s in done],
            }
        verdict = result.verdict
        if not verdict.passed:
            breaches = breach_details(verdict)
            reason = f"step {i}/{len(steps)} ({fraction:.0%}): " + "; ".join(
                f"{b['check']}: {b['message']}" for b in breaches
            )
            roll_back(
                cfg, canary, actor, reason[:2000],
                {"step": i, "fraction": fraction, "breaches": breaches,
                 "step_result": result.to_dict()},
            )  # fmt: skip
            return {
                **base,
                "decision": "rolled_back",
                "step": i,
                "reason": reason,
                "breaches": breaches,
                "steps": [s.to_dict() for s in done],
            }
        audit(
            Action.ROLLOUT_STEP_PASSED, model, version, actor,
            f"step {i}/{len(steps)} ({fraction:.0%}) passed on {result.challenger_rows} "
            "challenger rows",
            {**base, **result.to_dict()},
        )  # fmt: skip

    # Every step passed: promote the way any promotion goes (gates if stale, then the policy).
    report = current_report(model, version)
    how = "stored validation report" if report is not None else "re-running the gates"
    if report is None:
        how += ": champion changed"
    log.info("all %d steps passed; promoting v%s (%s)", len(steps), version, how)
    outcome = govern(cfg, version, actor=actor, report=report)
    close_if_ours(model, canary.rollout_id)
    decision = outcome["decision"]
    audit(
        Action.ROLLOUT_COMPLETED, model, version, actor,
        f"all {len(steps)} steps passed; promotion decision: {decision}",
        {**base, "decision": decision, "governance": outcome,
         "steps": [s.to_dict() for s in done]},
    )  # fmt: skip
    log.info("rollout %s completed: v%s %s", canary.rollout_id, version, decision)
    return {
        **base,
        "decision": decision,
        "step": len(steps),
        "governance": outcome,
        "steps": [s.to_dict() for s in done],
    }

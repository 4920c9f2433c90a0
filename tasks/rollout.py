"""Rollout-stage tasks: the checks before a canary opens, and each step's observation.

The rollout itself is ``mlsteward.rollout``: eligibility, the service client, a step's
gathering and judging, and the state machine that steps the canary. The tasks here add what
Prefect adds (a task run per check and per step, the run logger) and audit refusals.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.governance.canary import Canary
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.rollout import machine
from mlsteward.rollout.eligibility import Eligibility, RolloutRefused, check_eligibility
from mlsteward.rollout.machine import RolloutHooks, RolloutResult, RolloutSpec
from mlsteward.rollout.step import StepResult, observe_step
from tasks.common import run_logger
from tasks.promotion import audit_event


@task(name="check-rollout", cache_policy=NO_CACHE)
def check_eligible(spec: RolloutSpec) -> Eligibility:
    """Every reason not to start, each refused with a clear message and an audit record."""
    try:
        return check_eligibility(spec.cfg, spec.version, spec.service_url)
    except RolloutRefused as refused:
        audit_event.fn(
            Action.ROLLOUT_REFUSED, spec.cfg.name, refused.version, spec.actor, str(refused),
            refused.details or None,
        )  # fmt: skip
        run_logger().error("rollout refused: %s", refused)
        raise


@task(name="rollout-step", cache_policy=NO_CACHE)
def run_step(
    cfg: ModelConfig,
    url: str,
    canary: Canary,
    champion: str,
    steps: int,
) -> StepResult:
    """Gather ``min_requests`` challenger rows at the canary's fraction, then judge them."""
    return observe_step(cfg, url, canary, champion, steps, run_logger())


def steer_canary(
    spec: RolloutSpec,
    eligible: Eligibility,
    promote: Callable[[ValidationReport | None], GovernanceOutcome],
) -> RolloutResult:
    """Open the canary and step it through ``rollout.steps`` (``mlsteward.rollout.machine``),
    each step a ``rollout-step`` task run; ``promote`` is the calling flow's promotion after the
    last step. A plain function: it starts task runs."""
    run = machine.start(spec, eligible)
    hooks = RolloutHooks(
        observe=lambda canary: run_step(
            spec.cfg, spec.service_url, canary, run.champion, len(run.steps)
        ),
        promote=promote,
        log=run_logger(),
    )
    return machine.drive(run, hooks)

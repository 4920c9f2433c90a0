"""The canary rollout flow: a validated challenger takes a growing share of live traffic, and
goes on only while it keeps the guardrails.

The rollout itself is ``mlsteward.rollout.machine`` (steps, guardrails, roll back, the audit
of every outcome); this flow wires it: the checks before the canary opens, each step as a
``rollout-step`` task run, and the promotion after the last step through the same path as any
promotion (``govern``: gates if stale, then the promotion policy, auto or a person's approval).
"""

from __future__ import annotations

from prefect import flow

from flows.governance import govern
from mlsteward.config.models import get_model_config
from mlsteward.config.settings import serving_url
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.rollout.machine import RolloutResult, RolloutSpec
from tasks.common import run_actor
from tasks.reaper import reap_before_start
from tasks.rollout import check_eligible, steer_canary


@flow(name="rollout-model", log_prints=True)
def rollout_flow(
    model: str = "heart_disease",
    version: str | None = None,
    requested_by: str | None = None,
) -> RolloutResult:
    """Canary-release VERSION of MODEL: step through rollout.steps of live traffic, judge each
    step against the guardrails, roll back on a breach, promote after the last step.

    Args:
        model: name of a model config in config/models.
        version: registered version that passed validation (default: the challenger).
        requested_by: the principal this run acts for (``user:alice``).
    """
    # 0. The run's settings, worked out once (the service, how long it may take to follow)
    actor = run_actor(requested_by)
    spec = RolloutSpec.resolve(
        get_model_config(model), version, actor=actor, service_url=serving_url()
    )

    # 1. Every reason not to start (a dead rollout's canary closed first), refused and audited
    reap_before_start(spec.cfg.name)
    eligible = check_eligible(spec)

    # 2. The canary, step by step; after the last step the version goes through governance
    def promote(report: ValidationReport | None) -> GovernanceOutcome:
        return govern(spec.cfg, eligible.info.version, actor=actor, report=report)

    return steer_canary(spec, eligible, promote)

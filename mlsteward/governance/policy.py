"""The promotion policy: what becomes of a version once its gates have run.

A plain function over typed inputs, so tests drive it without Prefect. What the policy *does*
(promote, reject, ask a person, run the gates again) comes in as ``PolicyActions``: the
governance flow fills them with its tasks and its pause for approval.

* Failed gates: rejected, with every reason. ``promote=False``: a passing version stays the
  challenger.
* ``auto``: promoted. Another run may promote between our gates and our promotion; the
  promotion is then refused as stale (``ChampionChangedError``) and the gates run again against
  the new champion, at most ``STALE_GATE_RETRIES`` times (a model promoted that often needs a
  person, not a loop).
* ``manual``: an approver named in the request, or a person answering the pause form; no
  answer in time counts as a rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from mlsteward.config.models import ModelConfig
from mlsteward.errors import ChampionChangedError
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.promotion import PromotionResult

STALE_GATE_RETRIES = 3
"""Times the gates run again when the champion changed between them and the promotion."""

AUTO_REASON = "policy auto: every gate passed"

Channel = Literal["promote-request", "prefect"]


class Answer(Protocol):
    """A person's answer to a promotion request (the pause form's fields)."""

    @property
    def decision(self) -> str: ...

    @property
    def approver(self) -> str: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class RequestAnswer:
    """The answer carried by a promote request that names its approver."""

    approver: str
    reason: str
    decision: str = "approve"


class Approval(BaseModel):
    """A person's decision as the audit trail and the result record it."""

    approver: str
    reason: str
    decision: str
    channel: Channel
    flow_run_id: str | None = None


class GovernanceOutcome(BaseModel):
    """What was decided about a version and why."""

    model: str
    version: str
    validation_passed: bool
    decision: Literal["promoted", "rejected", "challenger"]
    reasons: list[str] | None = None
    """Set when rejected (every reason) or kept as challenger (none)."""
    promotion: PromotionResult | None = None
    approval: Approval | None = None
    """Set when a person's approval promoted the version."""

    @model_serializer(mode="wrap")
    def _present_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys that do not apply to a decision are absent, not null."""
        data: dict[str, Any] = handler(self)
        optional = ("reasons", "promotion", "approval")
        return {k: v for k, v in data.items() if k not in optional or v is not None}


@dataclass(frozen=True)
class Subject:
    """The version decided on, and whether its gates passed."""

    model: str
    version: str
    validation_passed: bool

    def decided(
        self,
        decision: Literal["promoted", "rejected", "challenger"],
        *,
        reasons: list[str] | None = None,
        promotion: PromotionResult | None = None,
        approval: Approval | None = None,
    ) -> GovernanceOutcome:
        return GovernanceOutcome(
            model=self.model,
            version=self.version,
            validation_passed=self.validation_passed,
            decision=decision,
            reasons=reasons,
            promotion=promotion,
            approval=approval,
        )


@dataclass(frozen=True)
class PolicyActions:
    """What the policy may do to the world; the flow binds each to its task."""

    validate: Callable[[], ValidationReport]
    """Run every gate again (after a stale promotion)."""
    promote: Callable[[str, str, dict[str, Any] | None], PromotionResult]
    """(actor, reason, approval) -> the promotion; raises ChampionChangedError when stale."""
    ask: Callable[[ValidationReport], Answer | None]
    """A person's answer to the request, or None when it timed out."""
    reject: Callable[[Approval], None]
    """A person said no."""
    time_out: Callable[[], None]
    """Nobody answered in time."""
    grant: Callable[[Approval], None]
    """Record a person's yes before the promotion."""
    warn: Callable[[str], None]


def apply_policy(
    cfg: ModelConfig,
    version: str,
    report: ValidationReport,
    actions: PolicyActions,
    *,
    actor: str,
    approver: str | None = None,
    reason: str | None = None,
    promote: bool = True,
    flow_run_id: str | None = None,
) -> GovernanceOutcome:
    """The decision on VERSION given its validation ``report`` and the model's policy."""
    subject = Subject(cfg.name, str(version), report.passed)
    if not report.passed:
        return subject.decided("rejected", reasons=report.reasons())
    if not promote:
        return subject.decided("challenger", reasons=[])
    if cfg.promotion.policy == "auto":
        return promote_while_current(subject, actions, approver or actor, reason or AUTO_REASON)
    answer: Answer | None
    channel: Channel
    if approver:  # named in the promote request itself (CLI or deployment parameters)
        answer, channel = RequestAnswer(approver, reason or ""), "promote-request"
    else:
        answer, channel = actions.ask(report), "prefect"
    return decide_on_answer(subject, actions, answer, channel, flow_run_id)


def promote_while_current(
    subject: Subject, actions: PolicyActions, actor: str, reason: str
) -> GovernanceOutcome:
    """Promote; when refused as stale, run the gates again against the new champion and
    promote only if they still pass (bounded by ``STALE_GATE_RETRIES``)."""
    for attempt in range(1, STALE_GATE_RETRIES + 2):
        try:
            result = actions.promote(actor, reason, None)
            return subject.decided("promoted", promotion=result)
        except ChampionChangedError as exc:
            if attempt > STALE_GATE_RETRIES:
                raise
            actions.warn(f"{exc}; running the gates again")
            report = actions.validate()
            if not report.passed:
                failed = Subject(subject.model, subject.version, validation_passed=False)
                return failed.decided("rejected", reasons=report.reasons())
    raise AssertionError("unreachable: the last attempt returns or raises")


def decide_on_answer(
    subject: Subject,
    actions: PolicyActions,
    answer: Answer | None,
    channel: Channel,
    flow_run_id: str | None,
) -> GovernanceOutcome:
    """A person's answer (or its absence) under the manual policy."""
    if answer is None:
        actions.time_out()
        return subject.decided("rejected", reasons=["approval timed out"])
    approval = Approval(
        approver=answer.approver,
        reason=answer.reason,
        decision=answer.decision,
        channel=channel,
        flow_run_id=flow_run_id,
    )
    if answer.decision == "reject":
        actions.reject(approval)
        return subject.decided("rejected", reasons=[f"rejected by {answer.approver}"])
    actions.grant(approval)
    result = actions.promote(answer.approver, answer.reason, approval.model_dump())
    return subject.decided("promoted", promotion=result, approval=approval)

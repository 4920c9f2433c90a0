"""The promotion policy: what becomes of a version once its gates have run.

A plain function over typed inputs, so tests drive it without Prefect. What the policy *does*
(promote, reject, ask a person, check an answer, run the gates again) comes in as
``PolicyActions``: the governance flow fills them with its tasks and its pause for approval.

* Failed gates: rejected, with every reason. ``promote=False``: a passing version stays the
  challenger.
* ``auto``: promoted. Another run may promote between our gates and our promotion; the
  promotion is then refused as stale (``ChampionChangedError``) and the gates run again against
  the new champion, at most ``STALE_GATE_RETRIES`` times (a model promoted that often needs a
  person, not a loop).
* ``manual``: ``approvals.required`` distinct people approve, none of them the version's
  submitter (four eyes). The run asks through the pause form and asks again after each answer
  until enough approvals are in (approvals given meanwhile through the CLI or the API count
  too): an answer counts only with an approval token for this version (``verify``); one that
  does not is refused, audited, and the form comes back. A person's rejection ends it; no
  answer in time counts as a rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from mlsteward.config.models import ModelConfig
from mlsteward.errors import ChampionChangedError, MlstewardError
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.promotion import PromotionResult

STALE_GATE_RETRIES = 3
"""Times the gates run again when the champion changed between them and the promotion."""

AUTO_REASON = "policy auto: every gate passed"

Channel = Literal["prefect", "request"]
"""Where a decision came from: the pause form (with an approval token), or an approve, reject
or promote request through the CLI or the API."""


class Answer(Protocol):
    """A form answer as it arrived: nothing in it is trusted until its token is redeemed."""

    @property
    def decision(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def approval_token(self) -> str: ...

    @property
    def approver(self) -> str | None: ...


class AnswerRefused(MlstewardError):
    """A form answer that does not count: no valid approval token for this version, a decision
    other than the token's, an approver without the permission, the version's submitter, or
    an approver who approved already."""


class Approval(BaseModel):
    """A person's decision as the audit trail and the result record it."""

    approver: str
    """The principal's identity (``user:alice``), proven by a token or the caller's login."""
    reason: str
    decision: str
    channel: Channel
    flow_run_id: str | None = None
    token_id: str | None = None
    override: bool = False


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
    """Set when a person's approval promoted the version (the one that completed the count)."""
    approvals: list[str] | None = None
    """Under the manual policy: every identity whose approval counted."""

    @model_serializer(mode="wrap")
    def _present_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys that do not apply to a decision are absent, not null."""
        data: dict[str, Any] = handler(self)
        optional = ("reasons", "promotion", "approval", "approvals")
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
        approvals: list[str] | None = None,
    ) -> GovernanceOutcome:
        return GovernanceOutcome(
            model=self.model,
            version=self.version,
            validation_passed=self.validation_passed,
            decision=decision,
            reasons=reasons,
            promotion=promotion,
            approval=approval,
            approvals=approvals,
        )


class Promoter(Protocol):
    """What promoting while the comparison is current needs."""

    @property
    def validate(self) -> Callable[[], ValidationReport]: ...

    @property
    def promote(self) -> Callable[[str, str, dict[str, Any] | None], PromotionResult]: ...

    @property
    def warn(self) -> Callable[[str], None]: ...


@dataclass(frozen=True)
class PolicyActions:
    """What the policy may do to the world; the flow binds each to its task."""

    validate: Callable[[], ValidationReport]
    """Run every gate again (after a stale promotion)."""
    promote: Callable[[str, str, dict[str, Any] | None], PromotionResult]
    """(actor, reason, approval) -> the promotion; raises ChampionChangedError when stale."""
    ask: Callable[[ValidationReport], Answer | None]
    """One pause for a person's answer; None once the approval timeout has passed."""
    verify: Callable[[Answer], Approval]
    """Redeem the answer's approval token and check who it proves; raises AnswerRefused."""
    refuse: Callable[[Answer, str], None]
    """Record an answer that did not count (with the name typed into the form)."""
    reject: Callable[[Approval], None]
    """A person said no."""
    grant: Callable[[Approval], list[str]]
    """Record a person's yes; returns every identity that approved in this round."""
    approvals: Callable[[], list[str]]
    """Identities that approved in this round so far, through any channel."""
    is_champion: Callable[[], bool]
    """Whether the version became champion meanwhile (approved through another channel)."""
    time_out: Callable[[], None]
    """Nobody answered in time."""
    warn: Callable[[str], None]


def apply_policy(
    cfg: ModelConfig,
    version: str,
    report: ValidationReport,
    actions: PolicyActions,
    *,
    actor: str,
    reason: str | None = None,
    promote: bool = True,
) -> GovernanceOutcome:
    """The decision on VERSION given its validation ``report`` and the model's policy."""
    subject = Subject(cfg.name, str(version), report.passed)
    if not report.passed:
        return subject.decided("rejected", reasons=report.reasons())
    if not promote:
        return subject.decided("challenger", reasons=[])
    if cfg.promotion.policy == "auto":
        return promote_while_current(subject, actions, actor, reason or AUTO_REASON)
    return await_approvals(subject, actions, report, actor, cfg.approvals.required)


def promote_while_current(
    subject: Subject,
    actions: Promoter,
    actor: str,
    reason: str,
    approval: dict[str, Any] | None = None,
) -> GovernanceOutcome:
    """Promote; when refused as stale, run the gates again against the new champion and
    promote only if they still pass (bounded by ``STALE_GATE_RETRIES``)."""
    for attempt in range(1, STALE_GATE_RETRIES + 2):
        try:
            result = actions.promote(actor, reason, approval)
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


def await_approvals(
    subject: Subject,
    actions: PolicyActions,
    report: ValidationReport,
    actor: str,
    required: int,
) -> GovernanceOutcome:
    """Ask until ``required`` distinct approvals are in, a person rejects, or time runs out.

    An answer that does not count is recorded and the form comes back; approvals given
    meanwhile through the CLI or the API count as well.
    """
    approvals = actions.approvals()
    last: Approval | None = None
    while len(approvals) < required:
        answer = actions.ask(report)
        if actions.is_champion():
            return subject.decided(
                "promoted", reasons=["promoted meanwhile through approvals given elsewhere"]
            )
        if answer is None:
            actions.time_out()
            return subject.decided("rejected", reasons=["approval timed out"])
        try:
            approval = actions.verify(answer)
        except AnswerRefused as exc:
            actions.refuse(answer, str(exc))
            approvals = actions.approvals()
            continue
        if approval.decision == "reject":
            actions.reject(approval)
            return subject.decided("rejected", reasons=[f"rejected by {approval.approver}"])
        approvals = actions.grant(approval)
        last = approval
    by = last.approver if last is not None else actor
    why = last.reason if last is not None else f"approved by {', '.join(approvals)}"
    details = {**(last.model_dump() if last else {}), "approvers": approvals}
    outcome = promote_while_current(subject, actions, by, why, details)
    if outcome.decision != "promoted":
        return outcome
    return outcome.model_copy(update={"approval": last, "approvals": approvals})

"""The promotion policy as a plain function: every branch of ``apply_policy`` with its actions
recorded, no Prefect and no registry (the integration tests run it through the flows and with
real approval tokens). Here a form answer's "token" is checked by a stand-in for
``four_eyes.redeem_answer``: the loop around it is what is under test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from mlsteward.config.models import ModelConfig
from mlsteward.errors import ChampionChangedError
from mlsteward.governance.gates import GateResult, ValidationReport, Violation
from mlsteward.governance.policy import (
    AUTO_REASON,
    STALE_GATE_RETRIES,
    AnswerRefused,
    Approval,
    PolicyActions,
    apply_policy,
)
from mlsteward.governance.promotion import PromotionResult


def config(policy: str, required: int = 1) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "policy_demo",
            "task": "binary_classification",
            "source": {"path": "x", "entity": "id"},
            "label": "y",
            "features": ["a"],
            "promotion": {"policy": policy},
            "approvals": {"required": required},
        }
    )


class FormAnswer(BaseModel):
    """What a person sent through the form: the token here names who it proves (``tok:bob``)."""

    decision: str = "approve"
    reason: str = "ok"
    approval_token: str = ""
    approver: str | None = None


def report(passed: bool) -> ValidationReport:
    violations = (
        []
        if passed
        else [Violation("metric_thresholds", "roc_auc >= 0.9", "roc_auc", 0.8, 0.9, "too low")]
    )
    gate = GateResult("metric_thresholds", passed, violations, {})
    return ValidationReport(model="policy_demo", version="3", gates=[gate])


@dataclass
class Recorder:
    """Actions that record their calls; ``stale`` promotions are refused first; ``answers``
    come one per pause (None: the time ran out); ``elsewhere`` approvals are already in."""

    stale: int = 0
    answers: list[Any] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    champion_meanwhile: bool = False
    revalidated: list[bool] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)

    def promote(self, actor: str, reason: str, approval: dict[str, Any] | None) -> PromotionResult:
        self.calls.append(("promote", (actor, reason, approval)))
        if self.stale:
            self.stale -= 1
            raise ChampionChangedError("v3 was compared with champion none")
        return PromotionResult(
            model="policy_demo", action="promoted", version="3", previous_champion=None,
            artifact_sha256="ab" * 32, audit_seq=7,
        )  # fmt: skip

    def validate(self) -> ValidationReport:
        passed = self.revalidated.pop(0) if self.revalidated else True
        self.calls.append(("validate", passed))
        return report(passed)

    def ask(self, current: ValidationReport) -> Any:
        self.calls.append(("ask", current.passed))
        return self.answers.pop(0) if self.answers else None

    def verify(self, answer: FormAnswer) -> Approval:
        """A token ``tok:NAME`` proves user:NAME; nothing else proves anybody."""
        if not answer.approval_token.startswith("tok:"):
            raise AnswerRefused(f"no approval token ({answer.approver!r} typed)")
        who = "user:" + answer.approval_token.removeprefix("tok:")
        if who in self.approvals():
            raise AnswerRefused(f"{who} approved already")
        return Approval(
            approver=who, reason=answer.reason, decision=answer.decision, channel="prefect"
        )

    def approvals(self) -> list[str]:
        return [*self.elsewhere, *self.granted]

    def grant(self, approval: Approval) -> list[str]:
        self.calls.append(("grant", approval.approver))
        self.granted.append(approval.approver)
        return self.approvals()

    def actions(self) -> PolicyActions:
        return PolicyActions(
            validate=self.validate,
            promote=self.promote,
            ask=self.ask,
            verify=self.verify,
            refuse=lambda answer, why: self.calls.append(("refuse", why)),
            reject=lambda approval: self.calls.append(("reject", approval)),
            grant=self.grant,
            approvals=self.approvals,
            is_champion=lambda: self.champion_meanwhile,
            time_out=lambda: self.calls.append(("time_out", None)),
            warn=lambda message: self.calls.append(("warn", message)),
        )

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_failed_gates_reject_with_every_reason_and_do_nothing_else() -> None:
    rec = Recorder()
    out = apply_policy(config("auto"), "3", report(False), rec.actions(), actor="ci")
    assert (out.decision, out.validation_passed, out.reasons) == ("rejected", False, ["too low"])
    assert rec.calls == []
    assert set(out.model_dump()) == {"model", "version", "validation_passed", "decision", "reasons"}


def test_no_promotion_keeps_a_passing_version_as_challenger() -> None:
    rec = Recorder()
    out = apply_policy(config("auto"), "3", report(True), rec.actions(), actor="ci", promote=False)
    assert (out.decision, out.reasons) == ("challenger", [])
    assert rec.calls == []


def test_auto_promotes_with_the_policy_reason() -> None:
    rec = Recorder()
    out = apply_policy(config("auto"), "3", report(True), rec.actions(), actor="flow-run:1")
    assert out.decision == "promoted" and out.promotion is not None
    assert rec.calls == [("promote", ("flow-run:1", AUTO_REASON, None))]
    dumped = out.model_dump()
    assert "reasons" not in dumped and "approval" not in dumped
    assert dumped["promotion"]["audit_seq"] == 7


def test_a_stale_promotion_runs_the_gates_again_then_promotes() -> None:
    rec = Recorder(stale=1)
    out = apply_policy(config("auto"), "3", report(True), rec.actions(), actor="ci")
    assert out.decision == "promoted"
    assert rec.names() == ["promote", "warn", "validate", "promote"]
    assert rec.calls[1][1].endswith("; running the gates again")


def test_a_stale_promotion_whose_gates_now_fail_is_rejected() -> None:
    rec = Recorder(stale=1, revalidated=[False])
    out = apply_policy(config("auto"), "3", report(True), rec.actions(), actor="ci")
    assert (out.decision, out.validation_passed, out.reasons) == ("rejected", False, ["too low"])


def test_a_champion_that_keeps_changing_needs_a_person() -> None:
    rec = Recorder(stale=STALE_GATE_RETRIES + 1)
    with pytest.raises(ChampionChangedError):
        apply_policy(config("auto"), "3", report(True), rec.actions(), actor="ci")
    assert rec.names().count("validate") == STALE_GATE_RETRIES
    assert rec.names().count("promote") == STALE_GATE_RETRIES + 1


def test_manual_promotes_on_one_approval_with_a_token() -> None:
    rec = Recorder(answers=[FormAnswer(approval_token="tok:bob", reason="signed off")])
    out = apply_policy(config("manual"), "3", report(True), rec.actions(), actor="flow-run:1")
    assert rec.names() == ["ask", "grant", "promote"]
    actor, reason, approval = rec.calls[2][1]
    assert (actor, reason) == ("user:bob", "signed off")
    assert approval["approvers"] == ["user:bob"] and approval["channel"] == "prefect"
    assert out.decision == "promoted" and out.approvals == ["user:bob"]
    assert out.approval is not None and out.approval.approver == "user:bob"


def test_a_typed_name_without_a_token_is_refused_and_the_form_comes_back() -> None:
    rec = Recorder(
        answers=[
            FormAnswer(approver="dr.lee"),
            FormAnswer(approval_token="tok:bob"),
        ]
    )
    out = apply_policy(config("manual"), "3", report(True), rec.actions(), actor="flow-run:1")
    assert rec.names() == ["ask", "refuse", "ask", "grant", "promote"]
    assert "'dr.lee' typed" in rec.calls[1][1]
    assert out.decision == "promoted" and out.approvals == ["user:bob"]


def test_two_required_approvals_need_two_distinct_people() -> None:
    rec = Recorder(
        answers=[
            FormAnswer(approval_token="tok:bob"),
            FormAnswer(approval_token="tok:bob"),  # the same person again does not count
            FormAnswer(approval_token="tok:carol"),
        ]
    )
    out = apply_policy(config("manual", 2), "3", report(True), rec.actions(), actor="flow-run:1")
    assert rec.names() == ["ask", "grant", "ask", "refuse", "ask", "grant", "promote"]
    assert "approved already" in rec.calls[3][1]
    assert out.decision == "promoted" and out.approvals == ["user:bob", "user:carol"]
    assert rec.calls[-1][1][0] == "user:carol"  # the approval that completed the count


def test_approvals_given_elsewhere_count_and_may_complete_the_request() -> None:
    rec = Recorder(elsewhere=["user:amy"], answers=[FormAnswer(approval_token="tok:bob")])
    out = apply_policy(config("manual", 2), "3", report(True), rec.actions(), actor="flow-run:1")
    assert rec.names() == ["ask", "grant", "promote"]
    assert out.approvals == ["user:amy", "user:bob"]

    enough = Recorder(elsewhere=["user:amy", "user:bob"])
    out = apply_policy(config("manual", 2), "3", report(True), enough.actions(), actor="run")
    assert enough.names() == ["promote"]  # nobody is asked
    assert enough.calls[0][1][0] == "run" and out.decision == "promoted"


def test_manual_asks_a_person_and_follows_a_rejection() -> None:
    rec = Recorder(answers=[FormAnswer(decision="reject", approval_token="tok:ana")])
    out = apply_policy(config("manual", 2), "3", report(True), rec.actions(), actor="ci")
    assert rec.names() == ["ask", "reject"]
    assert rec.calls[1][1].channel == "prefect"
    assert (out.decision, out.reasons) == ("rejected", ["rejected by user:ana"])


def test_manual_without_an_answer_in_time_counts_as_rejected() -> None:
    rec = Recorder(answers=[FormAnswer(approver="eve"), None])
    out = apply_policy(config("manual"), "3", report(True), rec.actions(), actor="ci")
    assert rec.names() == ["ask", "refuse", "ask", "time_out"]
    assert (out.decision, out.reasons) == ("rejected", ["approval timed out"])


def test_a_version_promoted_meanwhile_is_not_rejected_when_the_wait_ends() -> None:
    rec = Recorder(answers=[None], champion_meanwhile=True)
    out = apply_policy(config("manual"), "3", report(True), rec.actions(), actor="ci")
    assert rec.names() == ["ask"]  # no time_out: nothing is rejected
    assert out.decision == "promoted" and out.promotion is None

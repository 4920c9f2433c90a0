"""The promotion policy as a plain function: every branch of ``apply_policy`` with its actions
recorded, no Prefect and no registry (the integration tests run it through the flows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mlsteward.config.models import ModelConfig
from mlsteward.errors import ChampionChangedError
from mlsteward.governance.gates import GateResult, ValidationReport, Violation
from mlsteward.governance.policy import (
    AUTO_REASON,
    STALE_GATE_RETRIES,
    Approval,
    PolicyActions,
    RequestAnswer,
    apply_policy,
)
from mlsteward.governance.promotion import PromotionResult


def config(policy: str) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "policy_demo",
            "task": "binary_classification",
            "source": {"path": "x", "entity": "id"},
            "label": "y",
            "features": ["a"],
            "promotion": {"policy": policy},
        }
    )


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
    """Actions that record their calls; ``stale`` promotions are refused first."""

    stale: int = 0
    answer: Any = None
    revalidated: list[bool] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)

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

    def actions(self) -> PolicyActions:
        return PolicyActions(
            validate=self.validate,
            promote=self.promote,
            ask=lambda current: self.calls.append(("ask", current.passed)) or self.answer,
            reject=lambda approval: self.calls.append(("reject", approval)),
            time_out=lambda: self.calls.append(("time_out", None)),
            grant=lambda approval: self.calls.append(("grant", approval)),
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


def test_manual_with_an_approver_in_the_request_records_and_promotes() -> None:
    rec = Recorder()
    out = apply_policy(
        config("manual"), "3", report(True), rec.actions(),
        actor="ci", approver="bob", reason="signed off", flow_run_id="run-1",
    )  # fmt: skip
    approval = Approval(
        approver="bob", reason="signed off", decision="approve",
        channel="promote-request", flow_run_id="run-1",
    )  # fmt: skip
    assert rec.calls == [
        ("grant", approval),
        ("promote", ("bob", "signed off", approval.model_dump())),
    ]
    assert out.decision == "promoted" and out.approval == approval


def test_manual_asks_a_person_and_follows_a_rejection() -> None:
    rec = Recorder(answer=RequestAnswer("ana", "not yet", decision="reject"))
    out = apply_policy(config("manual"), "3", report(True), rec.actions(), actor="ci")
    assert rec.names() == ["ask", "reject"]
    assert rec.calls[1][1].channel == "prefect"
    assert (out.decision, out.reasons) == ("rejected", ["rejected by ana"])


def test_manual_without_an_answer_in_time_counts_as_rejected() -> None:
    rec = Recorder(answer=None)
    out = apply_policy(config("manual"), "3", report(True), rec.actions(), actor="ci")
    assert rec.names() == ["ask", "time_out"]
    assert (out.decision, out.reasons) == ("rejected", ["approval timed out"])

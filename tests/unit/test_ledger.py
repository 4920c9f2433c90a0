"""What the audit trail says about a version's approvals, read from a real SQLite audit store:
its submitter, the approvals of the current round, and the blocks only an override lifts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsteward.audit import Action, AuditStore, audit_store
from mlsteward.errors import PromotionError
from mlsteward.governance import ledger
from mlsteward.governance.four_eyes import check_four_eyes, four_eyes_refusal
from mlsteward.identity import local_principal

M = "heart_disease"


@pytest.fixture
def audit(mlsteward_home: Path) -> Iterator[AuditStore]:
    store = audit_store()
    yield store
    store.close()


def add(audit: AuditStore, action: Action, version: str, actor: str, **details: object) -> None:
    audit.append(action, model=M, version=version, actor=actor, reason="r", details=details)


@pytest.mark.parametrize(
    ("actor", "identity"),
    [
        ("flow-run:8f1c for user:alice", "user:alice"),
        ("flow-run:8f1c for local:bob", "local:bob"),
        ("flow-run:8f1c for service:ci", "service:ci"),
        ("user:alice", "user:alice"),
        ("flow-run:8f1c", None),
        ("system", None),
        ("dr.lee", None),  # a typed name from before identities proves nobody
        ("", None),
    ],
)
def test_the_principal_an_actor_names(actor: str, identity: str | None) -> None:
    assert ledger.identity_of(actor) == identity


def test_submitter_is_whom_the_registering_run_acted_for(audit: AuditStore) -> None:
    add(audit, Action.VERSION_REGISTERED, "1", "flow-run:aa")
    add(audit, Action.VERSION_REGISTERED, "2", "flow-run:bb for user:tess")
    assert ledger.standing(M, "1", audit).submitter is None
    assert ledger.standing(M, "2", audit).submitter == "user:tess"
    assert ledger.standing(M, "3", audit).submitter is None  # nothing recorded


def test_approvals_count_once_each_and_a_round_ends_with_a_decision(audit: AuditStore) -> None:
    add(audit, Action.VERSION_REGISTERED, "2", "flow-run:bb for user:tess")
    add(audit, Action.APPROVAL_REQUESTED, "2", "flow-run:cc", flow_run_id="cc")
    add(audit, Action.APPROVAL_GRANTED, "2", "user:bob", identity="user:bob")
    add(audit, Action.APPROVAL_GRANTED, "2", "user:bob", identity="user:bob")
    add(audit, Action.APPROVAL_GRANTED, "2", "dr.lee")  # a typed name: counts for nobody
    now = ledger.standing(M, "2", audit)
    assert now.approvals == ["user:bob"] and now.blocked is None
    assert now.request is not None and now.request.flow_run_id == "cc"
    assert now.flow_runs == ["cc"]
    add(audit, Action.APPROVAL_GRANTED, "2", "user:carol", identity="user:carol")
    add(audit, Action.PROMOTED, "2", "user:carol")
    after = ledger.standing(M, "2", audit)
    assert after.approvals == [] and after.request is None  # spent on that promotion


def test_a_rejection_or_a_rollback_blocks_until_an_override(audit: AuditStore) -> None:
    add(audit, Action.APPROVAL_GRANTED, "2", "user:bob", identity="user:bob")
    add(audit, Action.APPROVAL_REJECTED, "2", "user:carol")
    now = ledger.standing(M, "2", audit)
    assert now.blocked is not None and "rejected by user:carol" in now.blocked
    assert now.approvals == []
    add(audit, Action.APPROVAL_GRANTED, "2", "user:amy", identity="user:amy", override=True)
    assert ledger.standing(M, "2", audit).blocked is None
    add(audit, Action.PROMOTED, "2", "user:amy", override=True)
    # a rollback record names the version it restored; the one it left is details.from
    audit.append(
        Action.ROLLBACK, model=M, version="1", actor="user:bob", reason="alerts",
        details={"from": "2", "to": "1"},
    )  # fmt: skip
    rolled = ledger.standing(M, "2", audit)
    assert rolled.blocked is not None and "rolled back from" in rolled.blocked
    assert ledger.standing(M, "1", audit).blocked is None
    # a timeout is nobody's judgement: it ends the round but blocks nothing
    add(audit, Action.APPROVAL_TIMED_OUT, "3", "system")
    assert ledger.standing(M, "3", audit).blocked is None


def test_four_eyes_in_single_user_mode_says_how_to_add_a_second_person() -> None:
    me = local_principal()
    with pytest.raises(PromotionError, match="four eyes") as refused:
        check_four_eyes(me, me.identity, M, "2")
    message = str(refused.value)
    assert "mlsteward users add NAME --role approver" in message
    assert "mlsteward tokens create NAME" in message and "MLSTEWARD_TOKEN=" in message
    assert four_eyes_refusal(me.identity, None, M, "2") == ""  # a run on its own: anyone
    assert four_eyes_refusal("user:bob", "user:tess", M, "2") == ""
    assert "users add" not in four_eyes_refusal("user:tess", "user:tess", M, "2")

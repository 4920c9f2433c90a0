"""The identity store on PostgreSQL (the production profile keeps it beside the audit trail):
the same tokens, revocation and one-use approval tokens as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsteward.audit import audit_store
from mlsteward.config.settings import identity_url
from mlsteward.errors import AuthenticationError
from mlsteward.identity import authenticate, clear_cache, identity_store, local_principal


def test_tokens_and_approval_tokens_on_postgres(
    postgres_database: str, mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", postgres_database)
    assert identity_url() == postgres_database  # beside the audit trail
    clear_cache()
    admin = local_principal()
    try:
        with identity_store() as store:
            bob = store.add_principal("bob", roles=["approver"], by=admin)
            info, token = store.create_token("user:bob", by=admin)
            approval = store.issue_approval_token(
                bob, model="heart_disease", version="2", decision="reject", reason="no"
            )
        assert authenticate(token).actor == "user:bob"
        with identity_store() as store:
            grant = store.redeem_approval_token(
                approval, model="heart_disease", version="2", used_by="flow-run:1"
            )
            assert grant.decision == "reject"
            with pytest.raises(AuthenticationError, match="used already"):
                store.redeem_approval_token(
                    approval, model="heart_disease", version="2", used_by="flow-run:2"
                )
            store.revoke_token(info.token_id, by=admin)
        clear_cache()
        with pytest.raises(AuthenticationError, match="revoked"):
            authenticate(token)
        with audit_store() as audit:
            assert [r.action for r in audit.query()] == [
                "principal_added",
                "token_created",
                "approval_token_issued",
                "token_revoked",
            ]
            assert audit.verify().ok
    finally:
        clear_cache()  # close the cached connection before the database is dropped

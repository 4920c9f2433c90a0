"""Principals, roles, tokens and approval tokens: the permission table row by row, tokens that
are shown once and stored hashed, expiry, revocation, and the CLI that manages them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlsteward.audit import audit_store
from mlsteward.cli.app import app
from mlsteward.errors import AuthenticationError, MlstewardError, PermissionDeniedError
from mlsteward.identity import (
    Permission,
    Principal,
    Role,
    authenticate,
    authorize,
    clear_cache,
    cli_principal,
    identity_store,
    local_principal,
)

P = Permission

# Written out by hand, not derived from PERMISSIONS: a change to the table must change this too.
EXPECTED: dict[Role, set[Permission]] = {
    Role.VIEWER: {P.READ, P.PREDICT},
    Role.TRAINER: {
        P.READ, P.PREDICT, P.INGEST, P.TRAIN, P.SCORE, P.DRIFT, P.ROLLOUT, P.OUTCOMES,
        P.VALIDATE,
    },
    Role.APPROVER: {
        P.READ, P.PREDICT, P.VALIDATE, P.APPROVE, P.REJECT, P.PROMOTE, P.ROLLBACK,
    },
    Role.ADMIN: set(Permission),
    Role.CI: {P.READ, P.PREDICT, P.TRIGGER, P.INGEST, P.TRAIN, P.SCORE, P.DRIFT, P.VALIDATE},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_cache(mlsteward_home: Path) -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def principal(*roles: Role, teams: tuple[str, ...] = ()) -> Principal:
    return Principal("user", "someone", frozenset(roles), frozenset(teams))


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_every_row_of_the_permission_table(role: Role, permission: Permission) -> None:
    who = principal(role)
    if permission in EXPECTED[role]:
        authorize(who, permission)
    else:
        with pytest.raises(PermissionDeniedError) as refused:
            authorize(who, permission, "heart_disease")
        assert refused.value.permission == permission.value
        assert f"needs permission {permission.value!r}" in str(refused.value)
        assert "heart_disease" in str(refused.value)


def test_a_team_member_changes_only_its_teams_models() -> None:
    # heart_disease's config says owner: cardiology-ml
    cardio = principal(Role.APPROVER, teams=("cardiology-ml",))
    other = principal(Role.APPROVER, teams=("oncology-ml",))
    authorize(cardio, P.PROMOTE, "heart_disease")
    with pytest.raises(PermissionDeniedError, match="belongs to team 'cardiology-ml'"):
        authorize(other, P.PROMOTE, "heart_disease")
    authorize(other, P.READ, "heart_disease")  # everyone reads
    authorize(principal(Role.APPROVER), P.PROMOTE, "heart_disease")  # no teams: not limited
    authorize(principal(Role.ADMIN, teams=("oncology-ml",)), P.PROMOTE, "heart_disease")


def test_the_local_operator_is_an_unauthenticated_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLSTEWARD_TOKEN", raising=False)
    me = cli_principal()
    assert me == local_principal()
    assert me.actor.startswith("local:") and not me.authenticated
    assert Role.ADMIN in me.roles
    monkeypatch.setenv("MLSTEWARD_AUTH", "required")
    with pytest.raises(AuthenticationError, match="MLSTEWARD_TOKEN"):
        cli_principal()


def test_tokens_are_shown_once_stored_hashed_and_revocable(mlsteward_home: Path) -> None:
    admin = local_principal()
    with identity_store() as store:
        store.add_principal("alice", roles=["trainer"], by=admin)
        info, token = store.create_token("user:alice", by=admin, description="laptop")
    assert token.startswith(f"msw_{info.token_id}_")
    who = authenticate(token)
    assert (who.actor, who.roles, who.authenticated) == ("user:alice", {Role.TRAINER}, True)
    assert authenticate(f"  {token}\n") == who  # surrounding whitespace from a paste

    db = mlsteward_home / "identity" / "identity.db"
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert token not in dump and token.split("_", 2)[2] not in dump

    with identity_store() as store:
        store.revoke_token(info.token_id, by=admin)
        assert [t.state for t in store.list_tokens("user:alice")] == ["revoked"]
    clear_cache()
    with pytest.raises(AuthenticationError, match="revoked") as refused:
        authenticate(token)
    assert token not in str(refused.value)

    actions = [r.action for r in audit_store().query()]
    assert actions == ["principal_added", "token_created", "token_revoked"]
    assert all(r.actor == admin.actor for r in audit_store().query())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "authentication required"),
        ("Bearer", "not an mlsteward token"),
        ("msw_short_x", "not an mlsteward token"),
        ("msw_0123456789ab_notthesecret", "is not valid"),
    ],
)
def test_bad_tokens_are_refused_without_quoting_them(token: str, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message) as refused:
        authenticate(token)
    if len(token) > 8:
        assert token not in str(refused.value)


def test_an_expired_token_is_refused(mlsteward_home: Path) -> None:
    admin = local_principal()
    with identity_store() as store:
        store.add_principal("ci", roles=["ci"], kind="service", by=admin)
        _, token = store.create_token("service:ci", by=admin, expires_in_days=1)
        assert authenticate(token).actor == "service:ci"
        db = sqlite3.connect(mlsteward_home / "identity" / "identity.db")
        with db:
            db.execute("UPDATE mlsteward_tokens SET expires_at = '2020-01-01T00:00:00+00:00'")
    clear_cache()
    with pytest.raises(AuthenticationError, match="expired"):
        authenticate(token)
    with identity_store() as store, pytest.raises(MlstewardError, match="at most 366"):
        store.create_token("service:ci", by=admin, expires_in_days=1000)


def test_an_approval_token_counts_once_for_its_version_only() -> None:
    admin = local_principal()
    with identity_store() as store:
        bob = store.add_principal("bob", roles=["approver"], by=admin)
        token = store.issue_approval_token(
            bob, model="heart_disease", version="3", decision="approve", reason="looks right"
        )
        with pytest.raises(AuthenticationError, match="issued for heart_disease v3"):
            store.redeem_approval_token(token, model="heart_disease", version="4", used_by="r")
        grant = store.redeem_approval_token(
            token, model="heart_disease", version="3", used_by="flow-run:x"
        )
        assert (grant.identity, grant.decision, grant.reason) == (
            "user:bob",
            "approve",
            "looks right",
        )
        with pytest.raises(AuthenticationError, match="used already"):
            store.redeem_approval_token(token, model="heart_disease", version="3", used_by="r")
        with pytest.raises(AuthenticationError, match="missing or malformed"):
            store.redeem_approval_token("bob", model="heart_disease", version="3", used_by="r")
    issued = audit_store().last(action="approval_token_issued")
    assert issued is not None and issued.actor == "user:bob" and issued.version == "3"
    assert token not in json.dumps(issued.to_dict())


def test_principal_names_and_roles_are_checked() -> None:
    admin = local_principal()
    with identity_store() as store:
        with pytest.raises(MlstewardError, match="unknown role 'boss'"):
            store.add_principal("alice", roles=["boss"], by=admin)
        with pytest.raises(MlstewardError, match="is not valid"):
            store.add_principal("../alice", roles=["viewer"], by=admin)
        store.add_principal("alice", roles=["viewer"], by=admin)
        with pytest.raises(MlstewardError, match="exists already"):
            store.add_principal("alice", roles=["admin"], by=admin)
        changed = store.add_principal("alice", roles=["trainer"], by=admin, replace=True)
        assert changed.roles == {Role.TRAINER}


def test_the_cli_manages_users_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.delenv("MLSTEWARD_TOKEN", raising=False)
    added = runner.invoke(app, ["users", "add", "bob", "--role", "approver"])
    assert added.exit_code == 0, added.output
    created = runner.invoke(app, ["tokens", "create", "bob", "--json"])
    assert created.exit_code == 0, created.output
    token = json.loads(created.stdout)["token"]

    monkeypatch.setenv("MLSTEWARD_TOKEN", token)
    whoami = runner.invoke(app, ["whoami", "--json"])
    assert json.loads(whoami.stdout)["identity"] == "user:bob"
    # an approver may not manage principals: one clear line, exit 1, no traceback
    refused = runner.invoke(app, ["users", "add", "mallory", "--role", "admin"])
    assert refused.exit_code == 1
    assert "user:bob may not manage" in refused.output and "Traceback" not in refused.output

    monkeypatch.delenv("MLSTEWARD_TOKEN")
    listed = runner.invoke(app, ["tokens", "list", "--json"])
    (only,) = json.loads(listed.stdout)["tokens"]
    assert "token" not in only and only["state"] == "active"
    revoked = runner.invoke(app, ["tokens", "revoke", only["token_id"]])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    monkeypatch.setenv("MLSTEWARD_TOKEN", token)
    clear_cache()
    after = runner.invoke(app, ["whoami"])
    assert after.exit_code == 1 and "revoked" in after.output


@pytest.mark.parametrize(
    ("command", "permission"),
    [
        (["ingest", "heart_disease"], "ingest"),
        (["materialize", "heart_disease"], "ingest"),
        (["train", "heart_disease"], "train"),
        (["reproduce", "heart_disease"], "train"),
        (["score", "heart_disease"], "score"),
        (["drift", "heart_disease"], "drift"),
        (["labels", "heart_disease", "outcomes.csv"], "outcomes"),
        (["rollout", "heart_disease", "2"], "rollout"),
    ],
)
def test_a_viewer_may_not_start_what_changes_things(
    command: list[str], permission: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = local_principal()
    with identity_store() as store:
        store.add_principal("vera", roles=["viewer"], by=admin)
        _, token = store.create_token("user:vera", by=admin)
    monkeypatch.setenv("MLSTEWARD_TOKEN", token)
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 1, refused.output
    assert f"user:vera may not {permission} on heart_disease" in refused.output
    assert "Traceback" not in refused.output
    # nothing ran: the only records are the principal's and its token's
    assert {r.action for r in audit_store().query()} == {"principal_added", "token_created"}


def test_a_refused_token_is_refused_again_from_memory(mlsteward_home: Path) -> None:
    """On the prediction path a caller repeating a bad token must not cost a database query
    each time: the refusal is remembered for the cache's few seconds."""
    admin = local_principal()
    with identity_store() as store:
        store.add_principal("eve", roles=["viewer"], by=admin)
        info, token = store.create_token("user:eve", by=admin)
        store.revoke_token(info.token_id, by=admin)
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(token)
    db = sqlite3.connect(mlsteward_home / "identity" / "identity.db")
    with db:  # the store would now accept it
        db.execute("UPDATE mlsteward_tokens SET revoked_at = NULL")
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(token)  # answered from memory
    clear_cache()
    assert authenticate(token).identity == "user:eve"

"""Governance decisions with identities on the real stack (MLflow on SQLite, the SQLite audit
trail and identity store, the session's Prefect server for the pause form): four eyes,
several approvers, approval tokens in the form, and overrides.

One module home: v1 (a weak model, promoted by its run) is the champion; v2, trained by a run
acting for ``user:tess``, passed every gate and waits as the challenger. The tests follow
one story in order: nobody promotes v2 on their own word, two approvers do through the form,
it is rolled back, and only an admin brings it back.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_runs import resume_flow_run
from typer.testing import CliRunner

from flows.governance import promotion_flow
from mlsteward.audit import Action, AuditRecord, audit_store
from mlsteward.cli.app import app
from mlsteward.errors import MlstewardError, PermissionDeniedError, PromotionError
from mlsteward.governance import decisions, registry
from mlsteward.identity import Principal, clear_cache, identity_store, local_principal
from tasks.common import artifact_key
from tests.support.governance import MODEL, WEAK_TUNING, run_in_background, write_config
from tests.support.serving import FAST_TUNING

runner = CliRunner()


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def config_dir(mlsteward_home: Path) -> Path:
    return mlsteward_home.parent / "config"


@pytest.fixture(scope="module")
def people(mlsteward_home: Path) -> dict[str, Principal]:
    """tess trains and approves; bob and carol approve; amy is an admin; vic only reads."""
    roles = {
        "tess": ["trainer", "approver"],
        "bob": ["approver"],
        "carol": ["approver"],
        "amy": ["admin"],
        "vic": ["viewer"],
    }
    with identity_store() as store:
        return {
            name: store.add_principal(name, roles=r, by=local_principal())
            for name, r in roles.items()
        }


@pytest.fixture(scope="module")
def tokens(people: dict[str, Principal]) -> dict[str, str]:
    with identity_store() as store:
        return {
            name: store.create_token(p.identity, by=local_principal())[1]
            for name, p in people.items()
        }


@pytest.fixture(scope="module")
def stack(config_dir: Path, people: dict[str, Principal]) -> dict[str, str]:
    """v1 champion (trained by a run on its own), v2 challenger (trained for user:tess)."""
    from flows.ingestion import ingestion_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = write_dataset(
        generate_cohort(n_rows=3_000, seed=5), config_dir.parent / "cohort.parquet"
    )
    write_config(config_dir, tuning=WEAK_TUNING)
    ingestion_flow(model=MODEL, source=str(cohort))
    first = training_flow(model=MODEL)
    assert first.governance.decision == "promoted", first.governance
    write_config(config_dir, tuning=FAST_TUNING)
    second = training_flow(model=MODEL, promote=False, requested_by=people["tess"].identity)
    assert second.governance.decision == "challenger", second.governance
    return {"champion": first.version, "challenger": second.version}


@pytest.fixture(autouse=True)
def _fresh_tokens(stack: dict[str, str]) -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def policy(config_dir: Path, name: str, required: int = 1) -> None:
    write_config(
        config_dir,
        tuning=FAST_TUNING,
        promotion={"policy": name, "approval_timeout_seconds": 240},
        approvals={"required": required},
    )


def records(action: Action | None = None, after: int = 0) -> list[AuditRecord]:
    with audit_store() as store:
        return [r for r in store.query(model=MODEL, action=action) if r.seq > after]


def head() -> int:
    with audit_store() as store:
        last = store.last()
    return last.seq if last else 0


def champion() -> str | None:
    info = registry.version_by_alias(MODEL, registry.CHAMPION)
    return info.version if info else None


def cli(*args: str, token: str | None = None) -> tuple[int, Any]:
    env = {"MLSTEWARD_TOKEN": token} if token else {}
    result = runner.invoke(app, [*args, "--json"], env=env)
    return result.exit_code, json.loads(result.stdout)


def nobody_signed_as_the_os_user(after: int) -> None:
    """Every record a decision wrote names a principal (or a run acting for one), never the
    account that runs the tests."""
    me = getpass.getuser()
    for rec in records(after=after):
        assert not rec.actor.startswith("local:") and rec.actor != me, rec.to_dict()
        assert rec.actor.startswith(("user:", "flow-run:", "system")), rec.to_dict()


# -- four eyes ---------------------------------------------------------------------------------


def test_the_submitter_is_the_principal_the_training_run_acted_for(
    stack: dict[str, str],
) -> None:
    assert decisions.submitter(MODEL, stack["challenger"]) == "user:tess"
    assert decisions.submitter(MODEL, stack["champion"]) is None  # a run on its own


def test_the_trainer_cannot_approve_their_own_version(
    config_dir: Path, stack: dict[str, str], people: dict[str, Principal], tokens: dict[str, str]
) -> None:
    policy(config_dir, "manual")
    v2, start = stack["challenger"], head()

    with pytest.raises(PromotionError, match="four eyes: user:tess trained or submitted"):
        decisions.approve(people["tess"], MODEL, v2, reason="my own work is fine")
    refused = records(Action.APPROVAL_REFUSED, after=start)
    assert [r.actor for r in refused] == ["user:tess"]
    with pytest.raises(PromotionError, match="four eyes"):
        decisions.approval_token(people["tess"], MODEL, v2, decision="approve", reason="mine")
    code, out = cli("approve", MODEL, v2, "--reason", "mine", token=tokens["tess"])
    assert code == 1 and "four eyes" in out["error"]

    # her promote request is queued for the others; it names who may approve
    asked = decisions.promote(people["tess"], MODEL, v2)
    assert asked.decision == "pending" and asked.approvals == []
    text = " ".join(asked.reasons)
    assert "user:tess trained or submitted" in text
    assert "may approve: user:amy, user:bob, user:carol" in text
    queue = decisions.pending_approvals(MODEL)
    assert [(q["version"], q["requested_by"], q["approvals"]) for q in queue] == [
        (v2, "user:tess", [])
    ]
    code, out = cli("promote", MODEL, v2, token=tokens["tess"])
    assert code == 0 and out["decision"] == "pending"

    # a viewer may not approve at all; a typed name is no longer an option
    with pytest.raises(PermissionDeniedError, match="needs permission 'approve'"):
        decisions.approve(people["vic"], MODEL, v2, reason="why not")
    code, out = cli("promote", MODEL, v2, "--approver", "bob", "--reason", "signed")
    assert code == 1 and "a typed name is not an identity" in out["error"]
    assert "MLSTEWARD_TOKEN" in out["error"]
    assert champion() == stack["champion"]
    nobody_signed_as_the_os_user(start)


# -- the pause form with approval tokens --------------------------------------------------------


def wait_for_pause(box: dict[str, Any], version: str, attempt: int, after: int) -> str:
    """The run's id once it is paused for the ``attempt``-th answer, its form stored."""
    key = artifact_key("approve", MODEL, f"v{version}", str(attempt))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert "error" not in box, box.get("error")
        requested = records(Action.APPROVAL_REQUESTED, after=after)
        if requested:
            run_id = requested[-1].details["flow_run_id"]
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_paused():
                    details = state.state_details
                    if details.pause_key == key:
                        try:  # the form is stored a moment after the state changes
                            client.read_flow_run_input(run_id, details.run_input_keyset["schema"])
                            return run_id
                        except (ObjectNotFound, PrefectHTTPStatusError):
                            pass
        time.sleep(0.3)
    raise AssertionError(f"the run never paused for answer {attempt}")


def test_form_answers_count_only_with_a_token_and_two_approvers_promote(
    config_dir: Path, stack: dict[str, str], people: dict[str, Principal], tokens: dict[str, str]
) -> None:
    policy(config_dir, "manual", required=2)
    v1, v2, start = stack["champion"], stack["challenger"], head()
    thread, box = run_in_background(
        promotion_flow, model=MODEL, version=v2, requested_by="user:tess"
    )
    run_id = wait_for_pause(box, v2, 1, start)

    # what the Prefect UI renders: the token field is described, the typed name optional
    with get_client(sync_client=True) as client:
        keyset = client.read_flow_run(run_id).state.state_details.run_input_keyset
        schema = json.loads(client.read_flow_run_input(run_id, keyset["schema"]))
    assert set(schema["required"]) == {"decision", "reason"}
    assert "/api/v1/models/{m}/versions/{v}/approve" in json.dumps(schema["properties"])

    # a name typed into the form, no token: refused, audited with the name, asked again
    resume_flow_run(
        run_id, run_input={"decision": "approve", "approver": "dr.lee", "reason": "fine"}
    )
    run_id = wait_for_pause(box, v2, 2, start)
    typed = records(Action.APPROVAL_REFUSED, after=start)[-1]
    assert typed.details["typed_name"] == "dr.lee" and not typed.details["token_given"]
    assert typed.actor == f"flow-run:{run_id} for user:tess"
    assert "approval token" in typed.reason

    # a token minted for another version: refused
    other = decisions_token(people["bob"], v1, "approve")
    resume_flow_run(
        run_id, run_input={"decision": "approve", "approval_token": other, "reason": "fine"}
    )
    run_id = wait_for_pause(box, v2, 3, start)
    assert f"issued for {MODEL} v{v1}" in records(Action.APPROVAL_REFUSED, after=start)[-1].reason

    # a token for a rejection sent as an approval: refused, and the token is spent
    flipped = decisions.approval_token(
        people["bob"], MODEL, v2, decision="reject", reason="not this"
    )
    resume_flow_run(
        run_id, run_input={"decision": "approve", "approval_token": flipped, "reason": "x"}
    )
    run_id = wait_for_pause(box, v2, 4, start)
    assert "minted to reject" in records(Action.APPROVAL_REFUSED, after=start)[-1].reason

    # bob's token, pasted into the form: the first of two approvals; the form comes back
    code, out = cli(
        "approve", MODEL, v2, "--reason", "holdout looks right", "--print-token",
        token=tokens["bob"],
    )  # fmt: skip
    assert code == 0 and out["token"].startswith("mswa_")
    resume_flow_run(
        run_id,
        run_input={"decision": "approve", "approval_token": out["token"], "reason": "ok"},
    )
    run_id = wait_for_pause(box, v2, 5, start)
    assert champion() == v1
    queued = decisions.pending_approvals(MODEL)
    assert queued[0]["approvals"] == ["user:bob"] and queued[0]["flow_run_id"] == run_id
    assert queued[0]["approvals_required"] == 2

    # carol answers from a shell: her approval goes to the paused run, which promotes
    code, out = cli("approve", MODEL, v2, "--reason", "fairness holds", token=tokens["carol"])
    assert code == 0, out
    assert out["decision"] == "promoted" and out["approvals"] == ["user:bob", "user:carol"]
    thread.join(120)
    assert "error" not in box, box.get("error")
    outcome = box["result"]
    assert outcome.decision == "promoted" and outcome.approvals == ["user:bob", "user:carol"]
    assert champion() == v2

    granted = records(Action.APPROVAL_GRANTED, after=start)
    assert [(r.actor, r.reason) for r in granted] == [
        ("user:bob", "holdout looks right"),
        ("user:carol", "fairness holds"),
    ]
    promoted = records(Action.PROMOTED, after=start)[-1]
    assert promoted.actor == "user:carol"
    assert promoted.details["approval"]["approvers"] == ["user:bob", "user:carol"]
    assert promoted.details["approval"]["channel"] == "prefect"
    assert len(records(Action.APPROVAL_REFUSED, after=start)) == 3
    nobody_signed_as_the_os_user(start)


def decisions_token(who: Principal, version: str, decision: str) -> str:
    """An approval token for another version, minted the way the API mints them."""
    with identity_store() as store:
        return store.issue_approval_token(
            who, model=MODEL, version=version, decision=decision, reason="for another version"
        )


# -- overrides ---------------------------------------------------------------------------------


def test_a_rolled_back_version_comes_back_only_with_an_admin_override(
    config_dir: Path, stack: dict[str, str], people: dict[str, Principal], tokens: dict[str, str]
) -> None:
    policy(config_dir, "manual", required=2)
    v1, v2, start = stack["champion"], stack["challenger"], head()
    rolled = decisions.rollback(people["bob"], MODEL, reason="alerts on v2 in production")
    assert (rolled.version, rolled.previous_champion) == (v1, v2)

    with pytest.raises(PromotionError, match=r"rolled back from .*needs an admin's override"):
        decisions.promote(people["bob"], MODEL, v2, reason="fixed upstream")
    with pytest.raises(PromotionError, match="override"):
        decisions.approve(people["carol"], MODEL, v2, reason="fixed upstream")
    refused = records(Action.PROMOTION_REFUSED, after=start)
    assert [r.actor for r in refused] == ["user:bob", "user:carol"]
    with pytest.raises(PermissionDeniedError, match="override") as denied:
        decisions.promote(people["bob"], MODEL, v2, reason="fixed upstream", override=True)
    assert denied.value.permission == "override"
    with pytest.raises(MlstewardError, match="reason: an override needs a reason"):
        decisions.promote(people["amy"], MODEL, v2, override=True)

    # the admin's override counts as one of the two approvals, and only once
    first = decisions.promote(
        people["amy"], MODEL, v2, reason="root cause fixed upstream", override=True
    )
    assert (first.decision, first.approvals) == ("pending", ["user:amy"])
    again = decisions.approve(people["amy"], MODEL, v2, reason="really")
    assert (again.decision, again.approvals) == ("pending", ["user:amy"])
    assert "approved already" in " ".join(again.reasons)
    done = decisions.approve(people["bob"], MODEL, v2, reason="agreed")
    assert done.decision == "promoted" and done.approvals == ["user:amy", "user:bob"]
    assert done.promotion is not None and done.promotion.previous_champion == v1
    assert champion() == v2
    override = records(Action.APPROVAL_GRANTED, after=start)[0]
    assert override.actor == "user:amy" and override.details["override"] is True
    assert override.details["override_reason"] == "root cause fixed upstream"
    assert records(Action.PROMOTED, after=start)[-1].actor == "user:bob"

    # rolling back *to* a version rolled back from is the same loophole: an override too
    decisions.rollback(people["amy"], MODEL, reason="again")
    assert champion() == v1
    code, out = cli("rollback", MODEL, "--to", v2, "--reason", "back", token=tokens["bob"])
    assert code == 1 and "override" in out["error"]
    code, out = cli(
        "rollback", MODEL, "--to", v2, "--reason", "back", "--override", token=tokens["bob"]
    )
    assert code == 1 and "needs permission 'override'" in out["error"]
    code, out = cli(
        "rollback", MODEL, "--to", v2, "--reason", "back", "--override", token=tokens["amy"]
    )
    assert code == 0 and out["version"] == v2
    assert records(Action.ROLLBACK, after=start)[-1].details["override"] is True
    decisions.rollback(people["amy"], MODEL, reason="and back to v1", to=v1, override=True)
    assert champion() == v1
    nobody_signed_as_the_os_user(start)


def test_a_version_a_person_rejected_needs_an_admin_override(
    config_dir: Path, stack: dict[str, str], people: dict[str, Principal], tokens: dict[str, str]
) -> None:
    policy(config_dir, "auto")
    v1, v2, start = stack["champion"], stack["challenger"], head()
    code, out = cli("reject", MODEL, v2, "--reason", "label leak found", token=tokens["carol"])
    assert code == 0 and out["decision"] == "rejected", out
    assert records(Action.APPROVAL_REJECTED, after=start)[-1].actor == "user:carol"
    assert registry.get_version(MODEL, v2).lifecycle == "rejected"

    code, out = cli("promote", MODEL, v2, token=tokens["bob"])
    assert code == 1 and "rejected by user:carol" in out["error"]
    code, out = cli("promote", MODEL, v2, "--override", "--reason", "x", token=tokens["bob"])
    assert code == 1 and "needs permission 'override'" in out["error"]
    code, out = cli(
        "promote", MODEL, v2, "--override", "--reason", "leak was a false alarm",
        token=tokens["amy"],
    )  # fmt: skip
    assert code == 0 and out["decision"] == "promoted", out
    assert champion() == v2
    promoted = records(Action.PROMOTED, after=start)[-1]
    assert promoted.actor == "user:amy" and promoted.details["override"] is True
    assert promoted.details["override_reason"] == "leak was a false alarm"

    # the champion cannot be rejected; it is rolled back
    with pytest.raises(PromotionError, match="roll it back instead"):
        decisions.reject(people["bob"], MODEL, v2, reason="no")
    decisions.rollback(people["amy"], MODEL, reason="restore v1")
    assert champion() == v1
    nobody_signed_as_the_os_user(start)


def test_bad_requests_name_the_field(people: dict[str, Principal]) -> None:
    with pytest.raises(MlstewardError, match="version 'two' must be a registered version"):
        decisions.promote(people["amy"], MODEL, "two")
    with pytest.raises(MlstewardError, match="reason: an approval needs a reason"):
        decisions.approve(people["bob"], MODEL, "2", reason=" ")
    with pytest.raises(MlstewardError, match="is not a model name"):
        decisions.promote(people["amy"], "../etc", "2")
    from mlsteward.errors import NotFoundError

    with pytest.raises(NotFoundError, match="unknown model 'nope'"):
        decisions.promote(people["amy"], "nope", "2")
    with pytest.raises(NotFoundError, match="no registered version 99"):
        decisions.promote(people["amy"], MODEL, "99")

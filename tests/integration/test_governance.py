"""Validation gates, promotion, approvals, rollback and integrity on the real stack:
Prefect harness (pause/resume), MLflow on SQLite, Feast, the SQLite audit trail."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_client
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_runs import resume_flow_run
from prefect.input.run_input import keyset_from_paused_state
from prefect.states import Paused
from prefect.utilities.engine import propose_state_sync
from typer.testing import CliRunner

from flows.governance import govern, promotion_flow, request_approval, validate
from flows.ingestion import ingestion_flow
from flows.training import training_flow
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.models import get_model_config
from mlsteward.config.settings import home
from mlsteward.data.synthetic import Shift, generate_cohort, write_dataset
from mlsteward.errors import IntegrityError, PromotionError
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.governance.gates import ValidationReport
from mlsteward.identity import local_principal
from tasks.approval import ApprovalInput
from tasks.common import artifact_key
from tasks.retrain import running_training_runs
from tests.support.governance import MODEL, WEAK_TUNING, run_in_background, write_config

runner = CliRunner()


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "config"
    write_config(d)
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(d))
    return d


@pytest.fixture
def ingested(config_dir: Path, small_cohort_path: Path) -> Path:
    ingestion_flow(model=MODEL, source=str(small_cohort_path))
    return config_dir


def records(action: Action | None = None, **kw: Any) -> list:
    store = audit_store()
    try:
        return store.query(model=MODEL, action=action, **kw)
    finally:
        store.close()


def verify_audit() -> Any:
    store = audit_store()
    try:
        return store.verify()
    finally:
        store.close()


def champion() -> str | None:
    info = registry.version_by_alias(MODEL, registry.CHAMPION)
    return info.version if info else None


def lifecycle(version: str) -> str:
    return registry.get_version(MODEL, version).lifecycle


def artifact_file(version: str) -> Path:
    """The stored model.ubj of a version (the file a promotion or a scorer would read)."""
    info = registry.get_version(MODEL, version)
    model_id = info.source.rsplit("/", 1)[-1]
    found = [p for p in home().rglob("model.ubj") if model_id in str(p)]
    assert len(found) == 1, found
    return found[0]


def cli(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


# -- auto policy ---------------------------------------------------------------------------


def test_first_version_by_no_champion_path_better_promoted_worse_not(ingested: Path) -> None:
    write_config(ingested, tuning=WEAK_TUNING)
    weak = training_flow(model=MODEL)
    gov = weak.governance
    assert gov.decision == "promoted", gov
    assert champion() == weak.version == "1"
    report = json.loads(
        (
            registry.download_run_file(
                weak.run_id, "validation/validation-v1.json", ingested / "dl"
            )
        ).read_text()
    )
    comparison = next(g for g in report["gates"] if g["name"] == "champion_comparison")
    assert comparison["passed"] and "no champion" in comparison["note"]

    write_config(ingested, tuning={"max_evals": 3})
    strong = training_flow(model=MODEL)
    assert strong.governance.decision == "promoted", strong.governance
    assert champion() == strong.version == "2"
    assert lifecycle("1") == "retired" and lifecycle("2") == "champion"
    assert strong.test_metrics["roc_auc"] > weak.test_metrics["roc_auc"]

    write_config(ingested, tuning=WEAK_TUNING)
    worse = training_flow(model=MODEL)
    gov = worse.governance
    assert gov.decision == "rejected"
    assert any("roc_auc" in r for r in gov.reasons), gov.reasons
    assert champion() == "2"
    info = registry.get_version(MODEL, worse.version)
    assert info.validation_status == "failed" and info.lifecycle == "rejected"
    assert "roc_auc" in info.tags["validation_reasons"]
    assert registry.CHAMPION not in info.aliases

    actions = [r.action for r in records()]
    assert actions.count(Action.PROMOTED) == 2
    assert Action.VALIDATION_FAILED in actions and Action.VERSION_REGISTERED in actions
    assert Action.INGESTION_ACCEPTED in actions
    assert verify_audit().ok

    # promoting the champion again is refused before any gate runs; nothing changes
    code, out = cli("promote", MODEL, "2")
    assert code == 1 and "already the champion" in out["error"]
    info = registry.get_version(MODEL, "2")
    assert info.lifecycle == "champion" and registry.CHALLENGER not in info.aliases

    # status shows both roles and the decisions behind them
    code, status = cli("status", MODEL)
    assert code == 0
    assert status["champion"]["version"] == "2"
    assert status["challenger"] is None
    assert status["previous_champion"] == "1"


def test_gates_gone_stale_before_promotion_run_again_against_the_new_champion(
    ingested: Path,
) -> None:
    """Two runs at once: v1's gates compared it with no champion, then v2 was promoted before
    v1's promotion. v1's promotion is refused as stale (audited), its gates run again against
    v2 and decide; nothing is promoted on a comparison with a champion that is gone."""
    write_config(ingested, tuning=WEAK_TUNING)
    weak = training_flow(model=MODEL, promote=False)
    write_config(ingested, tuning={"max_evals": 3})
    strong = training_flow(model=MODEL, promote=False)
    cfg = get_model_config(MODEL)
    stale = validate(cfg, weak.version, "test")  # against no champion: passes
    assert stale.passed
    promotion_flow(model=MODEL, version=strong.version)
    assert champion() == strong.version

    decision = govern(cfg, weak.version, actor="test", report=stale)

    assert decision.decision == "rejected", decision
    assert any("roc_auc" in r for r in decision.reasons), decision
    assert champion() == strong.version
    mine = [r for r in records() if r.version == weak.version]
    refused = [r for r in mine if r.action == Action.PROMOTION_REFUSED]
    assert len(refused) == 1 and "compared with champion none" in refused[0].reason
    assert mine[-1].action == Action.VALIDATION_FAILED and mine[-1].seq > refused[0].seq
    assert verify_audit().ok


def test_identical_retrain_does_not_replace_the_champion(ingested: Path) -> None:
    write_config(ingested, tuning=WEAK_TUNING)
    first = training_flow(model=MODEL)
    again = training_flow(model=MODEL)
    assert first.artifact_sha256 == again.artifact_sha256  # same data, same seed
    assert again.governance.decision == "rejected"
    assert champion() == first.version


# -- rollback --------------------------------------------------------------------------------


def test_rollback_restores_previous_champion_and_is_audited(ingested: Path) -> None:
    write_config(ingested, tuning=WEAK_TUNING)
    training_flow(model=MODEL)
    write_config(ingested, tuning={"max_evals": 3})
    training_flow(model=MODEL)
    assert champion() == "2"

    code, out = cli("rollback", MODEL, "--reason", "alerts on v2 in production")
    assert code == 0, out
    assert out["version"] == "1" and out["previous_champion"] == "2"
    assert champion() == "1"
    assert lifecycle("2") == "retired" and lifecycle("1") == "champion"
    last = records(Action.ROLLBACK)[-1]
    assert last.details["from"] == "2" and last.details["to"] == "1"
    assert last.reason == "alerts on v2 in production"

    # nothing earlier than v1: a second rollback is refused, the champion stays
    code, out = cli("rollback", MODEL, "--reason", "again")
    assert code == 1 and "no earlier champion" in out["error"]
    assert champion() == "1"
    # an explicit target works; v2 was rolled back from, so bringing it back is an override
    code, out = cli("rollback", MODEL, "--to", "2", "--reason", "fixed upstream")
    assert code == 1 and "override" in out["error"] and champion() == "1"
    code, out = cli("rollback", MODEL, "--to", "2", "--reason", "fixed upstream", "--override")
    assert code == 0 and champion() == "2"
    assert records(Action.ROLLBACK)[-1].details["override"] is True
    assert verify_audit().ok

    # the model card tells the same story from the registry and the audit trail
    code, out = cli("report", MODEL)
    assert code == 0, out
    html = Path(out["html"]).read_text()
    markdown = Path(out["markdown"]).read_text()
    assert Path(out["html"]).parent == home() / "reports"
    assert out["champion"] == "2" and out["audit_ok"] is True
    for text in ("alerts on v2 in production", "fixed upstream", "equal_opportunity_difference"):
        assert text in html and text in markdown, text
    assert registry.get_version(MODEL, "2").artifact_sha256 in html


# -- integrity -------------------------------------------------------------------------------


def test_tampered_artifact_blocks_promotion_and_loading(ingested: Path) -> None:
    write_config(ingested, tuning=WEAK_TUNING)
    training_flow(model=MODEL)
    write_config(ingested, tuning={"max_evals": 3})
    out = training_flow(model=MODEL, promote=False)
    assert out.governance.decision == "challenger"
    assert registry.version_by_alias(MODEL, registry.CHALLENGER).version == "2"

    path = artifact_file("2")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    cfg = get_model_config(MODEL)
    with pytest.raises(IntegrityError, match="does not match"):
        governance.promote(cfg, "2", actor="tester", reason="try")
    with pytest.raises(IntegrityError):
        governance.load_version(MODEL, "challenger", actor="scorer")
    assert champion() == "1"
    failed = records(Action.INTEGRITY_FAILED)
    assert [r.version for r in failed] == ["2", "2"]
    assert "promotion refused" in failed[0].reason and "loading refused" in failed[1].reason
    # the untouched champion still loads, and predicts
    verified = governance.load_version(MODEL, "champion", actor="scorer")
    assert verified.info.version == "1" and verified.sha256 == verified.info.artifact_sha256
    assert verify_audit().ok


# -- races -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default SQLite audit store, and the PostgreSQL one on its own temporary database
    (its advisory locks then serialise promotions)."""
    if request.param == "postgresql":
        monkeypatch.setenv("MLSTEWARD_AUDIT_URL", request.getfixturevalue("postgres_database"))
    return request.param


def test_two_racing_promotions_leave_exactly_one_champion(
    audit_backend: str, ingested: Path
) -> None:
    write_config(ingested, tuning=WEAK_TUNING)
    training_flow(model=MODEL)  # v1 champion
    write_config(ingested, tuning={"max_evals": 3})
    training_flow(model=MODEL, promote=False)  # v2, validated against v1
    training_flow(model=MODEL, promote=False, seed=7)  # v3, validated against v1
    passed = [v for v in ("2", "3") if registry.get_version(MODEL, v).validation_status == "passed"]
    assert passed == ["2", "3"]

    cfg = get_model_config(MODEL)
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def attempt(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = governance.promote(
                cfg, version, actor=f"racer-{version}", reason="race"
            )
        except PromotionError as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=attempt, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [v for v, o in outcomes.items() if not isinstance(o, Exception)]
    losers = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(winners) == 1 and len(losers) == 1
    assert "champion is now" in str(losers[0])
    assert champion() == winners[0]
    champions = [v.version for v in registry.list_versions(MODEL) if v.lifecycle == "champion"]
    assert champions == winners
    assert len(records(Action.PROMOTED)) == 2
    store = audit_store()
    assert store.url.startswith(audit_backend)
    store.close()
    assert verify_audit().ok


# -- manual approval -------------------------------------------------------------------------


def wait_for_pause(box: dict[str, Any], timeout: float = 180) -> str:
    """The flow run id once the flow is paused waiting for approval."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert "error" not in box, box.get("error")
        requested = records(Action.APPROVAL_REQUESTED)
        if requested:
            run_id = requested[-1].details["flow_run_id"]
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_paused():
                    keyset = state.state_details.run_input_keyset
                    try:  # the form is stored a moment after the state changes
                        client.read_flow_run_input(run_id, keyset["schema"])
                        return run_id
                    except (ObjectNotFound, PrefectHTTPStatusError):
                        pass
        time.sleep(0.5)
    raise AssertionError("the flow never paused for approval")


@pytest.fixture
def manual(ingested: Path) -> Path:
    write_config(ingested, tuning=WEAK_TUNING, promotion={"policy": "manual"})
    return ingested


def test_manual_approval_of_a_paused_run_from_the_cli_promotes(manual: Path) -> None:
    thread, box = run_in_background(training_flow, model=MODEL)
    run_id = wait_for_pause(box)
    assert champion() is None  # nothing happens before a person decides
    # what the Prefect UI renders: a typed form under the validation summary
    with get_client(sync_client=True) as client:
        keyset = client.read_flow_run(run_id).state.state_details.run_input_keyset
        schema = json.loads(client.read_flow_run_input(run_id, keyset["schema"]))
        description = json.loads(client.read_flow_run_input(run_id, keyset["description"]))
    assert set(schema["required"]) == {"decision", "reason"}
    assert "approval_token" in schema["properties"]
    decision = json.dumps(schema["properties"]["decision"]) + json.dumps(schema.get("$defs", {}))
    assert "approve" in decision and "reject" in decision
    assert "Promote heart_disease v1" in description
    assert "fairness" in description and "metric_thresholds" in description
    assert "--print-token" in description
    # a training run awaiting approval counts as running: drift must not start another
    running = running_training_runs.fn(MODEL)
    assert len(running) == 1 and run_id in running[0] and "Paused" in running[0]
    assert running_training_runs.fn("some_other_model") == []
    # the older form names the run; the caller (here the local operator) gets a token for it
    code, out = cli("approve", run_id, "--reason", "reviewed")
    assert code == 0, out
    assert out["decision"] == "promoted"
    thread.join(120)
    assert running_training_runs.fn(MODEL) == []
    assert box["result"].governance.decision == "promoted"
    assert champion() == "1"
    me = local_principal().actor
    granted = records(Action.APPROVAL_GRANTED)[-1]
    assert granted.actor == me and granted.reason == "reviewed"
    promoted = records(Action.PROMOTED)[-1]
    assert promoted.actor == me and promoted.details["approval"]["channel"] == "prefect"


def test_manual_rejection_via_cli_then_only_an_override_promotes(manual: Path) -> None:
    thread, box = run_in_background(training_flow, model=MODEL)
    run_id = wait_for_pause(box)
    code, out = cli("approve", run_id, "--reason", "not yet", "--reject")
    assert code == 0, out
    thread.join(120)
    assert box["result"].governance.decision == "rejected"
    assert champion() is None and lifecycle("1") == "rejected"
    rejected = records(Action.APPROVAL_REJECTED)[-1]
    assert (rejected.actor, rejected.reason) == (local_principal().actor, "not yet")

    # a run that is not paused is refused with a clear error
    code, out = cli("approve", run_id, "--reason", "late")
    assert code == 1 and "not paused" in out["error"]

    # a person said no: a promotion run, or a plain promote, is refused; an override is not
    with pytest.raises(PromotionError, match="rejected by local:"):
        promotion_flow(model=MODEL, version="1")
    code, out = cli("promote", MODEL, "1", "--reason", "now ok")
    assert code == 1 and "override" in out["error"]
    code, out = cli("promote", MODEL, "1", "--reason", "now ok", "--override")
    assert code == 0 and out["decision"] == "promoted", out
    assert champion() == "1"
    granted = records(Action.APPROVAL_GRANTED)[-1]
    assert granted.details["override"] is True and granted.details["override_reason"] == "now ok"


def test_approval_timeout_counts_as_rejected(ingested: Path) -> None:
    write_config(
        ingested,
        tuning=WEAK_TUNING,
        promotion={"policy": "manual", "approval_timeout_seconds": 3},
    )
    out = training_flow(model=MODEL)
    assert out.governance.decision == "rejected"
    assert out.governance.reasons == ["approval timed out"]
    assert champion() is None
    timed_out = records(Action.APPROVAL_TIMED_OUT)
    assert timed_out and timed_out[-1].version == "1"
    assert lifecycle("1") == "rejected"


def test_approval_waits_on_a_pause_the_server_applied_before_refusing_its_repeat(
    config_dir: Path,
) -> None:
    """A busy server can apply the pause yet fail the response; Prefect's client sends it again
    and the server refuses the repeat with the run's paused state, raised as ``Pause``. The run
    is paused all the same, so the flow must still wait for the person's decision."""
    cfg = get_model_config(MODEL)
    report = ValidationReport(model=MODEL, version="7", gates=[])

    @flow
    def approval_after_applied_pause() -> ApprovalInput | None:
        # the first, applied attempt, exactly as pause_flow_run proposes it
        applied = Paused(
            timeout_seconds=60,
            reschedule=False,
            pause_key=artifact_key("approve", MODEL, "v7", "1"),
        )
        applied.state_details.run_input_keyset = keyset_from_paused_state(applied)
        with get_client(sync_client=True) as client:
            propose_state_sync(client, applied, flow_run_id=FlowRunContext.get().flow_run.id)
        return request_approval(cfg, "7", report, actor="tester")

    thread, box = run_in_background(approval_after_applied_pause)
    run_id = wait_for_pause(box)
    resume_flow_run(run_id, run_input={"decision": "reject", "approver": "ana", "reason": "no"})
    thread.join(60)
    assert "error" not in box, box.get("error")
    decision = box["result"]
    assert (decision.decision, decision.approver, decision.reason) == ("reject", "ana", "no")


def test_promote_refuses_a_failed_version(ingested: Path) -> None:
    write_config(ingested, tuning=WEAK_TUNING, thresholds={"roc_auc": {"min": 0.99}})
    out = training_flow(model=MODEL)
    assert out.governance.decision == "rejected"
    cfg = get_model_config(MODEL)
    with pytest.raises(PromotionError, match="validation status failed"):
        governance.promote(cfg, "1", actor="tester", reason="force it")
    code, cli_out = cli("promote", MODEL, "1")
    assert code == 1 and "failed validation" in cli_out["error"]
    assert champion() is None
    assert records(Action.PROMOTION_REFUSED)


# -- fairness --------------------------------------------------------------------------------


def test_fairness_gate_rejects_a_model_trained_on_biased_labels(
    config_dir: Path, tmp_path: Path
) -> None:
    """Half of the women's positive labels are flipped to 0 (under-diagnosis): the model learns
    to miss sick women, and the equal-opportunity limit on sex stops it."""
    biased = Shift(label_distortion={"column": "sex", "value": "F", "flip_positive_rate": 0.5})
    source = write_dataset(
        generate_cohort(n_rows=6_000, seed=3, shift=biased), tmp_path / "biased.parquet"
    )
    ingestion_flow(model=MODEL, source=str(source))
    out = training_flow(model=MODEL, max_evals=2)
    gov = out.governance
    assert gov.decision == "rejected"
    assert out.test_metrics["roc_auc"] > 0.75  # it is not a bad model overall
    fairness = [r for r in gov.reasons if r.startswith("sex: ")]
    assert any("equal_opportunity_difference" in r for r in fairness), gov.reasons
    # the reason carries the group numbers behind it
    assert all("F" in r and "M" in r and "tpr" in r.lower() for r in fairness), fairness
    assert champion() is None
    info = registry.get_version(MODEL, out.version)
    assert info.validation_status == "failed" and info.lifecycle == "rejected"
    failed = records(Action.VALIDATION_FAILED)[-1]
    violation = next(
        v for v in failed.details["violations"] if v["metric"] == "equal_opportunity_difference"
    )
    assert violation["attribute"] == "sex" and violation["value"] > violation["limit"]
    assert set(violation["groups"]) == {"F", "M"}
    assert violation["groups"]["F"]["tpr"] < violation["groups"]["M"]["tpr"]


def test_audit_verify_cli_finds_an_edited_record(ingested: Path) -> None:
    """The CLI reports an intact chain, then the first record someone edited in the database."""
    import sqlite3

    from mlsteward.config.settings import audit_url

    code, out = cli("audit", "verify")
    assert code == 0 and out["ok"] and out["records"] == 1  # the ingestion
    store = audit_store()
    for i in range(3):
        store.append(Action.ALIAS_CHANGED, model=MODEL, version=str(i), reason=f"r{i}")
    store.close()
    db = audit_url().removeprefix("sqlite:///")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3")
    conn.close()
    code, out = cli("audit", "verify")
    assert code == 1
    assert out["details"]["first_bad_seq"] == 3 and "edited" in out["error"]


class AuditOutage:
    """The real audit store, except that writing a promotion record fails (disk full, a
    dropped database connection): the failure lands after the alias has moved."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def append(self, action: Any, **kw: Any) -> Any:
        if action == Action.PROMOTED:
            raise OSError("audit database unavailable")
        return self.store.append(action, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_failed_promotion_is_undone_not_half_done(ingested: Path) -> None:
    write_config(ingested, tuning=WEAK_TUNING)
    training_flow(model=MODEL)
    write_config(ingested, tuning={"max_evals": 3})
    training_flow(model=MODEL, promote=False)
    before = {v.version: v.lifecycle for v in registry.list_versions(MODEL)}
    assert before == {"1": "champion", "2": "challenger"}

    cfg = get_model_config(MODEL)
    store = audit_store()
    try:
        with pytest.raises(OSError, match="audit database unavailable"):
            governance.promote(cfg, "2", actor="tester", reason="go", store=AuditOutage(store))
    finally:
        store.close()
    assert champion() == "1"
    assert {v.version: v.lifecycle for v in registry.list_versions(MODEL)} == before
    assert "promoted_at" not in registry.get_version(MODEL, "2").tags
    assert registry.version_by_alias(MODEL, registry.CHALLENGER).version == "2"
    undone = records(Action.PROMOTION_ABANDONED)[-1]
    assert "undone" in undone.reason and undone.version == "2"
    intent = records(Action.PROMOTION_INTENT)[-1]  # the intent it closes was written first
    assert undone.details["intent_seq"] == intent.seq and intent.details["to"] == "2"
    # the registry is consistent, so the same promotion succeeds once the store is back
    governance.promote(cfg, "2", actor="tester", reason="go again")
    assert champion() == "2"
    assert verify_audit().ok


def test_promote_under_the_manual_policy_is_the_callers_approval(manual: Path) -> None:
    out = training_flow(model=MODEL, promote=False)
    assert out.governance.decision == "challenger"
    code, result = cli("promote", MODEL, "1", "--approver", "bob", "--reason", "signed off")
    assert code == 1 and "a typed name is not an identity" in result["error"]
    code, result = cli("promote", MODEL, "1")
    assert code == 1 and "reason" in result["error"]
    code, result = cli("promote", MODEL, "1", "--reason", "signed off")
    assert code == 0, result
    assert result["decision"] == "promoted" and champion() == "1"
    assert result["approvals"] == [local_principal().identity]
    granted = records(Action.APPROVAL_GRANTED)[-1]
    assert granted.actor == local_principal().actor and granted.details["channel"] == "request"
    assert not records(Action.APPROVAL_REQUESTED)  # nobody was asked: one approval was enough

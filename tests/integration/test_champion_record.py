"""The governance record decides the champion: an alias moved in MLflow is refused, reported,
audited and put back; a promotion killed between its steps is finished or undone.

Real MLflow (SQLite), the SQLite audit trail, Prefect's harness; one trained stack for the
module (v1 champion, v2 challenger). Each test leaves the registry as the record says.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.monitor import monitor_flow, watch_flow
from mlsteward.alerts.automations import sync_automations
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.models import get_model_config
from mlsteward.errors import AliasMismatchError
from mlsteward.governance import champion as champion_record
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry, signatures
from mlsteward.governance.attestations import verify_promotion
from mlsteward.monitoring import prediction_log
from mlsteward.serving.metrics import ServingMetrics
from mlsteward.serving.slots import ModelSlot
from mlsteward.signing import keys
from tests.support.governance import MODEL, write_config
from tests.support.serving import FAST_TUNING
from tests.support.webhook import Receiver, webhook_receiver

FORK = multiprocessing.get_context("fork")
AGAIN = {"reason": "the tests put the challenger back after promoting it"}
runner = CliRunner()


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture
def stack(champion_and_challenger: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """v1 champion, v2 challenger; afterwards the alias is put back to what the record says."""
    yield champion_and_challenger
    with audit_store() as audit:
        recorded, _ = champion_record.recorded(MODEL, audit)
    if recorded is not None and alias() != recorded:
        registry.set_alias(MODEL, registry.CHAMPION, recorded)


def alias() -> str | None:
    info = registry.version_by_alias(MODEL, registry.CHAMPION)
    return info.version if info else None


def records(action: Action, after: int = 0) -> list:
    with audit_store() as audit:
        return [r for r in audit.query(model=MODEL, action=action) if r.seq > after]


def head() -> int:
    with audit_store() as audit:
        last = audit.query(limit=1)
    return last[0].seq if last else 0


def cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_an_alias_moved_in_mlflow_is_refused_reported_audited_and_put_back(
    stack: dict[str, Any],
) -> None:
    champion, challenger = stack["champion"], stack["challenger"]
    start = head()
    registry.set_alias(MODEL, registry.CHAMPION, challenger)  # one click in the MLflow UI

    code, status = cli("status", MODEL)
    assert code == 0
    assert status["champion"]["version"] == champion  # the record, not the alias
    assert status["champion_check"]["consistent"] is False
    assert "outside governance" in status["champion_check"]["problem"]

    with pytest.raises(AliasMismatchError, match=f"points at v{challenger}.*says v{champion}"):
        governance.load_version(MODEL, "champion", actor="user:scorer")
    cfg = get_model_config(MODEL)
    with pytest.raises(AliasMismatchError):
        governance.promote(cfg, challenger, actor="user:admin", reason="sneak it in")
    mismatches = records(Action.ALIAS_MISMATCH, after=start)
    assert [r.details["purpose"] for r in mismatches] == ["loading the champion", "promotion"]
    assert all(r.details["alias"] == challenger for r in mismatches)

    code, found = cli("audit", "reconcile", MODEL)
    assert code == 1 and "--repair" in found["error"]
    assert alias() == challenger  # reporting changes nothing
    code, found = cli("audit", "reconcile")  # every configured model
    assert code == 1 and [m["model"] for m in found["details"]["models"]] == [MODEL]

    code, found = cli("audit", "reconcile", MODEL, "--repair")
    assert code == 0, found
    assert found["models"][0]["outcome"] == "repaired"
    assert alias() == champion
    repaired = records(Action.ALIAS_REPAIRED, after=start)
    assert len(repaired) == 1
    assert {k: repaired[0].details[k] for k in ("alias", "from", "to")} == {
        "alias": "champion", "from": challenger, "to": champion,
    }  # fmt: skip
    assert governance.load_version(MODEL, "champion", actor="user:scorer").info.version == champion
    code, found = cli("audit", "reconcile", MODEL)
    assert code == 0 and found["models"][0]["outcome"] == "consistent"


def test_serving_keeps_the_verified_champion_and_audits_the_mismatch_once(
    stack: dict[str, Any],
) -> None:
    champion, challenger = stack["champion"], stack["challenger"]
    slot = ModelSlot(get_model_config(MODEL), ServingMetrics(), store_factory=lambda: None)
    assert slot.refresh().champion.version == champion
    start = head()
    registry.set_alias(MODEL, registry.CHAMPION, challenger)
    for _ in range(3):  # every poll sees it; the audit trail gets one record, not one per poll
        arms = slot.refresh()
        assert arms.champion is not None and arms.champion.version == champion
    described = slot.describe()
    assert described["champion"]["version"] == champion
    assert "alias_mismatch" in described["alias_mismatch"]
    assert len(records(Action.ALIAS_MISMATCH, after=start)) == 1
    registry.set_alias(MODEL, registry.CHAMPION, champion)
    slot.refresh()
    assert slot.describe()["alias_mismatch"] is None


def _promote_killed_at(step: str, version: str) -> Callable[[], None]:
    """A child that promotes ``version`` and is SIGKILLed at ``step``: right before the alias
    moves, or right after it moved (before the tags and the completion record)."""

    def body() -> None:
        real_set_alias = registry.set_alias

        def set_alias(name: str, which: str, v: str) -> None:
            if which == registry.CHAMPION and step == "before-alias":
                os.kill(os.getpid(), signal.SIGKILL)
            real_set_alias(name, which, v)
            if which == registry.CHAMPION and step == "after-alias":
                os.kill(os.getpid(), signal.SIGKILL)

        registry.set_alias = set_alias  # type: ignore[assignment]
        governance.promote(
            get_model_config(MODEL), version, actor="user:admin", reason="kill", override=AGAIN
        )
        os._exit(3)  # not reached: the kill came first

    return body


def _run_killed(step: str, version: str) -> None:
    child = FORK.Process(target=_promote_killed_at(step, version))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL


def test_a_promotion_killed_before_the_alias_moved_is_undone(stack: dict[str, Any]) -> None:
    champion, challenger = stack["champion"], stack["challenger"]
    start = head()
    _run_killed("before-alias", challenger)
    assert alias() == champion
    with audit_store() as audit:
        found = champion_record.state(MODEL, audit)
    assert found.pending is not None and found.pending.to_version == challenger
    with pytest.raises(AliasMismatchError, match="interrupted promoted"):
        governance.load_version(MODEL, "champion", actor="user:scorer")

    code, out = cli("audit", "reconcile", MODEL, "--repair")
    assert code == 0 and out["models"][0]["outcome"] == "undone", out
    assert alias() == champion
    undone = records(Action.PROMOTION_ABANDONED, after=start)
    assert len(undone) == 1 and undone[0].details["intent_seq"] == found.pending.seq
    assert registry.get_version(MODEL, challenger).lifecycle == "challenger"
    with audit_store() as audit:
        assert audit.verify().ok


def test_a_promotion_killed_after_the_alias_moved_is_finished_and_signed(
    stack: dict[str, Any],
) -> None:
    champion, challenger = stack["champion"], stack["challenger"]
    start = head()
    _run_killed("after-alias", challenger)
    assert alias() == challenger  # moved, but no record explains it yet
    with audit_store() as audit:
        assert champion_record.recorded(MODEL, audit)[0] == champion

    # the next governance call on the model finishes it before doing anything else
    with pytest.raises(Exception, match="already the champion"):
        governance.promote(get_model_config(MODEL), challenger, actor="user:admin", reason="x")
    finished = records(Action.PROMOTED, after=start)
    assert len(finished) == 1
    done = finished[0]
    assert done.details["recovered"] is True and done.details["to"] == challenger
    assert done.actor == "user:admin" and done.details["recovered_by"] == "user:admin"
    assert verify_promotion(done)
    assert registry.get_version(MODEL, challenger).lifecycle == "champion"
    assert registry.get_version(MODEL, champion).lifecycle == "retired"
    # put the module's stack back: v1 champion again, v2 challenger
    governance.rollback(get_model_config(MODEL), reason="restore", actor="user:admin")
    assert alias() == champion
    registry.set_tags(MODEL, challenger, {"lifecycle": "challenger"})
    registry.set_alias(MODEL, registry.CHALLENGER, challenger)


def test_training_registers_signed_versions_and_signed_promotions(
    stack: dict[str, Any],
) -> None:
    """The training flow (the module's stack: v1 promoted, v2 challenger) signs each version
    at registration, names the key in its audit record, and the promotion is signed too; a
    record changed afterwards no longer verifies."""
    kid = keys.key_id(keys.load_public_key())
    for version in (stack["champion"], stack["challenger"]):
        assert registry.get_version(MODEL, version).tags[signatures.KEY_ID_TAG] == kid
    with audit_store() as audit:
        registered = audit.query(model=MODEL, action=Action.VERSION_REGISTERED)
        promoted = audit.query(model=MODEL, action=Action.PROMOTED)[0]
    assert [r.details["signature_key_id"] for r in registered][:2] == [kid, kid]
    assert promoted.version == stack["champion"] and verify_promotion(promoted)
    assert promoted.details["signature"]["key_id"] == kid
    forged = dataclasses.replace(promoted, actor="user:mallory")
    assert not verify_promotion(forged)


def test_the_upkeep_flow_puts_a_moved_alias_back_and_checkpoints(stack: dict[str, Any]) -> None:
    from flows.upkeep import upkeep_flow
    from mlsteward.audit.checkpoints import latest_checkpoint

    champion, challenger = stack["champion"], stack["challenger"]
    registry.set_alias(MODEL, registry.CHAMPION, challenger)
    found = upkeep_flow(requested_by="service:upkeep")
    assert [(r.model, r.outcome) for r in found] == [(MODEL, "repaired")]
    assert alias() == champion
    with audit_store() as audit:
        checkpoint = latest_checkpoint(audit)
        assert checkpoint is not None
        repaired = audit.last(model=MODEL, action=Action.ALIAS_REPAIRED)
        assert repaired is not None and checkpoint.seq >= repaired.seq  # the repair is anchored
        assert repaired.actor.endswith("for service:upkeep")


def test_a_promotion_record_appended_without_the_key_makes_no_champion(
    stack: dict[str, Any],
) -> None:
    """Someone with write access to the audit store appends a promotion record (and moves the
    alias to match): without the governance key's signature the record is ignored."""
    champion, challenger = stack["champion"], stack["challenger"]
    with audit_store() as audit:
        forged = audit.append(
            Action.PROMOTED,
            model=MODEL,
            version=challenger,
            actor="user:admin",
            reason="looks legitimate",
            details={"from": champion, "to": challenger, "alias": "champion"},
        )
        found = champion_record.state(MODEL, audit)
    assert found.recorded == champion and found.consistent
    assert found.ignored == (forged.seq,) and "without a valid governance signature" in (
        found.problem() or ""
    )
    registry.set_alias(MODEL, registry.CHAMPION, challenger)
    with pytest.raises(AliasMismatchError, match=f"says v{champion}"):
        governance.load_version(MODEL, "champion", actor="user:scorer")
    code, _ = cli("audit", "reconcile", MODEL, "--repair")
    assert code == 0 and alias() == champion


def test_mlflow_failing_after_the_alias_moved_is_finished_by_the_next_call(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow goes down right after the alias moved: the tags fail and so does the undo. The
    intent stays open; nothing may load the unexplained alias; once MLflow is back, the next
    governance call finishes the promotion (its checks had all passed)."""
    champion, challenger = stack["champion"], stack["challenger"]
    start = head()
    real_set_alias = registry.set_alias

    def mlflow_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("MLflow tracking server unavailable")

    def set_alias(name: str, which: str, version: str) -> None:
        real_set_alias(name, which, version)
        if which == registry.CHAMPION:  # from here on every registry write fails
            for fn in ("set_alias", "set_tags", "delete_alias", "delete_tag"):
                monkeypatch.setattr(registry, fn, mlflow_down)

    monkeypatch.setattr(registry, "set_alias", set_alias)
    cfg = get_model_config(MODEL)
    with pytest.raises(ConnectionError, match="unavailable"):
        governance.promote(
            cfg, challenger, actor="user:admin", reason="during an outage", override=AGAIN
        )
    monkeypatch.undo()  # MLflow is back
    assert alias() == challenger
    assert records(Action.PROMOTED, after=start) == []
    with pytest.raises(AliasMismatchError, match="interrupted promoted"):
        governance.load_version(MODEL, "champion", actor="user:scorer")

    code, out = cli("audit", "reconcile", MODEL, "--repair")
    assert code == 0 and out["models"][0]["outcome"] == "finished", out
    [done] = records(Action.PROMOTED, after=start)
    assert done.details["recovered"] is True and verify_promotion(done)
    loaded = governance.load_version(MODEL, "champion", actor="user:scorer")
    assert loaded.info.version == challenger
    # put the module's stack back: v1 champion again, v2 challenger
    governance.rollback(cfg, reason="restore", actor="user:admin")
    registry.set_tags(MODEL, challenger, {"lifecycle": "challenger"})
    registry.set_alias(MODEL, registry.CHALLENGER, challenger)
    assert alias() == champion


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as hook:
        yield hook


def test_the_watch_rolls_back_a_champion_whose_quality_breaks_and_notifies(
    stack: dict[str, Any], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After v2's promotion, the outcomes of its own predictions arrive and ROC-AUC has
    collapsed: the watch alerts, rolls back to v1 through governance and says so."""
    champion, challenger = stack["champion"], stack["challenger"]
    monkeypatch.setenv("WATCH_HOOK", receiver.url)
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    write_config(
        config_dir,
        tuning=FAST_TUNING,
        alerts={
            "channels": [{"type": "webhook", "url_env": "WATCH_HOOK", "allow_private_urls": True}],
            "watch": {"window_minutes": 30, "interval_minutes": 0.01},
            "rules": {"quality_drop": {"min_labelled_rows": 100}},
        },
    )
    cfg = get_model_config(MODEL)
    try:
        sync_automations(cfg)
        start = head()
        governance.promote(cfg, challenger, actor="user:admin", reason="v2 wins", override=AGAIN)

        # 300 of v2's predictions, each confidently wrong once its outcome arrived
        now = pd.Timestamp.now(tz="UTC")
        rng = np.random.default_rng(3)
        proba = rng.uniform(0.05, 0.95, 300)
        rows = pd.DataFrame(
            {
                "patient_id": stack["ids"][:300],
                "event_timestamp": now - pd.Timedelta(minutes=5),
                "prediction_proba": proba,
                "prediction": (proba >= 0.5).astype(int),
                "model_version": challenger,
                "arm": "champion",
                "scored_at": now,
            }
        )
        prediction_log.append(MODEL, rows)
        outcomes = rows[["patient_id", "event_timestamp"]].assign(
            heart_disease=1 - rows["prediction"]
        )
        prediction_log.attach_labels(
            MODEL, outcomes, entity="patient_id", timestamp="event_timestamp", label="heart_disease"
        )

        out = watch_flow(model=MODEL)
        assert out["version"] == challenger and out["rolled_back_to"] == champion, out
        [quality] = [a for a in out["checks"][-1]["alerts"] if a["rule"] == "quality_drop"]
        assert quality["breached"] and quality["transition"] == "fired", quality
        assert alias() == champion
        [back] = records(Action.ROLLBACK, after=start)
        assert "post-promotion watch of v" in back.reason and "roc_auc" in back.reason
        assert back.details["from"] == challenger and verify_promotion(back)
        fired = records(Action.ALERT_FIRED, after=start)
        assert {r.details["subject"] for r in fired} == {"roc_auc", "rollback"}

        deadline = time.monotonic() + 30
        while len(receiver.posts) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        subjects = sorted(p["subject"] for p in receiver.posts)
        assert len(subjects) == 2 and all("quality_drop" in s for s in subjects), subjects
        assert any(f"rolled back to v{champion}" in p["body"] for p in receiver.posts)

        # a watch that finds another champion than the one it watches ends without acting
        again = watch_flow(model=MODEL, version=challenger)
        assert again["checks"] == [] and again["rolled_back_to"] is None

        # the scheduled monitor checks every standing rule it can on v1; none can judge yet
        checked = monitor_flow(model=MODEL)
        assert checked["champion"]["version"] == champion
        rules = {a["rule"] for a in checked["alerts"]}
        assert {"success_rate", "quality_drop", "attribution_drift", "bias_drift"} <= rules
        assert all(a["transition"] is None for a in checked["alerts"]), checked["alerts"]
    finally:
        write_config(config_dir, tuning=FAST_TUNING)
        sync_automations(get_model_config(MODEL))
        registry.set_tags(MODEL, challenger, {"lifecycle": "challenger"})
        registry.set_alias(MODEL, registry.CHALLENGER, challenger)

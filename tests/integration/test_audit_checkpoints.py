"""Signed checkpoints of the audit trail against real stores: SQLite files and the real
PostgreSQL server at 127.0.0.1:5432 (a throwaway database for the trail, another one, shared
by the module, as the anchor).

Tampering is done as a database owner would: raw SQL with the append-only triggers out of the
way, every hash and the head marker recomputed, so the chain alone still verifies.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from mlsteward.audit import Action, AuditError, AuditStore, audit_store
from mlsteward.audit.anchors import FileAnchor, open_anchor
from mlsteward.audit.checkpoints import (
    Checkpoint,
    latest_checkpoint,
    verify_with_checkpoint,
    write_checkpoint,
)
from mlsteward.audit.records import GENESIS_HASH, canonical_details, compute_hash
from mlsteward.cli.app import app
from mlsteward.signing import keys
from tests.support.no_prefect import prefect_console_on_real_stderr, prefect_harness  # noqa: F401

runner = CliRunner()


@dataclass
class Trail:
    """One audit store and its anchor, as the settings name them."""

    kind: str
    url: str
    anchor: str

    def open(self) -> AuditStore:
        return audit_store(self.url)

    def raw_write(self, statements: list[tuple]) -> None:
        """Raw writes as the database's owner, the append-only triggers out of the way."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
            conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
            for statement in statements:
                conn.execute(*statement)
            conn.close()
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("ALTER TABLE mlsteward_audit DISABLE TRIGGER USER")
            for statement in statements:
                conn.execute(statement[0].replace("?", "%s"), *statement[1:])
            conn.execute("ALTER TABLE mlsteward_audit ENABLE TRIGGER USER")

    def rewrite_everything(self, store: AuditStore, new_reason: str) -> None:
        """Record 1's reason changed, then every record re-chained and the head marker
        moved: the wholesale rewrite a hash chain alone cannot catch."""
        table = "audit" if self.kind == "sqlite" else "mlsteward_audit"
        rows, prev = [], GENESIS_HASH
        for r in store.query():
            reason = new_reason if r.seq == 1 else r.reason
            fields = (
                r.seq,
                r.ts,
                r.actor,
                r.action,
                r.model,
                r.version,
                reason,
                canonical_details(r.details),
                prev,
            )
            prev = compute_hash(*fields)
            rows.append((*fields, prev))
        statements: list[tuple] = [(f"DELETE FROM {table}",)]
        statements += [
            (f"INSERT INTO {table} VALUES ({', '.join(['?'] * 10)})", row) for row in rows
        ]
        last = rows[-1]
        statements.append(
            (f"UPDATE {table}_head SET seq = ?, hash = ?, ts = ?", (last[0], last[9], last[1]))
        )
        self.raw_write(statements)


@pytest.fixture(params=["sqlite", "postgres"])
def trail(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trail:
    if request.param == "sqlite":
        found = Trail(
            "sqlite",
            f"sqlite:///{tmp_path / 'audit' / 'audit.db'}",
            (tmp_path / "elsewhere" / "checkpoints.jsonl").as_uri(),
        )
    else:
        found = Trail(
            "postgres",
            request.getfixturevalue("postgres_database"),
            request.getfixturevalue("module_postgres_database"),
        )
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", found.url)
    monkeypatch.setenv("MLSTEWARD_AUDIT_ANCHOR", found.anchor)
    monkeypatch.delenv("MLSTEWARD_API_URL", raising=False)
    monkeypatch.delenv("MLSTEWARD_TOKEN", raising=False)
    monkeypatch.delenv("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", raising=False)
    return found


def fill(store: AuditStore, n: int = 5) -> None:
    for i in range(n):
        store.append(
            Action.PROMOTED,
            model="alpha",
            version=i + 1,
            reason=f"auc 0.9{i}",
            actor="user:alice",
            details={"auc": 0.9 + i / 100},
        )


def cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["audit", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def cli_text(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.output


def test_a_checkpoint_is_written_found_and_verified(trail: Trail) -> None:
    with trail.open() as store:
        fill(store)
        checkpoint = write_checkpoint(store, actor="user:alice", reason="promotion alpha v5")
        # covers everything before its own record: the key's creation (6) included
        assert (checkpoint.seq, checkpoint.records) == (6, 6)
        assert store.query()[5].action == Action.SIGNING_KEY_CREATED
        announced = store.last(action=Action.AUDIT_CHECKPOINT)
        assert announced is not None and announced.seq == 7
        assert announced.details["checkpoint_seq"] == 6
        assert announced.details["head_hash"] == checkpoint.head_hash == store.query()[5].hash
        assert latest_checkpoint(store) == checkpoint
        assert checkpoint.signed_by(keys.load_public_key())
        assert checkpoint.key_id == keys.key_id(keys.load_public_key())
        checked = verify_with_checkpoint(store)
        assert checked.ok and checked.records == 7 and checked.warning is None, checked
        summary = {"seq": 6, "ts": checkpoint.ts, "key_id": checkpoint.key_id}
        assert checked.checkpoint == {**summary, "head_hash": checkpoint.head_hash}
        second = write_checkpoint(store, actor="system", reason="hourly")
        assert second.seq == 7 and latest_checkpoint(store) == second
    if trail.kind == "postgres":
        with psycopg.connect(trail.anchor) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM audit_checkpoints WHERE store = %s", (checkpoint.store,)
            ).fetchone()
        assert stored == (2,)
        assert "password" not in checkpoint.store and checkpoint.store.endswith("/mlsteward_audit")
    code, out = cli("verify")
    assert code == 0 and out["ok"] and out["checkpoint"]["seq"] == 7 and out["records"] == 8
    code, text = cli_text("verify")
    assert code == 0 and "checked against checkpoint 7 of " in text
    assert f"(key {checkpoint.key_id})" in text and "1 record(s) since" in text


def test_a_wholesale_rewrite_fails_against_the_checkpoint(trail: Trail) -> None:
    with trail.open() as store:
        fill(store)
        checkpoint = write_checkpoint(store, actor="system", reason="hourly")
        fill(store, 2)
        trail.rewrite_everything(store, "nothing happened")
        assert store.verify().ok  # the chain alone cannot tell
        checked = verify_with_checkpoint(store)
        assert not checked.ok
        assert f"no longer contains the head of checkpoint {checkpoint.seq}" in (
            checked.problem or ""
        )
        with pytest.raises(AuditError, match="was rewritten"):
            write_checkpoint(store, actor="system", reason="hourly")  # never signs over it
    code, out = cli("verify")
    assert code == 1 and "was rewritten since that checkpoint" in out["error"]
    assert out["details"]["checkpoint"]["seq"] == checkpoint.seq
    code, out = cli("verify", "--no-checkpoint")
    assert code == 0 and out["ok"]


def forged(checkpoint: Checkpoint, key: ec.EllipticCurvePrivateKey, **changes: Any) -> Checkpoint:
    unsigned = replace(checkpoint, key_id=keys.key_id(key.public_key()), signature="", **changes)
    return replace(unsigned, signature=keys.sign_bytes(unsigned.payload(), key))


def test_a_forged_checkpoint_fails(trail: Trail) -> None:
    with trail.open() as store:
        fill(store)
        genuine = write_checkpoint(store, actor="system", reason="hourly")
        trail.rewrite_everything(store, "nothing happened")
        rewritten_head = store.verify()
        anchor = open_anchor(trail.anchor)
        # a head of the rewritten chain, signed with a key of the forger's own
        other = ec.generate_private_key(ec.SECP256R1())
        anchor.append(
            forged(
                genuine,
                other,
                seq=rewritten_head.records,
                records=rewritten_head.records,
                head_hash=rewritten_head.head_hash,
            )
        )
        checked = verify_with_checkpoint(store)
        assert not checked.ok and "forged checkpoint" in (checked.problem or "")
        # the genuine key id, but a signature that does not cover the new head
        anchor.append(
            replace(genuine, seq=rewritten_head.records + 1, head_hash=rewritten_head.head_hash)
        )
        checked = verify_with_checkpoint(store)
        assert not checked.ok and "does not verify" in (checked.problem or "")
        assert checked.checkpoint and checked.checkpoint["seq"] == rewritten_head.records + 1
    code, out = cli("verify")
    assert code == 1 and "forged or altered" in out["error"]


def test_a_stale_checkpoint_warns_and_none_at_all_warns(
    trail: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trail.open() as store:
        fill(store, 3)
        code, text = cli_text("verify")
        assert code == 0 and "warning: no checkpoint yet" in text
        checkpoint = write_checkpoint(store, actor="system", reason="hourly")
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        checked = verify_with_checkpoint(store, now=later)
        assert checked.ok and "2.0 h old (more than 1 h)" in (checked.warning or "")
        assert verify_with_checkpoint(store).warning is None
        monkeypatch.setenv("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", "3")
        assert verify_with_checkpoint(store, now=later).warning is None
    monkeypatch.setenv("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", "0.000001")
    code, text = cli_text("verify")
    assert code == 0 and f"checked against checkpoint {checkpoint.seq}" in text
    assert "warning: the newest checkpoint is" in text
    code, out = cli("verify")
    assert code == 0 and out["warning"].startswith("the newest checkpoint is")


def test_a_lost_anchor_is_a_failure_not_a_missing_checkpoint(trail: Trail) -> None:
    with trail.open() as store:
        fill(store, 3)
        write_checkpoint(store, actor="system", reason="hourly")
    if trail.kind == "sqlite":
        Path(trail.anchor.removeprefix("file://")).unlink()
    else:
        with psycopg.connect(trail.anchor, autocommit=True) as conn:
            conn.execute("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER")
            conn.execute("DELETE FROM audit_checkpoints")
            conn.execute("ALTER TABLE audit_checkpoints ENABLE TRIGGER USER")
    code, out = cli("verify")
    assert code == 1 and "holds no checkpoint of this audit trail" in out["error"]


def test_the_checkpoint_command_and_the_cli_exit_codes(trail: Trail) -> None:
    with trail.open() as store:
        fill(store, 2)
    code, out = cli("checkpoint", "--reason", "before the audit")
    assert code == 0 and out["seq"] == 3 and out["signature"]
    with trail.open() as store:
        record = store.last(action=Action.AUDIT_CHECKPOINT)
    assert record is not None and record.reason == "before the audit"
    assert record.actor.startswith("local:")  # single-user mode: the local operator
    assert cli("verify")[0] == 0
    table = "audit" if trail.kind == "sqlite" else "mlsteward_audit"
    trail.raw_write([(f"UPDATE {table} SET reason = 'edited' WHERE seq = 2",)])
    code, out = cli("verify")
    assert code == 1 and out["details"]["first_bad_seq"] == 2 and "edited" in out["error"]


def test_an_empty_trail_can_be_checkpointed(trail: Trail) -> None:
    with trail.open() as store:
        keys.init_keys()  # the key exists already: no record of its creation
        checkpoint = write_checkpoint(store, actor="system", reason="hourly")
        assert (checkpoint.seq, checkpoint.head_hash) == (0, GENESIS_HASH)
        checked = verify_with_checkpoint(store)
        assert checked.ok and checked.records == 1 and checked.checkpoint["seq"] == 0


def test_checkpoints_are_cheap_and_only_check_what_is_new(trail: Trail) -> None:
    """After the first checkpoint, one after each promotion checks only the records since the
    last one, not the whole chain: against a 50,000-record chain a full verify takes a
    thousand times longer than that, so the comparison in one run holds on a loaded machine
    (an absolute bound in seconds would not)."""
    import time

    with trail.open() as store:
        store._bulk_append(  # type: ignore[attr-defined]
            {"action": "promoted", "model": "alpha", "reason": "r", "actor": "system"}
            for _ in range(50_000)
        )
        write_checkpoint(store, actor="system", reason="first")
        start = time.perf_counter()
        full = store.verify()
        full_s = time.perf_counter() - start
        times = []
        for _ in range(5):
            fill(store, 1)
            start = time.perf_counter()
            write_checkpoint(store, actor="system", reason="promotion alpha")
            times.append(time.perf_counter() - start)
        assert full.ok and min(times) < full_s / 2, (times, full_s)


def test_file_anchor_is_outside_the_home_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlsteward_home: Path
) -> None:
    from mlsteward.config import settings

    monkeypatch.delenv("MLSTEWARD_AUDIT_ANCHOR", raising=False)
    monkeypatch.delenv("MLSTEWARD_AUDIT_URL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with audit_store() as store:
        fill(store, 1)
        write_checkpoint(store, actor="system", reason="hourly")
    anchor = open_anchor(settings.audit_anchor_url())
    assert isinstance(anchor, FileAnchor)
    assert anchor.path.is_relative_to(tmp_path / "state" / "mlsteward" / "anchors")
    assert not anchor.path.is_relative_to(mlsteward_home)
    assert len(anchor.path.read_text().splitlines()) == 1


def test_the_api_reports_the_checkpoint_it_checked_against(trail: Trail) -> None:
    from fastapi.testclient import TestClient

    from mlsteward.api.app import create_app
    from mlsteward.identity import clear_cache, identity_store, local_principal

    clear_cache()
    with identity_store() as identities:
        identities.add_principal("vera", kind="user", roles=["viewer"], by=local_principal())
        token = identities.create_token("user:vera", by=local_principal(), description="t")[1]
    headers = {"Authorization": f"Bearer {token}"}
    with trail.open() as store:
        fill(store, 3)
        checkpoint = write_checkpoint(store, actor="system", reason="hourly")
    with TestClient(create_app()) as client:
        found = client.get("/api/v1/audit/verify", headers=headers).json()
        assert found["ok"] and found["checkpoint"]["seq"] == checkpoint.seq
        assert found["checkpoint"]["key_id"] == checkpoint.key_id and found["warning"] is None
        plain = client.get(
            "/api/v1/audit/verify", params={"checkpoint": "false"}, headers=headers
        ).json()
        assert plain["ok"] and plain.get("checkpoint") is None
        with trail.open() as store:
            trail.rewrite_everything(store, "nothing happened")
        found = client.get("/api/v1/audit/verify", headers=headers).json()
        assert not found["ok"] and "was rewritten since that checkpoint" in found["problem"]


def test_records_cut_from_the_end_with_the_head_marker_moved_fail(trail: Trail) -> None:
    """Deleting the newest records and moving the head marker back verifies as a chain; the
    checkpoint covering them exposes it."""
    with trail.open() as store:
        fill(store, 6)
        checkpoint = write_checkpoint(store, actor="system", reason="hourly")
        kept = store.query()[2]
        assert store.verify().ok
    table = "audit" if trail.kind == "sqlite" else "mlsteward_audit"
    trail.raw_write(
        [
            (f"DELETE FROM {table} WHERE seq > ?", (kept.seq,)),
            (f"UPDATE {table}_head SET seq = ?, hash = ?, ts = ?", (kept.seq, kept.hash, kept.ts)),
        ]
    )
    with trail.open() as store:
        assert store.verify().ok  # the chain alone: three intact records
        checked = verify_with_checkpoint(store)
    assert not checked.ok and f"cut before record {checkpoint.seq}" in (checked.problem or "")

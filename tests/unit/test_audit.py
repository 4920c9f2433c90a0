"""The SQLite audit store: append/query, the hash chain, tamper detection, concurrency, locks.

Tampering is done the way an attacker with the file would do it: a raw sqlite3 connection that
drops the append-only triggers first, then edits, deletes, inserts or reorders rows.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlsteward.audit import (
    Action,
    AuditError,
    AuditRecord,
    AuditStore,
    VerifyResult,
    audit_store,
    default_actor,
    verify_pool,
    verify_records,
)
from mlsteward.audit.records import GENESIS_HASH, canonical_bytes, compute_hash
from mlsteward.audit.sqlite_store import SQLiteAuditStore
from tests.support.forking import in_child

FORK = multiprocessing.get_context("fork")
SQLITE = "mlsteward.audit.sqlite_store"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def store(mlsteward_home: Path) -> Iterator[SQLiteAuditStore]:
    s = audit_store()
    assert isinstance(s, SQLiteAuditStore)
    yield s
    s.close()


def fill(store: AuditStore, n: int = 10) -> list[AuditRecord]:
    actions = [Action.VALIDATION_PASSED, Action.PROMOTED, Action.ROLLBACK]
    return [
        store.append(
            actions[i % 3],
            model=("alpha", "beta")[i % 2],
            version=i // 2 + 1,
            reason=f"decision {i + 1}",
            actor="tester",
            details={"i": i + 1, "auc": 0.8 + i / 100},
        )
        for i in range(n)
    ]


def tamper(store: SQLiteAuditStore, *statements: tuple) -> None:
    """Raw writes to the file, with the append-only triggers dropped first."""
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for statement in statements:
        conn.execute(*statement)
    conn.close()


def row(store: SQLiteAuditStore, seq: int) -> tuple:
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(
            "SELECT seq, ts, actor, action, model, version, reason, details, prev_hash, hash "
            "FROM audit WHERE seq = ?",
            (seq,),
        ).fetchone()
    finally:
        conn.close()


# ----------------------------------------------------------------------------- basics


def test_default_url_is_under_home_and_env_overrides(
    mlsteward_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = audit_store()
    try:
        assert s.url == f"sqlite:///{mlsteward_home.resolve() / 'audit' / 'audit.db'}"
        assert (mlsteward_home / "audit" / "audit.db").is_file()
    finally:
        s.close()
    other = tmp_path / "elsewhere" / "trail.db"
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", f"sqlite:///{other}")
    s = audit_store()
    try:
        assert s.url == f"sqlite:///{other}" and other.is_file()
        assert isinstance(s, AuditStore)
    finally:
        s.close()


def test_append_returns_the_stored_record(store: SQLiteAuditStore) -> None:
    before = datetime.now(UTC)
    rec = store.append(
        Action.PROMOTED,
        model="heart_disease",
        version=7,
        reason="auc 0.91 >= 0.85",
        details={"auc": np.float32(0.5), "n": np.int64(3), "gap": float("nan"), "ok": True},
    )
    assert (rec.seq, rec.action, rec.model, rec.version) == (1, "promoted", "heart_disease", "7")
    assert rec.actor == default_actor() and rec.actor
    assert rec.prev_hash == GENESIS_HASH
    # the default actor is the local operator, whom nothing verified: the record says so
    assert rec.actor.startswith("local:")
    assert rec.details == {"auc": 0.5, "n": 3, "gap": "NaN", "ok": True, "authenticated": False}
    assert TS_RE.match(rec.ts)
    ts = datetime.fromisoformat(rec.ts)
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC) + timedelta(seconds=1)
    assert rec.hash == rec.recompute_hash() == compute_hash(
        1, rec.ts, rec.actor, "promoted", "heart_disease", "7", rec.reason,
        '{"auc":0.5,"authenticated":false,"gap":"NaN","n":3,"ok":true}', GENESIS_HASH,
    )  # fmt: skip
    assert store.query() == [rec]
    as_dict = rec.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict and as_dict["hash"] == rec.hash
    named = store.append(Action.PROMOTED, model="m", actor="user:alice", details={"a": 1})
    assert named.details == {"a": 1}


def test_canonical_bytes_are_documented_json_array() -> None:
    raw = canonical_bytes(1, "2025-01-31T14:05:09.123456Z", "ä", "promoted", None, "2", "r",
                          '{"a":1}', GENESIS_HASH)  # fmt: skip
    assert (
        raw
        == (
            '["mlsteward-audit/1",1,"2025-01-31T14:05:09.123456Z","ä","promoted",null,"2","r",'
            '"{\\"a\\":1}","' + GENESIS_HASH + '"]'
        ).encode()
    )


def test_query_filters_limit_since_and_last(store: SQLiteAuditStore) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    store._bulk_append(
        {
            "action": ("validation_passed", "promoted", "rollback")[i % 3],
            "model": ("alpha", "beta")[i % 2],
            "version": str(i // 2 + 1),
            "actor": "bulk",
            "ts": (t0 + timedelta(days=i)).isoformat(timespec="microseconds")[:-6] + "Z",
        }
        for i in range(12)
    )
    alpha = store.query(model="alpha")
    assert [r.seq for r in alpha] == [1, 3, 5, 7, 9, 11]
    assert [r.seq for r in store.query(action=Action.PROMOTED)] == [2, 5, 8, 11]
    assert [r.seq for r in store.query(model="alpha", action="promoted")] == [5, 11]
    assert [r.seq for r in store.query(version="3")] == [5, 6]
    assert [r.seq for r in store.query(model="alpha", limit=2)] == [9, 11]  # last 2, oldest first
    assert store.query(limit=0) == []
    assert [r.seq for r in store.query(limit=100)] == list(range(1, 13))
    since = t0 + timedelta(days=9)
    assert [r.seq for r in store.query(since=since)] == [10, 11, 12]
    assert [r.seq for r in store.query(since="2025-01-10T00:00:00Z")] == [10, 11, 12]
    assert [r.seq for r in store.query(since="2025-01-10")] == [10, 11, 12]
    assert [r.seq for r in store.query(since=since.replace(tzinfo=None), model="beta")] == [10, 12]
    assert store.last().seq == 12
    assert store.last(model="alpha", action="rollback").seq == 9
    assert store.last(model="nobody") is None
    assert store.query(model="nobody") == []


def test_hashes_link_into_a_chain(store: SQLiteAuditStore) -> None:
    records = fill(store, 6)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
        assert after.ts >= before.ts
    assert all(r.hash == r.recompute_hash() for r in records)
    assert len({r.hash for r in records}) == 6


def test_verify_clean_chain_and_checkpoint(store: SQLiteAuditStore) -> None:
    assert store.verify() == VerifyResult(True, 0, None, None, None)
    records = fill(store, 8)
    result = store.verify()
    assert result == VerifyResult(True, 8, records[-1].hash, None, None)
    assert result.to_dict()["head_hash"] == records[-1].hash
    assert store.verify(expect_head=records[3].hash).ok  # an older checkpoint is still in it
    bad = store.verify(expect_head="f" * 64)
    assert not bad.ok and "is not in the chain" in bad.problem


def test_triggers_make_records_append_only(store: SQLiteAuditStore) -> None:
    fill(store, 2)
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET reason = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 2")
    conn.close()
    assert store.verify().ok


# ----------------------------------------------------------------------------- tampering


def _forge(store: SQLiteAuditStore, seq: int, prev_hash: str) -> tuple:
    """A forged record that is internally valid (its own hash is right)."""
    fields = (seq, "2025-06-01T00:00:00.000000Z", "mallory", "promoted", "alpha", "99",
              "forged", "{}", prev_hash)  # fmt: skip
    return (*fields, compute_hash(*fields))


def _shift_from(seq: int) -> list[tuple]:
    return [
        ("UPDATE audit SET seq = -seq WHERE seq >= ?", (seq,)),
        ("UPDATE audit SET seq = 1 - seq WHERE seq < 0",),
    ]


def _insert(r: tuple) -> tuple:
    return ("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", r)


def case_edit_reason(s: SQLiteAuditStore) -> list[tuple]:
    return [("UPDATE audit SET reason = 'approved by nobody' WHERE seq = 4",)]


def case_edit_details(s: SQLiteAuditStore) -> list[tuple]:
    return [('UPDATE audit SET details = \'{"auc":0.99,"i":6}\' WHERE seq = 6',)]


def case_delete_middle(s: SQLiteAuditStore) -> list[tuple]:
    return [("DELETE FROM audit WHERE seq = 5",)]


def case_insert_forged(s: SQLiteAuditStore) -> list[tuple]:
    forged = _forge(s, 6, row(s, 5)[9])
    last = row(s, 10)
    return [
        *_shift_from(6),
        _insert(forged),
        ("UPDATE audit_head SET seq = 11, hash = ?", (last[9],)),
    ]


def case_swap(s: SQLiteAuditStore) -> list[tuple]:
    return [
        ("UPDATE audit SET seq = -1 WHERE seq = 3",),
        ("UPDATE audit SET seq = 3 WHERE seq = 4",),
        ("UPDATE audit SET seq = 4 WHERE seq = -1",),
    ]


def case_truncate_tail(s: SQLiteAuditStore) -> list[tuple]:
    return [("DELETE FROM audit WHERE seq >= 9",)]


def case_head_deleted(s: SQLiteAuditStore) -> list[tuple]:
    return [("DELETE FROM audit_head",)]


def case_appended_behind_back(s: SQLiteAuditStore) -> list[tuple]:
    return [_insert(_forge(s, 11, row(s, 10)[9]))]


def case_last_replaced(s: SQLiteAuditStore) -> list[tuple]:
    return [("DELETE FROM audit WHERE seq = 10",), _insert(_forge(s, 10, row(s, 9)[9]))]


def case_edited_and_rehashed(s: SQLiteAuditStore) -> list[tuple]:
    return [("DELETE FROM audit WHERE seq = 5",), _insert(_forge(s, 5, row(s, 4)[9]))]


TAMPERING = {
    case_edit_reason: (4, r"^record 4 was edited: stored hash \w+… != recomputed \w+…$"),
    case_edit_details: (6, r"^record 6 was edited"),
    case_delete_middle: (5, r"^sequence gap after 4 \(record 5 deleted\)$"),
    case_insert_forged: (6, r"^record 7: .*links to record 5, so record 6 was inserted"),
    case_swap: (3, r"^record 3: .*links to record 4, which now comes after it \(records reord"),
    case_truncate_tail: (9, r"^chain ends at 8 but the head marker says 10 \(records removed"),
    case_head_deleted: (None, r"head marker is missing"),
    case_appended_behind_back: (11, r"records 11\.\.11 were added outside the audit store"),
    case_last_replaced: (10, r"head marker's hash .* != record 10's hash .*last record was rep"),
    case_edited_and_rehashed: (6, r"^record 6: previous-hash link broken \(a record before it"),
}


@pytest.mark.parametrize("case", list(TAMPERING), ids=lambda f: f.__name__[5:])
def test_verify_reports_first_broken_link(store: SQLiteAuditStore, case) -> None:
    fill(store, 10)
    assert store.verify().ok
    tamper(store, *case(store))
    result = store.verify()
    first_bad, pattern = TAMPERING[case]
    assert not result.ok and result.head_hash is None
    assert result.first_bad_seq == first_bad, result.problem
    assert re.search(pattern, result.problem), result.problem
    # helper processes checking seq ranges in parallel reach the same verdict
    with SQLiteAuditStore(store.url, verify_workers=3) as other:
        parallel = other.verify()
    assert (parallel.first_bad_seq, parallel.problem) == (result.first_bad_seq, result.problem)


def test_full_rewrite_is_only_caught_by_a_checkpoint(store: SQLiteAuditStore) -> None:
    """The documented limit: rewriting every hash from the change onwards, head included,
    yields a valid chain; a head hash kept elsewhere exposes it."""
    records = fill(store, 6)
    checkpoint = store.verify().head_hash
    statements: list[tuple] = [("DELETE FROM audit WHERE seq >= 3",)]
    prev = records[1].hash
    for r in records[2:]:
        reason = "rewritten" if r.seq == 3 else r.reason
        details = json.dumps(r.details, sort_keys=True, separators=(",", ":"))
        fields = (r.seq, r.ts, r.actor, r.action, r.model, r.version, reason, details, prev)
        prev = compute_hash(*fields)
        statements.append(_insert((*fields, prev)))
    statements.append(("UPDATE audit_head SET hash = ?", (prev,)))
    tamper(store, *statements)
    assert store.verify().ok
    caught = store.verify(expect_head=checkpoint)
    assert not caught.ok and "is not in the chain" in caught.problem
    assert store.query(model=records[2].model, limit=1)  # still readable


def test_large_chain_parallel_verify_matches_sequential(store: SQLiteAuditStore) -> None:
    store._bulk_append({"action": "promoted", "model": f"m{i % 3}"} for i in range(3000))
    with (
        SQLiteAuditStore(store.url, verify_workers=1) as one,
        SQLiteAuditStore(store.url, verify_workers=2) as two,
    ):
        seq_result = one.verify()
        assert seq_result == two.verify() and seq_result.records == 3000 and seq_result.ok
        tamper(store, ("DELETE FROM audit WHERE seq = 1501",))  # the first record of range 2
        par_result = two.verify()
    assert par_result.problem == "sequence gap after 1500 (record 1501 deleted)"


def test_verify_helpers_run_and_failed_helpers_fall_back(
    store: SQLiteAuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = fill(store, 6)
    helper = verify_pool._start_helper(SQLITE, store.url, 2, 6, None, {})
    segment = verify_pool._collect_helper(helper)
    assert segment is not None, "the helper process failed"
    assert (segment.count, segment.first_row[0], segment.last_seq) == (4, 3, 6)
    assert segment.last_hash == records[-1].hash and segment.problem is None
    monkeypatch.setattr(verify_pool, "_start_helper", lambda *args: None)
    with SQLiteAuditStore(store.url, verify_workers=3) as other:
        assert (
            other.verify() == store.verify() == VerifyResult(True, 6, records[-1].hash, None, None)
        )


def test_timestamps_never_go_back(store: SQLiteAuditStore) -> None:
    future = "2999-01-01T00:00:00.000000Z"  # e.g. written by a host whose clock ran ahead
    store._bulk_append([{"action": "promoted", "ts": future}])
    rec = store.append("rollback")
    assert rec.ts == future
    assert [r.seq for r in store.query(since="2998-12-31")] == [1, 2]
    assert store.verify().ok


def test_exported_records_verify(store: SQLiteAuditStore) -> None:
    exported = [r.to_dict() for r in fill(store, 5)]
    assert verify_records(exported).ok
    assert verify_records(exported, expect_head=exported[-1]["hash"]).ok
    exported[2]["details"]["auc"] = 1.0
    result = verify_records(exported)
    assert (result.ok, result.first_bad_seq) == (False, 3)


# ----------------------------------------------------------------------------- concurrency


def _append_many(url: str, worker: int, n: int, barrier) -> None:
    s = audit_store(url)
    barrier.wait()
    for i in range(n):
        s.append("validation_passed", model=f"w{worker}", version=i, actor=f"worker-{worker}")
    s.close()


def test_concurrent_processes_never_fork_the_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared' / 'audit.db'}"  # created by the racing workers
    barrier = FORK.Barrier(4)
    procs = [
        FORK.Process(target=in_child(_append_many), args=(url, w, 50, barrier)) for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    s = audit_store(url)
    records = s.query()
    assert [r.seq for r in records] == list(range(1, 201))
    for w in range(4):
        assert [r.version for r in s.query(model=f"w{w}")] == [str(i) for i in range(50)]
    assert s.verify() == VerifyResult(True, 200, records[-1].hash, None, None)
    s.close()


def test_threads_share_one_store(store: SQLiteAuditStore) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                store.append("promoted", model=f"t{t}", version=i)
                store.query(model=f"t{t}", limit=3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r.seq for r in store.query()] == list(range(1, 101))
    assert store.verify().ok


def _append_in_child(s: SQLiteAuditStore) -> None:
    s.append("rollback", model="child")


def test_store_object_survives_fork(store: SQLiteAuditStore) -> None:
    store.append("promoted", model="parent")
    child = FORK.Process(target=in_child(_append_in_child), args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    store.append("promoted", model="parent")  # the parent's connection is untouched
    assert [r.model for r in store.query()] == ["parent", "child", "parent"]
    assert store.verify().ok


def _hold_lock(url: str, name: str, held, released) -> None:
    s = audit_store(url)
    with s.lock(name):
        held.set()
        time.sleep(0.6)
        released.value = time.time()
    s.close()


def test_lock_excludes_another_process(store: SQLiteAuditStore) -> None:
    held, released = FORK.Event(), FORK.Value("d", 0.0)
    child = FORK.Process(
        target=in_child(_hold_lock), args=(store.url, "promote:alpha", held, released)
    )
    child.start()
    try:
        assert held.wait(20)
        start = time.monotonic()
        timeout = r"timed out after 0.2 s waiting for lock 'promote:alpha'"
        with pytest.raises(AuditError, match=timeout), store.lock("promote:alpha", timeout=0.2):
            pass
        assert time.monotonic() - start >= 0.19
        with store.lock("promote:beta", timeout=0):  # other names are independent
            pass
        with store.lock("promote:alpha", timeout=10):
            acquired = time.time()
        assert released.value > 0 and acquired >= released.value
    finally:
        child.join(20)
    assert child.exitcode == 0
    assert (store.path.parent / "locks").is_dir()


def test_lock_excludes_another_thread(store: SQLiteAuditStore) -> None:
    order: list[str] = []
    inside = threading.Event()

    def other() -> None:
        inside.wait(5)
        with store.lock("retrain:alpha", timeout=5):
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    with store.lock("retrain:alpha"):
        inside.set()
        time.sleep(0.2)
        order.append("main")
    t.join(10)
    assert order == ["main", "other"]


# ----------------------------------------------------------------------------- bad input


def test_bad_input_fails_clearly(store: SQLiteAuditStore, tmp_path: Path) -> None:
    with pytest.raises(
        AuditError, match=r"unknown audit action 'promote'; valid actions: .*promot"
    ):
        store.append("promote", model="alpha")
    with pytest.raises(AuditError, match="unknown audit action"):
        store.query(action="nope")
    with pytest.raises(AuditError, match=r"details\['model'\] is a object"):
        store.append("promoted", details={"model": object()})
    with pytest.raises(AuditError, match="details must be a dict"):
        store.append("promoted", details=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(AuditError, match="since='yesterday' is not an ISO-8601"):
        store.query(since="yesterday")
    with pytest.raises(AuditError, match="limit must be"):
        store.query(limit=-1)
    with pytest.raises(AuditError, match="unsupported audit store URL mysql://"):
        audit_store("mysql://root@localhost/audit")
    assert store.query() == []  # nothing half-written
    store.close()
    with pytest.raises(AuditError, match="is closed"):
        store.append("promoted")


def test_fencing_tokens_grow_and_a_stale_holder_is_stopped(store: SQLiteAuditStore) -> None:
    with store.lock("promote:alpha") as first:
        first.check()  # still the newest holder
    with store.lock("promote:alpha") as second:
        assert second.token == first.token + 1
        with pytest.raises(AuditError, match=r"taken by another holder \(fencing token 1, now 2\)"):
            first.check()  # a holder that lost the lock must not write
        second.check()
    with store.lock("promote:beta") as other:
        assert other.token == 1  # tokens are per lock name

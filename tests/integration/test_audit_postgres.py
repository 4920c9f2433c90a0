"""The PostgreSQL audit store against the real server at 127.0.0.1:5432.

The module creates its own database and drops it at the end, even when a test fails. Each test
uses its own table prefix in that database, so tests stay independent. PostgreSQL is part of
this environment: if it is unreachable these tests fail rather than skip.
"""

from __future__ import annotations

import itertools
import multiprocessing
import re
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from mlsteward.audit import Action, AuditError, VerifyResult, audit_store
from mlsteward.audit.postgres_store import PostgresAuditStore
from mlsteward.audit.records import compute_hash
from mlsteward.audit.verify_pool import _collect_helper, _start_helper
from tests.support.forking import in_child
from tests.support.no_prefect import prefect_console_on_real_stderr, prefect_harness  # noqa: F401

PG = "mlsteward.audit.postgres_store"
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def prefix() -> str:
    return f"audit_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(module_postgres_database: str, prefix: str) -> Iterator[PostgresAuditStore]:
    s = PostgresAuditStore(module_postgres_database, prefix=prefix)
    yield s
    s.close()


def fill(store: PostgresAuditStore, n: int = 10) -> list:
    return [
        store.append(
            (Action.VALIDATION_PASSED, Action.PROMOTED)[i % 2],
            model=("alpha", "beta")[i % 2],
            version=i + 1,
            reason=f"decision {i + 1}",
            actor="tester",
            details={"i": i + 1},
        )
        for i in range(n)
    ]


def tamper(store: PostgresAuditStore, *statements: tuple) -> None:
    """Raw writes with the append-only triggers disabled, as a database owner could."""
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {store.prefix} DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(*statement)
        conn.execute(f"ALTER TABLE {store.prefix} ENABLE TRIGGER USER")


def test_factory_append_query_last_and_clean_verify(module_postgres_database: str) -> None:
    store = audit_store(module_postgres_database)
    try:
        assert isinstance(store, PostgresAuditStore) and store.prefix == "mlsteward_audit"
        records = fill(store, 6)
        assert [r.seq for r in records] == list(range(1, 7))
        assert records[0].prev_hash == "0" * 64
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
        assert all(r.hash == r.recompute_hash() for r in records)
        assert store.query() == records
        assert [r.seq for r in store.query(model="alpha")] == [1, 3, 5]
        assert [r.seq for r in store.query(action="promoted", limit=2)] == [4, 6]
        assert [r.seq for r in store.query(version="3")] == [3]
        assert [r.seq for r in store.query(since=records[4].ts)] == [5, 6]
        assert store.last(model="alpha").seq == 5
        assert store.last(model="nobody") is None
        assert store.verify() == VerifyResult(True, 6, records[-1].hash, None, None)
        assert store.verify(expect_head=records[2].hash).ok
        helper = _start_helper(
            PG, module_postgres_database, 3, 6, None, {"prefix": "mlsteward_audit"}
        )
        segment = _collect_helper(helper)  # a parallel-verify helper really runs
        assert segment is not None and segment.problem is None
        assert (segment.count, segment.last_hash) == (3, records[-1].hash)
    finally:
        store.close()
    with psycopg.connect(module_postgres_database) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"mlsteward_audit", "mlsteward_audit_head"} <= tables


def test_triggers_refuse_update_delete_truncate(store: PostgresAuditStore) -> None:
    fill(store, 2)
    with psycopg.connect(store.url, autocommit=True) as conn:
        for statement in (
            f"UPDATE {store.prefix} SET reason = 'x'",
            f"DELETE FROM {store.prefix}",
            f"TRUNCATE {store.prefix}",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
    assert store.verify().ok


def _forged(seq: int, prev_hash: str) -> tuple:
    fields = (seq, "2025-06-01T00:00:00.000000Z", "mallory", "promoted", "alpha", "99",
              "forged", "{}", prev_hash)  # fmt: skip
    return (*fields, compute_hash(*fields))


CASES = {
    "edit_reason": (4, r"^record 4 was edited: stored hash"),
    "delete_middle": (5, r"^sequence gap after 4 \(record 5 deleted\)$"),
    "insert_forged": (6, r"^record 7: .*links to record 5, so record 6 was inserted"),
    "swap": (3, r"^record 3: .*links to record 4, which now comes after it"),
    "truncate_tail": (10, r"^chain ends at 9 but the head marker says 10"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verify_reports_first_broken_link(store: PostgresAuditStore, case: str) -> None:
    records = fill(store, 10)
    t = store.prefix
    statements: list[tuple] = {
        "edit_reason": [(f"UPDATE {t} SET reason = 'approved by nobody' WHERE seq = 4",)],
        "delete_middle": [(f"DELETE FROM {t} WHERE seq = 5",)],
        "insert_forged": [
            (f"UPDATE {t} SET seq = seq + 100 WHERE seq >= 6",),
            (f"UPDATE {t} SET seq = seq - 99 WHERE seq >= 106",),
            (
                f"INSERT INTO {t} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _forged(6, records[4].hash),
            ),
            (f"UPDATE {t}_head SET seq = 11",),
        ],
        "swap": [
            (f"UPDATE {t} SET seq = -1 WHERE seq = 3",),
            (f"UPDATE {t} SET seq = 3 WHERE seq = 4",),
            (f"UPDATE {t} SET seq = 4 WHERE seq = -1",),
        ],
        "truncate_tail": [(f"DELETE FROM {t} WHERE seq = 10",)],
    }[case]
    tamper(store, *statements)
    first_bad, pattern = CASES[case]
    for workers in (1, 2):  # one pass here, and seq ranges in parallel helper processes
        with PostgresAuditStore(store.url, prefix=t, verify_workers=workers) as s:
            result = s.verify()
        assert not result.ok and result.first_bad_seq == first_bad, result
        assert result.problem and re.search(pattern, result.problem), result


def test_full_rewrite_is_caught_by_a_checkpoint(store: PostgresAuditStore) -> None:
    records = fill(store, 4)
    checkpoint = store.verify().head_hash
    t = store.prefix
    prev = records[0].hash
    statements: list[tuple] = [(f"DELETE FROM {t} WHERE seq >= 2",)]
    for r in records[1:]:
        fields = (r.seq, r.ts, r.actor, r.action, r.model, r.version, "rewritten",
                  f'{{"i":{r.details["i"]}}}', prev)  # fmt: skip
        prev = compute_hash(*fields)
        statements.append((f"INSERT INTO {t} VALUES ({', '.join(['%s'] * 10)})", (*fields, prev)))
    statements.append((f"UPDATE {t}_head SET hash = %s", (prev,)))
    tamper(store, *statements)
    assert store.verify().ok  # the documented limit of a hash chain
    caught = store.verify(expect_head=checkpoint)
    assert not caught.ok and "is not in the chain" in caught.problem


def _append_many(url: str, prefix: str, worker: int, n: int, barrier) -> None:
    s = PostgresAuditStore(url, prefix=prefix)
    barrier.wait()
    for i in range(n):
        s.append("validation_passed", model=f"p{worker}", version=i)
    s.close()


def test_concurrent_processes_and_threads_never_fork_the_chain(
    module_postgres_database: str, prefix: str
) -> None:
    """Two processes (each creating the tables at once) and three threads sharing one store."""
    barrier = FORK.Barrier(3)
    procs = [
        FORK.Process(
            target=in_child(_append_many), args=(module_postgres_database, prefix, w, 40, barrier)
        )
        for w in range(2)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    shared = PostgresAuditStore(module_postgres_database, prefix=prefix)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                shared.append("promoted", model=f"t{t}", version=i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
    assert errors == [] and [p.exitcode for p in procs] == [0, 0]
    records = shared.query()
    assert [r.seq for r in records] == list(range(1, 141))
    for w in range(2):
        assert [r.version for r in shared.query(model=f"p{w}")] == [str(i) for i in range(40)]
    assert shared.verify() == VerifyResult(True, 140, records[-1].hash, None, None)
    shared.close()


def _append_in_child(s: PostgresAuditStore) -> None:
    s.append("rollback", model="child")


def test_store_object_survives_fork(store: PostgresAuditStore) -> None:
    """A child given the parent's store opens its own session and leaves the parent's alone."""
    store.append("promoted", model="parent")
    child = FORK.Process(target=in_child(_append_in_child), args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    store.append("promoted", model="parent")
    assert [r.model for r in store.query()] == ["parent", "child", "parent"]
    assert store.verify().ok


def _hold_lock(url: str, prefix: str, name: str, held, released) -> None:
    s = PostgresAuditStore(url, prefix=prefix)
    with s.lock(name):
        held.set()
        time.sleep(0.6)
        released.value = time.time()
    s.close()


def test_advisory_lock_excludes_another_process(store: PostgresAuditStore) -> None:
    name = f"promote:{store.prefix}"
    held, released = FORK.Event(), FORK.Value("d", 0.0)
    child = FORK.Process(
        target=in_child(_hold_lock), args=(store.url, store.prefix, name, held, released)
    )
    child.start()
    try:
        assert held.wait(20)
        for timeout in (0.2, 0):
            with (
                pytest.raises(AuditError, match=f"waiting for lock '{name}'"),
                store.lock(name, timeout=timeout),
            ):
                pass
        with store.lock(f"{name}:other", timeout=0):
            pass
        with store.lock(name, timeout=10):
            acquired = time.time()
        assert released.value > 0 and acquired >= released.value
        with psycopg.connect(store.url, autocommit=True) as conn:  # released on exit
            free = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
            assert conn.execute(free, (name,)).fetchone()[0] is True
    finally:
        child.join(20)
    assert child.exitcode == 0


def test_unreachable_server_names_url_without_password() -> None:
    with pytest.raises(AuditError) as caught:
        audit_store("postgresql://auditor:s3cret-pw@127.0.0.1:1/audit")
    message = str(caught.value)
    assert "postgresql://auditor:***@127.0.0.1:1/audit" in message
    assert "s3cret-pw" not in message and "\n" not in message


def test_a_dropped_lock_connection_fails_the_fence_check(store: PostgresAuditStore) -> None:
    """The PostgreSQL server drops the promoter's lock connection: the advisory lock is gone,
    a second promoter takes it, and the first one's check before its alias write fails."""
    name = f"promote:{store.prefix}"
    with store.lock(name, timeout=5) as fence:
        fence.check()
        with psycopg.connect(store.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND objid::bigint = (hashtextextended(%s, 0) & 4294967295)",
                (name,),
            )
        with store.lock(name, timeout=5) as second:  # the lock was released with the connection
            assert second.token == fence.token + 1
        with pytest.raises(AuditError, match="lost the lock"):
            fence.check()

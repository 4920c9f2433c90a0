"""The delivery log on PostgreSQL (``MLSTEWARD_AUDIT_URL=postgresql://…``), on the real server
at 127.0.0.1:5432, in a database of its own that is dropped afterwards."""

from __future__ import annotations

import threading

import psycopg

from mlsteward.gateway.deliveries import TABLE, PostgresDeliveryLog, delivery_log
from tests.support.no_prefect import prefect_console_on_real_stderr, prefect_harness  # noqa: F401


def test_concurrent_claims_of_one_delivery_on_postgres(postgres_database: str) -> None:
    logs = [delivery_log(postgres_database) for _ in range(4)]
    assert all(isinstance(log, PostgresDeliveryLog) for log in logs)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(logs[i % 4].claim("delivery-1", "digest-1", "push"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert not logs[0].claim("delivery-2", "digest-1", "push")
    logs[1].release("delivery-1")
    assert logs[2].claim("delivery-1", "digest-1", "push")
    with psycopg.connect(postgres_database) as conn:
        rows = conn.execute(f"SELECT delivery_id, event FROM {TABLE}").fetchall()
    assert rows == [("delivery-1", "push")]
    for log in logs:
        log.close()

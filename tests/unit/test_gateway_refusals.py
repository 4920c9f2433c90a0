"""Refusals before authentication are counted, not recorded one by one: the real app on the
real SQLite audit store in the test's home. Every request here is refused before the gateway
would call Prefect, so no server is needed."""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mlsteward.audit import Action, AuditError, AuditRecord, audit_store
from mlsteward.audit.sqlite_store import SQLiteAuditStore
from mlsteward.config.settings import audit_url
from mlsteward.gateway.app import create_app, flush_refusals
from mlsteward.gateway.client import build_request
from mlsteward.gateway.refusals import RefusalTally, refusals_counter
from mlsteward.gateway.settings import GatewaySettings
from mlsteward.gateway.signing import sign
from tests.support.governance import MODEL
from tests.support.stack import wait_for

SECRET = "refusals-secret-0123456789"
HOOK = "/hooks/ci"
FLOOD = 2_000


@pytest.fixture
def app() -> FastAPI:
    settings = GatewaySettings(secret=SECRET, api_url="http://127.0.0.1:9/api", max_bytes=4096)
    return create_app(settings)


def refusal_counts(client: TestClient) -> dict[str, float]:
    """``mlsteward_webhook_refusals_total`` by reason, as /metrics serves it."""
    return counted(client.get("/metrics").text)


def counted(metrics: str) -> dict[str, float]:
    families = text_string_to_metric_families(metrics)
    return {
        sample.labels["reason"]: sample.value
        for family in families
        if family.name == "mlsteward_webhook_refusals"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def all_records() -> list[AuditRecord]:
    with audit_store() as store:
        return store.query()


def test_an_unsigned_flood_leaves_a_bounded_trail_and_a_promotion_write_goes_through(
    app: FastAPI,
) -> None:
    body = json.dumps({"action": "train", "model": MODEL, "timestamp": time.time()}).encode()
    done = 0
    done_lock = threading.Lock()
    flood_started = threading.Event()
    statuses: list[int] = []

    def flood(client: TestClient, n: int, signature: str | None) -> None:
        nonlocal done
        headers = {"X-Mlsteward-Delivery": "anonymous"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        for _ in range(n):
            status = client.post(HOOK, content=body, headers=headers).status_code
            with done_lock:
                statuses.append(status)
                done += 1
                if done >= 200:
                    flood_started.set()

    promoted: list[AuditRecord] = []

    def promote() -> None:  # what governance.promotion does: a write under the model's lock
        flood_started.wait()
        with audit_store() as store, store.lock(f"promote:{MODEL}"):
            promoted.append(
                store.append(Action.PROMOTED, model=MODEL, version=1, reason="gates passed")
            )

    with TestClient(app) as client:
        senders = [
            threading.Thread(target=flood, args=(client, FLOOD // 4, signature))
            for signature in (None, None, "sha256=" + "0" * 64, sign(body, "not-the-secret"))
        ]
        promotion = threading.Thread(target=promote)
        for thread in [*senders, promotion]:
            thread.start()
        promotion.join(timeout=120)
        for thread in senders:
            thread.join(timeout=300)
        assert not promotion.is_alive() and not any(t.is_alive() for t in senders)

        assert statuses == [401] * FLOOD
        assert refusal_counts(client) == {"missing_signature": 1000, "bad_signature": 1000}
        # Nothing was written on the request path: the trail holds the promotion alone.
        assert [r.action for r in all_records()] == [Action.PROMOTED]
        assert [r.seq for r in promoted] == [1]

        record = flush_refusals(app)
        assert record is not None and record.action == Action.WEBHOOK_REFUSALS
        assert flush_refusals(app) is None  # nothing new: no second record
    # Stopping the app wrote nothing more: nothing was counted after the flush.
    records = all_records()
    assert [r.action for r in records] == [Action.PROMOTED, Action.WEBHOOK_REFUSALS]
    assert records[1] == record
    assert record.actor == "service:ci" and record.model is None
    details = record.details
    assert details["counts"] == {"bad_signature": 1000, "missing_signature": 1000}
    assert details["total"] == FLOOD and details["remote_addresses"] == ["testclient"]
    assert details["first_seen"] <= details["last_seen"]
    assert "2000 request(s) refused before authentication" in record.reason
    with audit_store() as store:
        assert store.verify().ok


def test_every_kind_of_unauthenticated_refusal_is_counted_and_written_at_shutdown(
    app: FastAPI,
) -> None:
    def signed(timestamp: float) -> tuple[bytes, dict[str, str]]:
        now = dt.datetime.fromtimestamp(timestamp, dt.UTC)
        return build_request("train", MODEL, {}, SECRET, now=now)

    stale, stale_headers = signed(time.time() - 3600)
    ahead, ahead_headers = signed(time.time() + 3600)
    with TestClient(app) as client:
        answers = [
            client.post(HOOK, content=b"x" * 5000),
            client.post(HOOK, content=iter([b"x" * 3000, b"x" * 3000])),  # no length declared
            client.post(HOOK, content=stale, headers=stale_headers),
            client.post(HOOK, content=ahead, headers=ahead_headers),
            client.post(HOOK, content=b"{}"),
        ]
        assert [a.status_code for a in answers] == [413, 413, 409, 409, 401]
        assert "stale delivery" in answers[2].json()["error"]
        assert refusal_counts(client) == {
            "body_too_large": 2,
            "stale_timestamp": 1,
            "future_timestamp": 1,
            "missing_signature": 1,
        }
        assert all_records() == []  # not one record on the request path
    [record] = all_records()  # the shutdown flush
    assert record.action == Action.WEBHOOK_REFUSALS and record.details["total"] == 5


def test_a_signed_request_keeps_its_own_record_with_the_ci_service_as_actor(
    app: FastAPI,
) -> None:
    with TestClient(app) as client:
        body, headers = build_request("explode", MODEL, {}, SECRET, delivery="d-1")
        response = client.post(HOOK, content=body, headers=headers)
        assert response.status_code == 422
        assert refusal_counts(client) == {}
    [record] = all_records()
    assert record.action == Action.WEBHOOK_REFUSED and record.actor == "service:ci"
    assert record.details["delivery"] == "d-1" and record.details["source"] == "testclient"


@pytest.fixture
def impatient_store() -> Iterator[SQLiteAuditStore]:
    """The configured SQLite store, giving up on SQLite's write lock after 50 ms."""
    store = SQLiteAuditStore(audit_url(), busy_timeout=0.05)
    yield store
    store.close()


def test_the_background_flush_writes_one_record_and_keeps_counts_over_a_failed_write(
    impatient_store: SQLiteAuditStore,
) -> None:
    registry = CollectorRegistry()
    tally = RefusalTally(impatient_store, refusals_counter(registry), interval=0.05, sample=2)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        tally.count("bad_signature", address)
    blocker = sqlite3.connect(impatient_store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the audit file's write lock
    try:
        with pytest.raises(AuditError):
            tally.flush()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    tally.count("missing_signature", "10.0.0.4")
    tally.start()
    try:
        records = wait_for("the refusals record", all_records, 60)
    finally:
        tally.stop()
    [record] = records  # the failed write's counts were kept for the next one
    assert record.details["counts"] == {"bad_signature": 3, "missing_signature": 1}
    assert record.details["remote_addresses"] == ["10.0.0.1", "10.0.0.2"]
    assert record.details["more_addresses"] is True
    value = registry.get_sample_value(
        "mlsteward_webhook_refusals_total", {"reason": "bad_signature"}
    )
    assert value == 3


@pytest.fixture
def served(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server in a thread: a client can hang up mid-body."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for("the gateway to start", lambda: server.started, 30)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_a_client_that_hangs_up_mid_body_is_counted_as_unreadable(served: str) -> None:
    host, port = served.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            b"POST /hooks/ci HTTP/1.1\r\nHost: gateway\r\nContent-Length: 1000\r\n\r\n"
            b'{"action": "tr'
        )
    # The refusal is counted once the server sees the hang-up; nothing is recorded for it.
    wait_for(
        "the unreadable body to be counted",
        lambda: "unreadable_body" in httpx.get(f"{served}/metrics").text,
        30,
    )
    assert counted(httpx.get(f"{served}/metrics").text) == {"unreadable_body": 1}
    assert all_records() == []

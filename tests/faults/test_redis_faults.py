"""Redis, the online store, down while the prediction service answers, and back.

The module's stack runs on a profile that puts Feast's online store in Redis, as the production
profile does (everything else stays in the home: the fault is Redis's alone): a private
``redis-server`` on a free port with an append-only file in its own directory, so the
materialized features survive its death and come back with it (nothing is materialized again).
The service (``python -m mlsteward.serving``, its own process) answers entity-id predictions
from it while clients keep sending them; then Redis is killed (SIGKILL) or frozen (SIGSTOP: a
host that stops answering without closing its connections), and after a few seconds started
again (same port, same directory) or thawed.

What must hold: while Redis is away every request is answered (no hang: each within the
clients' timeout) with 503 naming the online store, the first one soon after the fault; once
Redis is back the service answers 200 again by itself (no restart) with the same predictions as
before; the invariants every fault keeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faults.conftest import FaultResult
from tests.support.fault_checks import assert_invariants
from tests.support.fault_servers import RedisServer, redis_server
from tests.support.governance import MODEL
from tests.support.serving import FAST_TUNING, Service

pytestmark = pytest.mark.usefixtures("prefect_harness")

CLIENTS = 3
IDS_PER_REQUEST = 2
CLIENT_PAUSE_SECONDS = 0.02
"""Each client's pause between requests: steady load without spending the machine on it."""
CLIENT_TIMEOUT_SECONDS = 30.0
"""Longer than any answer may take: a request still unanswered after it counts as a hang."""
DOWN_SECONDS = 3.0
BACK_TIMEOUT_SECONDS = 60.0
OUTAGE_BEGINS = "online feature lookups fail with 503 until it is back"
OUTAGE_ENDS = "the online store answers again"
"""The service's log line (with a traceback) for each micro-batch whose lookup failed."""

StartService = Callable[..., Service]


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    return {"tuning": FAST_TUNING}


@pytest.fixture(scope="module")
def online_redis(module_home: Path) -> Iterator[RedisServer]:
    """The private Redis, and this process (and the service it starts) on a profile whose
    online store it is."""
    with redis_server(module_home.parent / "redis") as server, pytest.MonkeyPatch.context() as mp:
        profile = module_home.parent / "online-redis.yaml"
        profile.write_text(
            yaml.safe_dump(
                {
                    "name": "online-redis",
                    "description": "Feast's online store in a private Redis; the rest local.",
                    "redis_url": server.url,
                    "feast": {"project": "faults"},
                }
            )
        )
        mp.setenv("MLSTEWARD_PROFILE", str(profile))
        from mlsteward.signing import keys

        keys.init_keys()  # outside the local profile none is made on first use
        yield server


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path, online_redis: RedisServer) -> Path:
    return module_home


@pytest.fixture(scope="module")
def served(mlsteward_home: Path, online_redis: RedisServer) -> dict[str, Any]:
    """One champion, its features materialized into Redis; the cohort's ids."""
    import pandas as pd

    from flows.ingestion import ingestion_flow, materialize_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = write_dataset(
        generate_cohort(n_rows=3_000, seed=5), mlsteward_home.parent / "cohort.parquet"
    )
    ingestion_flow(model=MODEL, source=str(cohort))
    trained = training_flow(model=MODEL)
    assert trained.governance.decision == "promoted", trained.governance
    materialize_flow(model=MODEL)
    ids = pd.read_parquet(cohort, columns=["patient_id"])["patient_id"].unique().tolist()
    assert online_redis.keys() == len(ids)
    return {"champion": trained.version, "ids": [int(i) for i in ids]}


@pytest.fixture(scope="module")
def service(served: dict[str, Any], start_module_service: StartService) -> Service:
    return start_module_service()


@pytest.fixture
def redis(online_redis: RedisServer) -> Iterator[RedisServer]:
    """The module's Redis, answering when the test starts and when it ends."""
    yield online_redis
    online_redis.thaw() if online_redis.running else online_redis.start()


@dataclass
class Answer:
    sent: float
    took: float
    status: int
    detail: str


@dataclass
class Load:
    """Clients posting entity-id predictions until stopped, each waiting for its answer and
    pausing briefly before the next; every answer kept with its time."""

    service: Service
    ids: list[int]
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(CLIENTS):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, offset: int) -> None:
        url = f"/v1/models/{MODEL}/predict"
        n = offset * 97
        with httpx.Client(
            base_url=self.service.url, headers=self.service.headers, timeout=CLIENT_TIMEOUT_SECONDS
        ) as client:
            while not self._stop.is_set():
                batch = [self.ids[(n + k) % len(self.ids)] for k in range(IDS_PER_REQUEST)]
                n += IDS_PER_REQUEST
                sent = time.monotonic()
                try:
                    r = client.post(url, json={"entity_ids": batch})
                    status, detail = r.status_code, r.text[:500]
                except httpx.HTTPError as exc:
                    status, detail = 0, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.answers.append(Answer(sent, time.monotonic() - sent, status, detail))
                self._stop.wait(CLIENT_PAUSE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT_SECONDS + 5)

    def since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.sent >= moment]

    def wait_for(self, status: int, after: float, timeout: float) -> Answer:
        """The first answer with ``status`` to a request sent after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [a for a in self.since(after) if a.status == status]
            if found:
                return min(found, key=lambda a: a.sent + a.took)
            time.sleep(0.05)
        seen = sorted({(a.status, a.detail[:120]) for a in self.since(after)})
        raise AssertionError(f"no {status} within {timeout:.0f} s after the moment; saw {seen}")


def predictions(service: Service, ids: list[int]) -> list[float]:
    r = httpx.post(
        f"{service.url}/v1/models/{MODEL}/predict",
        json={"entity_ids": ids},
        headers=service.headers,
        timeout=CLIENT_TIMEOUT_SECONDS,
    )
    assert r.status_code == 200, r.text
    return [p["probability"] for p in r.json()["predictions"]]


def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{service.url}/readyz", headers=service.headers, timeout=10)
    return r.status_code, r.json()


def outage(
    how: str, redis: RedisServer, service: Service, served: dict[str, Any]
) -> dict[str, Any]:
    """Load on the service, Redis taken away (``kill`` or ``freeze``) for ``DOWN_SECONDS``,
    then back; what the clients saw."""
    ids = served["ids"]
    sample = ids[:5]
    before = predictions(service, sample)
    keys = redis.keys()
    log_before = service.log_tail(10**9)
    load = Load(service, ids).start()
    try:
        load.wait_for(200, time.monotonic(), 30)
        redis.kill() if how == "kill" else redis.freeze()
        gone = redis.killed_at
        assert gone is not None
        first_503 = load.wait_for(503, gone, 30)
        time.sleep(DOWN_SECONDS)
        ready_while_down = readyz(service)
        if how == "kill":
            redis.start()
        else:
            redis.thaw()
        back = time.monotonic()
        first_200 = load.wait_for(200, back, BACK_TIMEOUT_SECONDS)
        time.sleep(1.0)
    finally:
        load.stop()
    during = [a for a in load.answers if gone <= a.sent and a.sent + a.took <= back]
    return {
        "before": before,
        "after": predictions(service, sample),
        "keys": (keys, redis.keys()),
        "first_503": first_503,
        "first_503_after": first_503.sent + first_503.took - gone,
        "recovery_seconds": first_200.sent + first_200.took - back,
        "down": during,
        "failed": [a for a in load.answers if a.status != 200],
        "answered": len(load.answers),
        "slowest": max(a.took for a in load.answers),
        "ready_while_down": ready_while_down,
        "failing_seconds": back - gone + (first_200.sent + first_200.took - back),
        "log": service.log_tail(10**9)[len(log_before) :],
    }


def check_outage(seen: dict[str, Any]) -> None:
    """Every request answered; while Redis was away only 503s naming the online store (or
    200s a request read before the fault); the same predictions after as before."""
    unanswered = [a for a in seen["failed"] if a.status == 0]
    assert not unanswered, unanswered[:3]
    statuses = {a.status for a in seen["down"]}
    assert statuses <= {200, 503}, statuses
    for answer in seen["failed"]:
        assert answer.status == 503, answer
        assert "online store" in answer.detail, answer.detail
    assert seen["after"] == seen["before"]
    assert seen["keys"][1] == seen["keys"][0]  # the append-only file brought every key back
    log = seen["log"]  # the outage, logged once as it begins and once as it ends
    assert "Traceback" not in log, log[-3000:]
    assert log.count(OUTAGE_BEGINS) == 1 and log.count(OUTAGE_ENDS) == 1, log[-3000:]


# How Redis goes away, what the reliability page says of it, and what the figures add.
OUTAGES: dict[str, tuple[str, dict[str, str]]] = {
    "kill": (
        f"killed (SIGKILL) under load from {CLIENTS} clients; started again on the same port "
        f"{DOWN_SECONDS:g} s later, its keys back from its append-only file",
        {"data": "kept by Redis's append-only file; nothing materialized again"},
    ),
    "freeze": (
        f"frozen (SIGSTOP: connections open, nothing answered) under load from {CLIENTS} "
        f"clients; thawed {DOWN_SECONDS:g} s later",
        {},
    ),
}


@pytest.mark.parametrize("how", list(OUTAGES))
def test_redis_gone_under_load_answers_503_then_recovers_without_a_restart(
    how: str,
    service: Service,
    redis: RedisServer,
    served: dict[str, Any],
    fault_result: FaultResult,
) -> None:
    seen = outage(how, redis, service, served)
    check_outage(seen)
    checks = assert_invariants([MODEL])
    status, body = seen["ready_while_down"]
    point, more = OUTAGES[how]
    fault_result.record(
        "redis-down-serving",
        point=point,
        outcome="recovered",
        user_sees=f"predict: 503 {seen['first_503'].detail[:300]}; /readyz {status}",
        recovery_seconds=round(seen["recovery_seconds"], 3),
        requests_failed=len(seen["failed"]),
        checks=checks,
        figures={
            "first_503_after_seconds": round(seen["first_503_after"], 3),
            "slowest_answer_seconds": round(seen["slowest"], 3),
            "requests_answered": seen["answered"],
            "readyz_while_down": status,
            "readyz_names_the_online_store": "online store" in json.dumps(body),
            "failing_seconds": round(seen["failing_seconds"], 3),
            "service_log_lines": len(seen["log"].splitlines()),
            **more,
        },
    )

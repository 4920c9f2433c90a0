"""The prediction service driven beyond its capacity sheds load instead of queueing without
bound: 503 (or, with a per-token rate, 429) with ``Retry-After``, in each protocol's error
shape, never a crash, probes and metrics always answered, and full service again as soon as
the load drops.

The service is the real process of a trained stack with a small admission limit
(``MLSTEWARD_SERVING_MAX_IN_FLIGHT``), so that a test's clients on a shared 2-core machine
overload it for sure; many concurrent clients in this process (asyncio, keep-alive) post
``/v1`` predictions and Open Inference Protocol infers, half of them asking for explanations,
while a probe reads ``/healthz`` and ``/metrics``. What is recorded: how many were shed, the
p99 of the requests that were accepted and of the refusals, and how soon after the load a
request is answered again.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultResult
from tests.support.disk import metric, scrape
from tests.support.fault_checks import assert_invariants
from tests.support.governance import MODEL, write_config
from tests.support.serving import FAST_TUNING, SERVICE_SETTINGS, Service, bearer, issue_token

FAULT = "overload"
PREDICT = f"/v1/models/{MODEL}/predict"
INFER = f"/v2/models/{MODEL}/infer"
LIMIT = 8
CLIENTS = 64
LOAD_SECONDS = 6.0


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def stack(champion_and_challenger: dict[str, Any], mlsteward_home: Path) -> dict[str, Any]:
    write_config(mlsteward_home.parent / "config", tuning=FAST_TUNING, **SERVICE_SETTINGS)
    return champion_and_challenger


@dataclass
class Load:
    accepted_ms: list[float] = field(default_factory=list)
    shed_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)  # refusals not in the promised shape
    errors: list[str] = field(default_factory=list)  # no answer at all
    probes: dict[str, list[int]] = field(default_factory=lambda: {"/healthz": [], "/metrics": []})


def p99(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return round(statistics.quantiles(values, n=100)[98], 2)


def _check_refusal(r: httpx.Response, v2: bool, load: Load) -> None:
    """A refusal must say what it is, in the protocol's shape, and when to come back."""
    body = r.json()
    if r.headers.get("retry-after") != "1":
        load.wrong.append(f"{r.status_code} without Retry-After: {r.headers}")
    elif v2 and "at capacity" not in body.get("error", ""):
        load.wrong.append(f"/v2 refusal: {body}")
    elif not v2 and body.get("detail", [{}])[0].get("type") != "overloaded":
        load.wrong.append(f"/v1 refusal: {body}")


async def overload(service: Service, ids: list[Any], clients: int, seconds: float) -> Load:
    load = Load()
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.headers, timeout=30, limits=limits
    ) as client:

        async def one(k: int) -> None:
            v2, explain, n = k % 4 == 3, k % 2 == 0, k
            while time.monotonic() < end:
                n += clients
                entity = ids[n % len(ids)]
                started = time.perf_counter()
                try:
                    if v2:
                        body = {"inputs": [{"name": "patient_id", "datatype": "INT64",
                                            "shape": [1], "data": [entity]}]}  # fmt: skip
                        r = await client.post(INFER, json=body)
                    else:
                        body = {"entity_ids": [entity], "explain": explain}
                        r = await client.post(PREDICT, json=body)
                except httpx.HTTPError as exc:
                    load.errors.append(repr(exc))
                    continue
                took = (time.perf_counter() - started) * 1000
                load.statuses[r.status_code] = load.statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    load.accepted_ms.append(took)
                elif r.status_code == 503:
                    load.shed_ms.append(took)
                    _check_refusal(r, v2, load)

        async def probe() -> None:
            while time.monotonic() < end:
                for path in load.probes:
                    r = await client.get(path)
                    load.probes[path].append(r.status_code)
                await asyncio.sleep(0.2)

        await asyncio.gather(probe(), *(one(k) for k in range(clients)))
    return load


def test_beyond_capacity_the_service_sheds_load_and_recovers(
    stack: dict[str, Any], start_service: Callable[..., Service], fault_result: FaultResult
) -> None:
    service = start_service(settings={"MLSTEWARD_SERVING_MAX_IN_FLIGHT": str(LIMIT)})
    load = asyncio.run(overload(service, stack["ids"], CLIENTS, LOAD_SECONDS))
    assert service.process.poll() is None, f"the service died:\n{service.log_tail()}"
    assert not load.errors, load.errors[:5]
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert load.statuses.get(503, 0) > 0, f"nothing was shed at {CLIENTS} clients: {load.statuses}"
    assert load.accepted_ms, "nothing was answered under overload"
    assert not load.wrong, load.wrong[:5]
    assert all(s == 200 for probe in load.probes.values() for s in probe), load.probes
    assert all(load.probes.values()), "the probes got no answer in the whole load"
    # recovers as soon as the load drops: the next requests are all answered
    stopped = time.monotonic()
    recovered_in = None
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=10) as client:
        for n in range(20):
            r = client.post(PREDICT, json={"entity_ids": [stack["ids"][n]]})
            assert r.status_code == 200, r.text
            recovered_in = recovered_in or time.monotonic() - stopped
    text = scrape(service.url)
    shed = metric(text, "mlsteward_requests_shed_total", 'reason="in_flight"')
    assert shed == load.statuses[503], (shed, load.statuses)
    assert metric(text, "mlsteward_requests_in_flight") == 0
    service.stop()
    checks = assert_invariants([MODEL])
    answered = load.statuses.get(200, 0)
    fault_result.record(
        FAULT,
        point=f"{CLIENTS} concurrent clients (/v1 with and without SHAP, /v2) for "
        f"{LOAD_SECONDS:g} s against an admission limit of {LIMIT} requests in flight",
        outcome="recovered",
        user_sees="503 'the service is at capacity ...' with Retry-After: 1 (the Open "
        "Inference Protocol's {error} shape on /v2); probes and /metrics answered throughout; "
        "every request answered again once the load drops",
        recovery_seconds=round(recovered_in or 0.0, 4),
        rows_lost=0,
        requests_failed=len(load.errors),
        checks=checks,
        figures={
            "requests": sum(load.statuses.values()),
            "accepted": answered,
            "shed_503": load.statuses.get(503, 0),
            "accepted_per_second": round(answered / LOAD_SECONDS, 1),
            "accepted_p50_ms": round(statistics.median(load.accepted_ms), 2),
            "accepted_p99_ms": p99(load.accepted_ms),
            "shed_p99_ms": p99(load.shed_ms),
            "probes_answered": sum(len(v) for v in load.probes.values()),
        },
    )


@pytest.mark.fault_subset
def test_a_token_beyond_its_rate_gets_429_and_others_do_not(
    stack: dict[str, Any], start_service: Callable[..., Service], fault_result: FaultResult
) -> None:
    rate, burst = 5, 5
    service = start_service(
        settings={
            "MLSTEWARD_SERVING_RATE_LIMIT": str(rate),
            "MLSTEWARD_SERVING_RATE_BURST": str(burst),
        }
    )
    ids = stack["ids"]
    other = bearer(issue_token("viewer", name="serving-other-client"))
    statuses, refusal = [], None
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=10) as client:
        for n in range(3 * burst):
            r = client.post(PREDICT, json={"entity_ids": [ids[n]]})
            statuses.append(r.status_code)
            if r.status_code == 429 and refusal is None:
                refusal = r
        assert statuses[:burst] == [200] * burst, statuses
        assert refusal is not None, f"{3 * burst} requests at once were never limited: {statuses}"
        assert set(statuses) == {200, 429}, statuses
        retry_after = int(refusal.headers["retry-after"])
        assert retry_after >= 1
        assert "MLSTEWARD_SERVING_RATE_LIMIT" in refusal.json()["detail"][0]["msg"]
        assert refusal.json()["detail"][0]["type"] == "rate_limited"
        v2 = client.post(INFER, json={"inputs": [{"name": "patient_id", "datatype": "INT64",
                                                  "shape": [1], "data": [ids[0]]}]})  # fmt: skip
        assert v2.status_code == 429 and "retry after" in v2.json()["error"], v2.text
        # another token is its own bucket
        r = client.post(PREDICT, json={"entity_ids": [ids[0]]}, headers=other)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
        time.sleep(retry_after)
        r = client.post(PREDICT, json={"entity_ids": [ids[1]]})
        assert r.status_code == 200, "the token is answered again after Retry-After"
    shed = metric(scrape(service.url), "mlsteward_requests_shed_total", 'reason="rate_limit"')
    assert shed == statuses.count(429) + 1
    service.stop()
    checks = assert_invariants([MODEL])
    fault_result.record(
        FAULT,
        point=f"one token sending {3 * burst} requests back to back against a rate of "
        f"{rate}/s with bursts of {burst} (MLSTEWARD_SERVING_RATE_LIMIT, off by default)",
        outcome="refused",
        user_sees="429 'too many requests for this token ...' with Retry-After; other tokens "
        "unaffected; the token is answered again after the wait",
        recovery_seconds=float(retry_after),
        rows_lost=0,
        requests_failed=0,
        checks=checks,
        figures={"answered": statuses.count(200), "limited_429": statuses.count(429)},
    )

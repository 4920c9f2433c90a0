"""The prediction service driven beyond its capacity sheds load instead of queueing without
bound: 503 (or, with a per-token rate, 429) with ``Retry-After``, in each protocol's error
shape, never a crash, probes and metrics always answered, and full service again as soon as
the load drops.

The service is the real process of a trained stack with a small admission limit
(``MLSTEWARD_SERVING_MAX_IN_FLIGHT``), so that a test's clients on a shared 2-core machine
overload it for sure; many concurrent keep-alive clients in a second process
(``tests.support.load_client``) post ``/v1`` predictions, half of them asking for
explanations, and Open Inference Protocol infers, while this process probes ``/healthz`` and
``/metrics``. What is recorded: how many were shed, the
p99 of the requests that were accepted and of the refusals, and how soon after the load a
request is answered again.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
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


def run_load(service: Service, ids: list[Any], clients: int, seconds: float) -> dict[str, Any]:
    """``tests.support.load_client`` from a process of its own, while this one probes
    ``/healthz`` and ``/metrics``; its result, with the probes' statuses under ``probes``."""
    env = {**os.environ, "MLSTEWARD_TOKEN": service.token}
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.support.load_client", "--url", service.url,
         "--concurrency", str(clients), "--seconds", str(seconds),
         "--ids", ",".join(str(i) for i in ids[:500])],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    probes: dict[str, list[int]] = {"/healthz": [], "/metrics": []}
    probe_ms: list[float] = []
    time.sleep(1.0)  # the clients connect
    while client.poll() is None:
        for path in probes:
            started = time.perf_counter()
            try:
                probes[path].append(httpx.get(f"{service.url}{path}", timeout=10).status_code)
            except httpx.HTTPError:
                probes[path].append(0)
            probe_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(0.2)
    out, err = client.communicate(timeout=60)
    found = re.search(r"^RESULT (\{.*\})$", out, re.M)
    assert found, f"the load client gave no result:\n{out}\n{err}"
    return {**json.loads(found.group(1)), "probes": probes, "probe_p99_ms": p99(probe_ms)}


def p99(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return round(statistics.quantiles(values, n=100)[98], 2)


def test_beyond_capacity_the_service_sheds_load_and_recovers(
    stack: dict[str, Any], start_service: Callable[..., Service], fault_result: FaultResult
) -> None:
    service = start_service(settings={"MLSTEWARD_SERVING_MAX_IN_FLIGHT": str(LIMIT)})
    load = run_load(service, stack["ids"], CLIENTS, LOAD_SECONDS)
    statuses = {int(k): v for k, v in load["statuses"].items()}
    assert service.process.poll() is None, f"the service died:\n{service.log_tail()}"
    assert load["error_count"] == 0, load["errors"]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.get(503, 0) > 0, f"nothing was shed at {CLIENTS} clients: {statuses}"
    assert statuses.get(200, 0) > 0, "nothing was answered under overload"
    assert not load["wrong"], load["wrong"]
    probes = load["probes"]
    assert all(probes.values()), "no probe ran during the load"
    assert all(s == 200 for statuses_ in probes.values() for s in statuses_), probes
    # recovers as soon as the load drops: the next requests are all answered
    stopped = time.monotonic()
    recovered_in = None
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=10) as client:
        for n in range(20):
            r = client.post(PREDICT, json={"entity_ids": [stack["ids"][n]], "explain": True})
            assert r.status_code == 200, r.text
            recovered_in = recovered_in or time.monotonic() - stopped
            v2 = client.post(INFER, json=infer_body(stack["ids"][n]))
            assert v2.status_code == 200, v2.text
    text = scrape(service.url)
    shed = metric(text, "mlsteward_requests_shed_total", 'reason="in_flight"')
    assert shed == statuses[503], (shed, statuses)
    assert metric(text, "mlsteward_requests_in_flight") == 0
    service.stop()
    checks = assert_invariants([MODEL])
    fault_result.record(
        FAULT,
        point=f"{CLIENTS} concurrent clients from a second process (/v1 with and without SHAP, "
        f"/v2) for {LOAD_SECONDS:g} s against an admission limit of {LIMIT} in flight",
        outcome="recovered",
        user_sees="503 'the service is at capacity ...' with Retry-After: 1 (the Open "
        "Inference Protocol's {error} shape on /v2); probes and /metrics answered throughout; "
        "every request answered again once the load drops",
        recovery_seconds=round(recovered_in or 0.0, 4),
        rows_lost=0,
        requests_failed=load["error_count"],
        checks=checks,
        figures={
            "requests": sum(statuses.values()),
            "accepted": statuses.get(200, 0),
            "shed_503": statuses.get(503, 0),
            "accepted_per_second": load["accepted_per_second"],
            "accepted_p50_ms": load["accepted_p50_ms"],
            "accepted_p99_ms": load["accepted_p99_ms"],
            "shed_p99_ms": load["refused_p99_ms"],
            "probe_p99_ms": load["probe_p99_ms"],
        },
    )


def infer_body(entity: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "patient_id", "datatype": "INT64", "shape": [1], "data": [entity]}]}


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
        for _ in range(2 * burst):  # the same bucket over the Open Inference Protocol
            v2 = client.post(INFER, json=infer_body(ids[0]))
            if v2.status_code == 429:
                break
        assert v2.status_code == 429 and "retry after" in v2.json()["error"], v2.text
        assert int(v2.headers["retry-after"]) >= 1
        # another token is its own bucket
        r = client.post(PREDICT, json={"entity_ids": [ids[0]]}, headers=other)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
        time.sleep(retry_after)
        r = client.post(PREDICT, json={"entity_ids": [ids[1]]})
        assert r.status_code == 200, "the token is answered again after Retry-After"
    shed = metric(scrape(service.url), "mlsteward_requests_shed_total", 'reason="rate_limit"')
    assert shed >= statuses.count(429) + 1
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

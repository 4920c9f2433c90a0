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

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.faults.conftest import FaultResult
from tests.support.disk import metric, scrape
from tests.support.fault_checks import assert_invariants
from tests.support.governance import MODEL, write_config
from tests.support.platform import free_port
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


# -- the gate alone, on a service with nothing trained yet ---------------------------------------
@contextlib.contextmanager
def untrained_service(home: Path, settings: dict[str, str]) -> Iterator[str]:
    """``python -m mlsteward.serving`` on a home with the model configured but not trained
    (past the gate, its predict answers 503: nothing to serve), up when ``/healthz`` answers;
    its URL. Stopped at the end."""
    config = home.parent / "config"
    write_config(config)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSTEWARD_SERVING_")}
    env.update(MLSTEWARD_HOME=str(home), MLSTEWARD_CONFIG_DIR=str(config), **settings)
    log_path = home.parent / f"serving-{port}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.serving", "--port", str(port), "--model", MODEL,
             "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        yield url
        assert process.poll() is None, f"the service died:\n{log_path.read_text()[-3000:]}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def held_open(url: str, path: str, key: str) -> tuple[socket.socket, bytes]:
    """A predict request whose body is still arriving: in flight until the rest is sent."""
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"entity_ids": [1]}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    return sock, body[5:]


def finish(sock: socket.socket, rest: bytes) -> int:
    """Send the rest of a held request's body; its answer's status."""
    with sock:
        sock.sendall(rest)
        return int(sock.recv(65536).split(b" ", 2)[1])


@pytest.mark.fault_subset
def test_the_gate_sheds_beyond_its_limit_lets_probes_through_and_reopens(
    fault_result: FaultResult, tmp_path: Path
) -> None:
    """Two requests held in flight (their bodies still arriving) against a limit of two: the
    next predict, in either protocol, is refused at once while probes answer; a token past its
    rate gets 429 while another token does not; once the held requests end, the gate admits
    again. No model is needed for any of it: the gate stands before the model."""
    limit, rate, burst = 2, 1, 3
    settings = {"MLSTEWARD_SERVING_AUTH": "off", "MLSTEWARD_SERVING_MAX_IN_FLIGHT": str(limit),
                "MLSTEWARD_SERVING_RATE_LIMIT": str(rate),
                "MLSTEWARD_SERVING_RATE_BURST": str(burst)}  # fmt: skip
    with untrained_service(tmp_path / "home", settings) as url:
        held = [held_open(url, PREDICT, f"held-{k}") for k in range(limit)]
        time.sleep(0.5)  # both reach the gate
        started = time.monotonic()
        v1 = httpx.post(f"{url}{PREDICT}", json={"entity_ids": [1]}, timeout=10)
        refused_in = time.monotonic() - started
        v2 = httpx.post(f"{url}{INFER}", json=infer_body(1), timeout=10)
        assert v1.status_code == 503 and v1.headers["retry-after"] == "1", v1.text
        assert v1.json()["detail"][0]["type"] == "overloaded"
        assert "MLSTEWARD_SERVING_MAX_IN_FLIGHT" in v1.json()["detail"][0]["msg"]
        assert v2.status_code == 503 and v2.headers["retry-after"] == "1", v2.text
        assert "at capacity" in v2.json()["error"]
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        text = scrape(url)
        assert metric(text, "mlsteward_requests_in_flight") == limit
        assert [finish(sock, rest) for sock, rest in held] == [503, 503]  # nothing to serve
        again = httpx.post(f"{url}{PREDICT}", json={"entity_ids": [1]}, timeout=10)
        assert again.status_code == 503 and again.json()["detail"][0]["type"] == "unavailable"
        assert "capacity" not in again.json()["detail"][0]["msg"], "past the gate, to the model"
        # the per-token rate: one token's burst, then 429; another token is its own bucket
        answers = [
            httpx.post(f"{url}{PREDICT}", json={"entity_ids": [1]}, timeout=10,
                       headers={"Authorization": "Bearer busy"})
            for _ in range(burst + 2)
        ]  # fmt: skip
        statuses = [a.status_code for a in answers]
        assert statuses[:burst] == [503] * burst and 429 in statuses[burst:], statuses
        limited = next(a for a in answers if a.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["detail"][0]["type"] == "rate_limited"
        other = httpx.post(f"{url}{PREDICT}", json={"entity_ids": [1]}, timeout=10,
                           headers={"Authorization": "Bearer quiet"})  # fmt: skip
        assert other.status_code == 503, other.text  # past the gate, to the model
        text = scrape(url)
        assert metric(text, "mlsteward_requests_shed_total", 'reason="in_flight"') == 2
        assert metric(text, "mlsteward_requests_shed_total", 'reason="rate_limit"') >= 1
        assert metric(text, "mlsteward_requests_in_flight") == 0
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        FAULT,
        point=f"the admission gate: {limit} requests held in flight against a limit of {limit}, "
        f"and one token past a rate of {rate}/s (bursts of {burst})",
        outcome="recovered",
        user_sees="503 'the service is at capacity ...' (Retry-After: 1) while full, 429 past "
        "the token's rate; /healthz and /metrics answered; admitted again once requests end",
        recovery_seconds=0.0,
        rows_lost=0,
        requests_failed=0,
        checks=checks,
        figures={"refused_in_seconds": round(refused_in, 4)},
    )

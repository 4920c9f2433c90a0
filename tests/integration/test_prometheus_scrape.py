"""Prometheus itself (Debian's server) scraping the running prediction service with the example
configuration under ``deploy/prometheus`` (its bearer-token block on, as ``/metrics`` needs
with ``MLSTEWARD_SERVING_METRICS_AUTH=true``), evaluating the rules every second: the recording
rules give the model a p99 latency and a throughput, every rule evaluates without error on real
series, and every dashboard query answers."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.governance import MODEL, write_config
from tests.support.platform import free_port
from tests.support.prometheus import (
    SCRAPE_JOB,
    dashboard,
    for_model,
    metric_names,
    panel_exprs,
    rules,
    scrape_config,
)
from tests.support.serving import FAST_TUNING, SERVICE_SETTINGS, Service

PROMETHEUS = shutil.which("prometheus") or "prometheus"
READY_SECONDS = 60.0
# Dashboard queries that have no series on a healthy service: nothing failed to load.
EMPTY_WHEN_HEALTHY = {"mlsteward_model_load_failures_total"}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def service(
    champion_and_challenger: dict[str, Any],
    mlsteward_home: Path,
    start_module_service: Callable[..., Service],
) -> Service:
    """The service with ``/metrics`` behind a token, as the example's authorization block is
    for."""
    write_config(mlsteward_home.parent / "config", tuning=FAST_TUNING, **SERVICE_SETTINGS)
    return start_module_service(settings={"MLSTEWARD_SERVING_METRICS_AUTH": "true"})


@pytest.fixture(scope="module")
def prometheus(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prometheus`` on a free loopback port with the example configuration pointed at the
    service (the service's viewer token in the credentials file), scraping and evaluating every
    second; stopped (SIGTERM, then SIGKILL) at the module's end. Its base URL."""
    work = tmp_path_factory.mktemp("prometheus")
    token = work / "mlsteward-token"
    token.write_text(service.token)
    token.chmod(0o600)
    config = work / "prometheus.yml"
    target = service.url.removeprefix("http://")
    config.write_text(yaml.safe_dump(scrape_config(target, token)))
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not _scraped(url):  # its target discovery takes ~5 s after it is ready
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus never scraped:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _scraped(url: str) -> bool:
    """Whether Prometheus answers and has scraped the service once."""
    try:
        answer = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and bool(answer.json()["data"]["result"])


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector ``expr`` evaluates to now (an error fails the test)."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def values(prometheus: str, expr: str) -> list[float]:
    return [float(sample["value"][1]) for sample in query(prometheus, expr)]


def test_recording_rules_give_the_model_a_p99_and_a_throughput(
    champion_and_challenger: dict[str, Any], service: Service, prometheus: str
) -> None:
    assert httpx.get(f"{service.url}/metrics", timeout=10).status_code == 401  # a token or none

    p99 = f'model_arm:mlsteward_request_seconds:p99_5m{{model="{MODEL}", arm="champion"}}'
    requests = f'model:mlsteward_requests:rate5m{{model="{MODEL}"}}'
    panels = {
        title: [for_model(e, MODEL) for e in exprs]
        for title, exprs in panel_exprs(dashboard()).items()
    }
    awaited = [
        e for exprs in panels.values() for e in exprs if not metric_names(e) & EMPTY_WHEN_HEALTHY
    ]
    # Predictions across several scrapes: a rate needs the counters to grow between two.
    sent = 0
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=10) as client:
        while True:
            for entity in champion_and_challenger["ids"][:2]:
                answer = client.post(f"/v1/models/{MODEL}/predict", json={"entity_ids": [entity]})
                assert answer.status_code == 200, answer.text
                sent += 1
            if sent % 10 == 0 and all(query(prometheus, e) for e in awaited):
                break
            assert time.monotonic() < deadline, (
                f"after {sent} predictions, no series yet for "
                f"{[e for e in awaited if not query(prometheus, e)]}"
            )
            time.sleep(0.1)

    assert values(prometheus, f'up{{job="{SCRAPE_JOB}"}}') == [1.0]  # scraped with the token
    [latency] = values(prometheus, p99)
    assert math.isfinite(latency) and 0 < latency < 10, latency
    [throughput] = values(prometheus, requests)
    assert throughput > 0
    [rows] = values(prometheus, f'model:mlsteward_predictions:rate5m{{model="{MODEL}"}}')
    assert rows > 0
    # every request was answered: the refused share is 0, not missing
    assert values(
        prometheus, f'model:mlsteward_requests_non2xx:ratio_rate5m{{model="{MODEL}"}}'
    ) == [0.0]
    assert values(prometheus, f'mlsteward_model_loaded{{model="{MODEL}", arm="champion"}}') == [1.0]

    # every rule evaluates on the real series without an error (a clash of label sets, say)
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    evaluated = {r["name"]: r for g in groups for r in g["rules"]}
    assert len(evaluated) == len(rules())
    unhealthy = {n: r.get("lastError") for n, r in evaluated.items() if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    # and no alert fires, or is pending, on a healthy service
    assert query(prometheus, "ALERTS") == []

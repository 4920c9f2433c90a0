"""Generated CI webhook deliveries against the gateway's payload parser and signature check:
arbitrary bytes, JSON of the wrong shape, deep nesting, NaN, oversized bodies, broken fields of
plain triggers and GitHub pushes, missing, wrong and malformed signatures, stale, future and
unparsable signed times, bad delivery ids and replays.

The property: a delivery with a defect is refused with a 4xx whose message names the field or
the check at fault and starts no deployment run; a delivery without one is accepted (or, with
no Prefect API to start its runs on, answered with the documented 503); never a 5xx otherwise.
Each recipe carries its defects (``tests/support/fuzz_webhook.py``), so the test knows which.

The cheap half runs in process against an address where no Prefect API listens, so every
refusal is seen before any server would be; the other half against a real Prefect API with the
model's deployments registered and nothing serving them, where every flow run that exists at
the end must belong to a delivery that was accepted.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from mlsteward.gateway.app import create_app
from mlsteward.gateway.settings import GatewaySettings
from tests.faults.conftest import FaultResult
from tests.support.fault_checks import assert_invariants
from tests.support.fuzz_strategies import example_count
from tests.support.fuzz_webhook import MODEL, NAMES, NEEDS_SERVER, Recipe, deliveries, is_replay
from tests.support.platform import free_port

SECRET = "fuzz-secret-0123456789abcdef"
HOOK = "/hooks/ci"
DEPLOYMENTS = ("train-heart-disease", "score-heart-disease", "drift-heart-disease")

# Product bugs this fuzzing found, each fixed in mlsteward/gateway with a regression test
# (tests/unit/test_gateway_payloads.py).
BUGS_FIXED = (
    "deeply nested JSON answered 500 (RecursionError) instead of 400",
    "a push whose commits (or a commit's file lists) were not lists answered 500, or trained "
    "every model",
    "a file parameter '~user/...' naming no user answered 500 (RuntimeError)",
    "a trigger whose action was a list or an object answered 500 (TypeError)",
)


class Tally:
    """What the fuzzing sent and what came back, for the fault's figures."""

    def __init__(self) -> None:
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.defects: Counter[str] = Counter()
        self.accepted_ids: set[str] = set()
        self.runs_started = 0

    def figures(self) -> dict[str, int]:
        """Numbers only: the reliability page prints each one."""
        return {
            "requests_sent": self.sent,
            "accepted_2xx": sum(v for k, v in self.statuses.items() if k < 300),
            "refused_4xx": sum(v for k, v in self.statuses.items() if 400 <= k < 500),
            "answered_503": self.statuses[503],
            "server_errors_5xx": sum(v for k, v in self.statuses.items() if k >= 500 and k != 503),
            "kinds_of_defect_tried": len(self.defects) - ("none" in self.defects),
            "runs_started": self.runs_started,
            "bugs_fixed": len(BUGS_FIXED),
        }


def send(client: TestClient, recipe: Recipe, tally: Tally) -> tuple[str, list[Any]]:
    """Send ``recipe`` (twice for a replay) and check every answer; the delivery id and the
    answers."""
    delivery = f"fuzz-{uuid.uuid4()}"
    body, headers = recipe.make(SECRET, dt.datetime.now(dt.UTC), delivery)
    answers = []
    for _ in range(2 if is_replay(recipe) else 1):
        response = client.post(HOOK, content=body, headers=headers)
        tally.sent += 1
        tally.statuses[response.status_code] += 1
        answers.append(response)
    return delivery, answers


def check(recipe: Recipe, answers: list[Any], delivery: str, server: bool, tally: Tally) -> None:
    first = answers[0]
    status, document = first.status_code, first.json()
    assert isinstance(document, dict) and isinstance(document.get("accepted"), bool), first.text
    defects = [d for d in recipe.defects if server or d not in NEEDS_SERVER]
    tally.defects.update(recipe.defects or ("none",))
    if defects:
        assert 400 <= status < 500, (status, document, recipe)
        assert document["accepted"] is False and not document.get("runs"), document
        error = str(document.get("error") or "")
        wanted = {w for d in defects for w in NAMES[d]}
        assert any(w in error.lower() for w in wanted), (error, defects, recipe)
        return
    if recipe.defects and not server:  # only a server sees these: no API to ask, a 503
        assert status == 503 and "Prefect API" in document["error"], (status, document)
        return
    if not recipe.starts_runs:  # a ping, or a push that trains nothing
        assert status == 200 and document["accepted"] is True and document["runs"] == []
    elif server:
        assert status == 202 and document["accepted"] is True, (status, document, recipe)
        assert len(document["runs"]) == 1, document
        tally.runs_started += 1
    else:
        assert status == 503 and "cannot reach the Prefect API" in document["error"], document
        return
    tally.accepted_ids.add(delivery)
    if is_replay(recipe):
        again = answers[1]
        assert again.status_code == 409 and "replay" in again.json()["error"], again.text


def fuzz(client: TestClient, examples: int, server: bool, tally: Tally) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(recipe=deliveries())
    def deliver(recipe: Recipe) -> None:
        delivery, answers = send(client, recipe, tally)
        check(recipe, answers, delivery, server, tally)

    deliver()


@pytest.mark.fault_subset
def test_generated_deliveries_are_refused_by_name_before_any_server(
    request: pytest.FixtureRequest, fault_result: FaultResult
) -> None:
    """No Prefect API listens at the gateway's address: a valid delivery that would start a
    run gets the documented 503, every other one its refusal."""
    settings_ = GatewaySettings(secret=SECRET, api_url=f"http://127.0.0.1:{free_port()}/api")
    tally = Tally()
    # Few in make test: each valid delivery waits ~1.5 s for Prefect's client to give up on
    # the address (its connection retries) before the 503.
    with TestClient(create_app(settings_)) as client:
        fuzz(client, example_count(request, quick=40, full=600), server=False, tally=tally)
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        "fuzz-webhook-payloads",
        point="the gateway's payload parser and signature check, in process, no Prefect API",
        outcome="refused",
        user_sees="a 4xx naming the field or the signature; the documented 503 with no API",
        requests_failed=tally.figures()["server_errors_5xx"],
        checks=checks,
        figures=tally.figures(),
    )


@pytest.fixture(scope="module")
def prefect_api(prefect_harness: None) -> Iterator[str]:
    """The session's Prefect test server with the model's train, score and drift deployments
    registered as prefect.yaml declares them, and nothing serving them: a run a delivery
    starts stays scheduled, where the test finds it. The runs the module started, and the
    deployments it registered, are deleted at its end, so nothing a later module serves
    picks them up."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    from tests.support.serve_training import runner_deployment

    deployments = [runner_deployment(name) for name in DEPLOYMENTS]
    with get_client(sync_client=True) as client:
        existing = set()
        for deployment in deployments:
            with suppress(ObjectNotFound):
                name = f"{deployment.flow_name}/{deployment.name}"
                existing.add(client.read_deployment_by_name(name).id)
    registered = [deployment.apply() for deployment in deployments]
    try:
        yield str(PREFECT_API_URL.value())
    finally:
        with get_client(sync_client=True) as client:
            for run in deployment_runs():
                if (run.idempotency_key or "").startswith("mlsteward-webhook:fuzz-"):
                    with suppress(ObjectNotFound):
                        client.delete_flow_run(run.id)
            for deployment_id in registered:
                if deployment_id not in existing:
                    with suppress(ObjectNotFound):
                        client.delete_deployment(deployment_id)


def deployment_runs() -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:  # the API answers at most 200 a page
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(is_null_=False)
                ),
                limit=200,
                offset=len(runs),
            )
            runs += page
            if len(page) < 200:
                return runs


def test_generated_deliveries_start_runs_only_when_valid(
    prefect_api: str, request: pytest.FixtureRequest, fault_result: FaultResult
) -> None:
    """Against a real Prefect API: every refusal as above, every valid delivery one run, and
    no flow run on the server that an accepted delivery did not start."""
    before = {run.id for run in deployment_runs()}
    settings_ = GatewaySettings(secret=SECRET, api_url=prefect_api)
    tally = Tally()
    with TestClient(create_app(settings_)) as client:
        fuzz(client, example_count(request, quick=40, full=300), server=True, tally=tally)
    started = [run for run in deployment_runs() if run.id not in before]
    owners = {key.split(":")[1] for run in started if (key := run.idempotency_key or "")}
    assert len(started) == tally.runs_started, (len(started), tally.runs_started)
    assert owners <= tally.accepted_ids, owners - tally.accepted_ids
    assert tally.runs_started > 0, tally.figures()
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        "fuzz-webhook-payloads",
        point="the gateway against a real Prefect API with the deployments registered",
        outcome="refused",
        user_sees="a 4xx naming the field or the signature; a run only for a valid delivery",
        requests_failed=tally.figures()["server_errors_5xx"],
        checks=checks,
        figures=tally.figures(),
    )

"""The CI webhook gateway against a real Prefect server, real deployments and the audit trail.

The training and scoring deployments are served from prefect.yaml's own declarations by a
separate process (as ``prefect deploy`` + a worker would run them), on a champion trained once
for the module. Every refusal is checked three ways: its status, no new deployment run on the
server, and an audit record: its own once the request is authenticated, else a count in
``/metrics`` and the aggregated ``webhook_refusals`` record.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prometheus_client.parser import text_string_to_metric_families

from flows.ingestion import ingestion_flow
from flows.training import training_flow
from mlsteward.audit import Action, AuditRecord, audit_store
from mlsteward.data.synthetic import generate_batch, generate_cohort, write_dataset
from mlsteward.gateway.app import create_app, flush_refusals
from mlsteward.gateway.client import TriggerError, build_request, trigger
from mlsteward.gateway.settings import GatewaySettings
from mlsteward.gateway.signing import sign
from mlsteward.governance import registry
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, WEAK_TUNING, write_config
from tests.support.serve_training import runner_deployment
from tests.support.stack import stop_process, wait_for

SECRET = "integration-secret-0123456789"
SERVED = ["train-heart-disease", "score-heart-disease"]
UNSERVED = "drift-heart-disease"
HOOK = "/hooks/ci"


def deployment_runs() -> list[Any]:
    """Every flow run on the server that a deployment owns (local flow runs excluded)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=False)),
            limit=200,
        )


def run_state(run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def finished(run_id: str, timeout: float = 240) -> Any:
    def final() -> Any:
        state = run_state(run_id).state
        return state if state is not None and state.is_final() else None

    return wait_for(f"flow run {run_id} to finish", final, timeout)


def delete_deployment(name: str) -> None:
    """Remove a deployment and its runs: later tests in the session must find neither."""
    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(f"{runner_deployment(name).flow_name}/{name}")
        except ObjectNotFound:
            return
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])),
            limit=200,
        )
        for run in runs:
            with suppress(ObjectNotFound):
                client.delete_flow_run(run.id)
        client.delete_deployment(dep.id)


def records_for(delivery: str) -> list[AuditRecord]:
    with audit_store() as store:
        return [
            r
            for r in store.query()
            if r.action in (Action.WEBHOOK_ACCEPTED, Action.WEBHOOK_REFUSED)
            and r.details.get("delivery") == delivery
        ]


def trigger_body(
    action: str = "score",
    model: str = MODEL,
    parameters: dict[str, Any] | None = None,
    *,
    delivery: str | None = None,
    timestamp: float | str | None = None,
) -> tuple[bytes, dict[str, str], str]:
    delivery = delivery or f"test-{uuid.uuid4()}"
    body, headers = build_request(action, model, parameters, SECRET, delivery=delivery)
    if timestamp is not None:
        doc = json.loads(body)
        doc["timestamp"] = timestamp
        body = json.dumps(doc).encode()
        headers["X-Hub-Signature-256"] = sign(body, SECRET)
    return body, headers, delivery


def checked_out_commit() -> str:
    """The commit the served deployments' checkout is at: the only one a run may train."""
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def push_body(
    files: list[str], *, delivery: str | None = None, after: str = "b" * 40
) -> tuple[bytes, dict, str]:
    delivery = delivery or str(uuid.uuid4())
    doc = {
        "ref": "refs/heads/main",
        "before": "1" * 40,
        "after": after,
        "repository": {"full_name": "acme/mlsteward", "pushed_at": int(time.time())},
        "pusher": {"name": "ci-bot"},
        "commits": [{"id": after, "added": [], "modified": files, "removed": []}],
    }
    body = json.dumps(doc).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(body, SECRET),
    }
    return body, headers, delivery


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One home for the module: a champion, a batch to score, and the served deployments."""
    root = tmp_path_factory.mktemp("gateway")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(root / "home"))
        mp.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLSTEWARD_AUDIT_URL", raising=False)
        write_config(root / "config", tuning=WEAK_TUNING)
        mp.setenv("MLSTEWARD_CONFIG_DIR", str(root / "config"))
        cohort = write_dataset(generate_cohort(n_rows=4_000, seed=7), root / "cohort.parquet")
        batch = root / "batch.parquet"
        generate_batch(n_rows=200, seed=31).to_parquet(batch, index=False)
        ingestion_flow(model=MODEL, source=str(cohort))
        assert training_flow(model=MODEL, max_evals=1).governance.decision == "promoted"

        log_path = root / "serve.log"
        log = log_path.open("w")
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.serve_training", *SERVED],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def served() -> bool:
            assert proc.poll() is None, log_path.read_text()
            with get_client(sync_client=True) as client:
                try:
                    for name in SERVED:
                        client.read_deployment_by_name(
                            f"{runner_deployment(name).flow_name}/{name}"
                        )
                except ObjectNotFound:
                    return False
            return True

        try:
            wait_for("the served deployments", served, 90)
            yield {"root": root, "batch": batch, "log": log_path}
        finally:
            stop_process(proc)
            log.close()
            for name in [*SERVED, UNSERVED]:
                delete_deployment(name)


@pytest.fixture
def mlsteward_home(stack: dict[str, Any]) -> Path:
    """The module's home instead of one per test: the served process shares it."""
    return Path(os.environ["MLSTEWARD_HOME"])


def settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        secret=SECRET,
        api_url=str(PREFECT_API_URL.value()),
        ui_url=PREFECT_UI_URL.value(),
        **overrides,
    )


@pytest.fixture
def app(stack: dict[str, Any]) -> FastAPI:
    return create_app(settings(max_bytes=64 * 1024, data_roots=[str(stack["root"])]))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def assert_accepted_run(response: httpx.Response, delivery: str, action: str) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] is True and answer["delivery"] == delivery
    [run] = answer["runs"]
    assert run["action"] == action and run["model"] == MODEL
    assert run["url"] == f"{PREFECT_UI_URL.value()}/runs/flow-run/{run['flow_run_id']}"
    return run


def test_a_signed_trigger_through_the_cli_client_starts_a_score_run_that_completes(
    stack: dict[str, Any],
) -> None:
    """``python -m mlsteward.gateway`` as ``make up`` runs it, reached by ``trigger``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MLSTEWARD_WEBHOOK_SECRET": SECRET,
        "MLSTEWARD_WEBHOOK_DATA_ROOTS": str(stack["root"]),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    log_path = stack["root"] / "gateway.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.gateway", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def healthy() -> bool:
                assert proc.poll() is None, log_path.read_text()
                with suppress(httpx.HTTPError):
                    return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
                return False

            wait_for("the gateway", healthy, 30)
            url = f"http://127.0.0.1:{port}"
            with pytest.raises(TriggerError) as refused:
                trigger("score", MODEL, {}, url, "not-the-secret")
            assert refused.value.status == 401

            answer = trigger("score", MODEL, {"source": str(stack["batch"])}, url, SECRET)
        finally:
            stop_process(proc)

    assert answer["status"] == 202
    [run] = answer["runs"]
    assert run["deployment"] == "score-model/score-heart-disease"
    state = finished(run["flow_run_id"])
    assert state.is_completed(), (state, stack["log"].read_text()[-3000:])
    flow_run = run_state(run["flow_run_id"])
    assert flow_run.parameters == {"model": MODEL, "source": str(stack["batch"])}
    assert "webhook" in flow_run.tags

    [record] = records_for(answer["delivery"])
    assert record.action == Action.WEBHOOK_ACCEPTED and record.model == MODEL
    assert record.actor == "service:ci"
    assert record.details["status"] == 202 and record.details["event"] == "trigger"
    assert [r["flow_run_id"] for r in record.details["runs"]] == [run["flow_run_id"]]
    stored = json.dumps(record.to_dict())
    assert SECRET not in stored and "sha256=" not in stored


def test_a_push_that_changes_the_model_config_trains_it_end_to_end(client: TestClient) -> None:
    for _ in range(3):
        commit = checked_out_commit()
        body, headers, delivery = push_body(
            ["config/models/heart_disease.yaml", "README.md"], after=commit
        )
        response = client.post(HOOK, content=body, headers=headers)
        run = assert_accepted_run(response, delivery, "train")
        assert run["deployment"] == "train-model/train-heart-disease"

        flow_run = run_state(run["flow_run_id"])
        assert flow_run.parameters == {
            "model": MODEL,
            "reason": f"ci: acme/mlsteward@{commit[:12]}",
            "git_ref": commit,
        }
        assert f"git_ref:{commit}" in flow_run.tags
        state = finished(run["flow_run_id"])
        # A commit landing in the checkout meanwhile makes the run refuse, rightly: send the
        # push again at the new commit.
        if state.is_completed() or checked_out_commit() == commit:
            break
    assert state.is_completed(), state
    v2 = [v for v in registry.list_versions(MODEL) if v.version == "2"]
    assert len(v2) == 1
    with audit_store() as store:
        [registered] = [
            r
            for r in store.query(model=MODEL, action=Action.VERSION_REGISTERED)
            if r.version == "2"
        ]
    assert registered.details["trigger_reason"] == flow_run.parameters["reason"]
    [record] = records_for(delivery)
    assert record.action == Action.WEBHOOK_ACCEPTED and record.details["event"] == "push"
    assert record.details["runs"][0]["flow_run_id"] == run["flow_run_id"]
    assert record.details["git_ref"] == commit and record.actor == "service:ci"


def test_ping_and_documentation_only_pushes_are_accepted_without_runs(client: TestClient) -> None:
    before = len(deployment_runs())
    ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    ping_id = str(uuid.uuid4())
    response = client.post(
        HOOK,
        content=ping,
        headers={
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": ping_id,
            "X-Hub-Signature-256": sign(ping, SECRET),
        },
    )
    assert response.status_code == 200 and response.json()["runs"] == []
    body, headers, docs_id = push_body(["README.md", "docs/gateway.md"])
    docs = client.post(HOOK, content=body, headers=headers)
    assert docs.status_code == 200, docs.text
    assert docs.json()["runs"] == [] and "documentation" in docs.json()["message"]
    assert len(deployment_runs()) == before
    for delivery, event in ((ping_id, "ping"), (docs_id, "push")):
        [record] = records_for(delivery)
        assert record.action == Action.WEBHOOK_ACCEPTED
        assert record.details["event"] == event and record.details["status"] == 200


Case = tuple[bytes, dict[str, str], str | None, int, str]


def refusal_cases(batch: Path) -> dict[str, Case]:
    """name -> (body, headers, delivery id recorded, status, text in the error)."""
    cases: dict[str, Case] = {}
    body, headers, d = trigger_body(parameters={"source": str(batch)})
    cases["bad signature"] = (
        body,
        {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64},
        d,
        401,
        "bad signature",
    )
    cases["wrong secret"] = (
        body,
        {**headers, "X-Hub-Signature-256": sign(body, "guess")},
        d,
        401,
        "bad signature",
    )
    tampered = body.replace(b'"score"', b'"train"')
    cases["tampered body"] = (tampered, headers, d, 401, "bad signature")
    cases["missing signature"] = (
        body,
        {k: v for k, v in headers.items() if "Signature" not in k},
        d,
        401,
        "missing signature",
    )
    body, headers, d = trigger_body(timestamp=time.time() - 301)
    cases["stale timestamp"] = (body, headers, d, 409, "stale delivery")
    body, headers, d = trigger_body(timestamp="2020-01-01T00:00:00Z")
    cases["old iso timestamp"] = (body, headers, d, 409, "stale delivery")
    body, headers, d = trigger_body(parameters={"source": "x" * 70_000})
    cases["body too big"] = (body, headers, d, 413, "limit")
    body, headers, d = trigger_body(model="fraud")
    cases["unknown model"] = (body, headers, d, 422, "unknown model 'fraud' (known: heart_disease)")
    body, headers, d = trigger_body(action="explode")
    cases["unknown action"] = (body, headers, d, 422, "unknown action 'explode'")
    body, headers, d = trigger_body(parameters={"sauce": 1})
    cases["unknown parameter"] = (body, headers, d, 422, "unknown parameter(s) sauce")
    body, headers, d = trigger_body(action="train", parameters={"max_evals": "many"})
    cases["mistyped parameter"] = (body, headers, d, 422, "max_evals")
    body, headers, d = push_body(["mlsteward/x.py"])
    cases["unknown event"] = (
        body,
        {**headers, "X-GitHub-Event": "pull_request"},
        d,
        422,
        "unknown event 'pull_request'",
    )
    body, headers, d = push_body(["config/models/fraud.yaml"])
    cases["unknown model in a push"] = (body, headers, d, 422, "unknown model(s) fraud")
    d = str(uuid.uuid4())
    garbage = b"action=train&model=heart_disease"
    cases["not JSON"] = (
        garbage,
        {"X-Mlsteward-Delivery": d, "X-Hub-Signature-256": sign(garbage, SECRET)},
        d,
        400,
        "not JSON",
    )
    body, headers, _ = trigger_body()
    body = body.replace(b',"delivery":"' + headers["X-Mlsteward-Delivery"].encode() + b'"', b"")
    headers = {"X-Hub-Signature-256": sign(body, SECRET)}
    cases["no delivery id"] = (body, headers, None, 400, "no delivery id")
    body, headers, d = trigger_body(action="train", parameters={"max_evals": 1000})
    cases["trials over the ceiling"] = (body, headers, d, 422, "ceiling of 200")
    body, headers, d = trigger_body(parameters={"source": str(REPO_ROOT / "pyproject.toml")})
    cases["a file outside the data roots"] = (body, headers, d, 422, "parameters.source")
    body, headers, d = trigger_body(parameters={"source": str(batch.parent / ".." / "x.csv")})
    cases["a path escaping the data roots"] = (body, headers, d, 422, "parameters.source")
    body, headers, d = trigger_body(model="../../elsewhere/heart_disease")
    cases["not a model name"] = (body, headers, d, 422, "is not a model name")
    body, headers, d = trigger_body(action="drift")
    cases["missing deployment"] = (
        body,
        headers,
        d,
        503,
        "drift-model/drift-heart-disease is not on the Prefect server",
    )
    return cases


REFUSALS = list(refusal_cases(Path("batch")))
UNAUTHENTICATED = {
    "bad signature": "bad_signature",
    "wrong secret": "bad_signature",
    "tampered body": "bad_signature",
    "missing signature": "missing_signature",
    "stale timestamp": "stale_timestamp",
    "old iso timestamp": "stale_timestamp",
    "body too big": "body_too_large",
}
"""Refusals before authentication: counted and aggregated, never a record each."""


def refusals_counted(client: TestClient) -> dict[str, float]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {
        sample.labels["reason"]: sample.value
        for family in families
        if family.name == "mlsteward_webhook_refusals"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def gateway_records() -> list[AuditRecord]:
    """The gateway's records (the served runs write their own alongside)."""
    with audit_store() as store:
        return [r for r in store.query() if r.action.startswith("webhook_")]


@pytest.mark.parametrize("case", REFUSALS)
def test_every_refusal_answers_its_status_creates_no_run_and_is_audited(
    app: FastAPI, client: TestClient, stack: dict[str, Any], case: str
) -> None:
    body, headers, delivery, status, text = refusal_cases(stack["batch"])[case]
    before = {r.id for r in deployment_runs()}
    seen = len(gateway_records())

    response = client.post(HOOK, content=body, headers=headers)

    assert response.status_code == status, response.text
    assert text in response.json()["error"]
    assert {r.id for r in deployment_runs()} == before
    if case in UNAUTHENTICATED:
        reason = UNAUTHENTICATED[case]
        assert refusals_counted(client) == {reason: 1}
        assert len(gateway_records()) == seen  # nothing written on the request path
        record = flush_refusals(app)
        assert record is not None and record.action == Action.WEBHOOK_REFUSALS
        assert record.details["counts"] == {reason: 1}
    else:
        assert refusals_counted(client) == {}
        [record] = gateway_records()[seen:]
        assert record.action == Action.WEBHOOK_REFUSED and record.actor == "service:ci"
        assert record.details["status"] == status and text in record.reason
        assert record.details["delivery"] == delivery
    stored = json.dumps(record.to_dict())
    assert SECRET not in stored and "sha256=" not in stored


def test_a_body_without_a_declared_length_is_still_limited(client: TestClient) -> None:
    before = {r.id for r in deployment_runs()}
    delivery = str(uuid.uuid4())

    def chunks() -> Iterator[bytes]:  # sent chunked: no Content-Length to trust
        yield b'{"action": "score", "padding": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    response = client.post(HOOK, content=chunks(), headers={"X-Mlsteward-Delivery": delivery})
    assert response.status_code == 413, response.text
    assert {r.id for r in deployment_runs()} == before
    assert refusals_counted(client) == {"body_too_large": 1}
    assert records_for(delivery) == []


@pytest.fixture
def unserved_drift() -> Iterator[None]:
    """The drift deployment registered but served by nobody: its runs stay scheduled."""
    runner_deployment(UNSERVED).apply()
    try:
        yield
    finally:
        delete_deployment(UNSERVED)


def test_a_replayed_delivery_is_refused_and_starts_nothing(
    client: TestClient, unserved_drift: None
) -> None:
    body, headers, delivery = trigger_body(action="drift")
    first = client.post(HOOK, content=body, headers=headers)
    assert_accepted_run(first, delivery, "drift")
    runs_after_first = {r.id for r in deployment_runs()}

    again = client.post(HOOK, content=body, headers=headers)  # the same request
    assert again.status_code == 409 and "replay" in again.json()["error"]
    # A captured body under a fresh (unsigned) header id, and a new body under the used id.
    fresh_id = client.post(HOOK, content=body, headers={**headers, "X-Mlsteward-Delivery": "x-1"})
    assert fresh_id.status_code == 401
    other, other_headers, _ = trigger_body(action="drift", delivery=delivery)
    assert other != body
    reused = client.post(HOOK, content=other, headers=other_headers)
    assert reused.status_code == 409

    assert {r.id for r in deployment_runs()} == runs_after_first
    records = records_for(delivery)
    assert [r.action for r in records] == [
        Action.WEBHOOK_ACCEPTED,
        Action.WEBHOOK_REFUSED,
        Action.WEBHOOK_REFUSED,
    ]
    assert [r.details["status"] for r in records] == [202, 409, 409]


def test_concurrent_deliveries_are_each_accepted_once(app: FastAPI, unserved_drift: None) -> None:
    same = trigger_body(action="drift")
    distinct = [trigger_body(action="drift") for _ in range(8)]

    async def send(requests: list[tuple[bytes, dict[str, str], str]]) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            return await asyncio.gather(
                *(c.post(HOOK, content=b, headers=h) for b, h, _ in requests)
            )

    before = {r.id for r in deployment_runs()}
    racing = asyncio.run(send([same] * 8))
    statuses = sorted(r.status_code for r in racing)
    assert statuses == [202] + [409] * 7, [r.text for r in racing]
    created = [r for r in deployment_runs() if r.id not in before]
    assert len(created) == 1

    parallel = asyncio.run(send(distinct))
    assert [r.status_code for r in parallel] == [202] * 8, [r.text for r in parallel]
    ids = {r.json()["runs"][0]["flow_run_id"] for r in parallel}
    created = [r for r in deployment_runs() if r.id not in before]
    assert len(ids) == 8 and len(created) == 9
    assert {str(r.id) for r in created} >= ids
    assert [r.action for r in records_for(same[2])].count(Action.WEBHOOK_ACCEPTED) == 1
    assert len(records_for(same[2])) == 8

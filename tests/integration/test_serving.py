"""The prediction service on the real stack: verified MLflow versions, the Feast online store,
the prediction log and Prometheus metrics; in-process (TestClient) and as its own process."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import numpy as np
import pandas as pd
import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from schemathesis.checks import positive_data_acceptance
from typer.testing import CliRunner

from flows.scoring import scoring_flow
from mlsteward.alerts.engine import observe
from mlsteward.alerts.state import Transition
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.models import get_model_config
from mlsteward.features.online import online_features
from mlsteward.governance import canary, registry
from mlsteward.governance import promotion as governance
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.scoring import score_frame
from tests.conftest import REPO_ROOT
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
from tests.support.serving import (
    FAST_TUNING,
    SERVICE_SETTINGS,
    Service,
    bearer,
    issue_token,
    shut_down,
)

PREDICT = f"/v1/models/{MODEL}/predict"
runner = CliRunner()


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def stack(champion_and_challenger: dict[str, Any], mlsteward_home: Path) -> dict[str, Any]:
    write_config(mlsteward_home.parent / "config", tuning=FAST_TUNING, **SERVICE_SETTINGS)
    return champion_and_challenger


@pytest.fixture(scope="module")
def refusing_client(stack: dict[str, Any]) -> Iterator[TestClient]:
    """One in-process app for requests it refuses before scoring: they change nothing in it,
    so the malformed-field cases need not start (and load the model in) an app each."""
    from mlsteward.serving.app import create_app
    from mlsteward.serving.settings import ServingSettings

    app = create_app([get_model_config(MODEL)], ServingSettings(models=[MODEL]))
    with TestClient(app, headers=bearer(issue_token("viewer"))) as client:
        yield client


@pytest.fixture(scope="module")
def service(stack: dict[str, Any], start_module_service: Callable[[], Service]) -> Service:
    """One service for the module, started once the stack is trained."""
    return start_module_service()


def post(url: str, body: Any, timeout: float = 10, token: str | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    req = urllib.request.Request(url, data, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=bearer(token) if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def predict(service: Service, body: Any) -> tuple[int, Any]:
    """Predict on the running service with its (viewer's) token."""
    return post(f"{service.url}{PREDICT}", body, token=service.token)


def described(service: Service) -> Any:
    """The running service's description of the model, read with its token."""
    return json.loads(get(f"{service.url}/v1/models/{MODEL}", service.token)[1])


def wait_for(condition: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- predictions ------------------------------------------------------------------------------
def test_online_predictions_equal_batch_scoring(
    stack: dict[str, Any], serving_client: TestClient
) -> None:
    """Same verified model, same online features: the service's numbers are batch scoring's."""
    cfg = get_model_config(MODEL)
    ids = stack["ids"][:40]
    verified = governance.load_version(MODEL, "champion", actor="test")
    frame = online_features(cfg, ids)
    frame[cfg.timestamp_column] = np.datetime64("2026-01-01")
    batch = score_frame(cfg, verified, frame, top_k=3).frame
    r = serving_client.post(PREDICT, json={"entity_ids": ids, "explain": True, "top_k": 3})
    assert r.status_code == 200, r.text
    out = r.json()["predictions"]
    assert [p["entity_id"] for p in out] == ids
    assert [p["probability"] for p in out] == batch["prediction_proba"].tolist()
    assert [p["label"] for p in out] == batch["prediction"].tolist()
    assert {p["version"] for p in out} == {stack["champion"]}
    assert not any("arm" in p for p in out)  # which arm answered is logged, never answered
    for p, (_, row) in zip(out, batch.iterrows(), strict=True):
        exp = p["explanation"]
        assert [c["feature"] for c in exp["contributions"]] == [
            row[f"shap_{k}_feature"] for k in (1, 2, 3)
        ]
        for c, k in zip(exp["contributions"], (1, 2, 3), strict=True):
            assert c["value"] == pytest.approx(row[f"shap_{k}_value"], abs=1e-5)

    # The same features sent as values give the same answers.
    instances = [
        {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
         for k, v in rec.items() if k in cfg.feature_names}
        for rec in json.loads(frame.to_json(orient="records"))
    ]  # fmt: skip
    r = serving_client.post(PREDICT, json={"instances": instances})
    assert r.status_code == 200, r.text
    by_value = [p["probability"] for p in r.json()["predictions"]]
    assert by_value == pytest.approx([p["probability"] for p in out], abs=1e-7)
    assert all("explanation" not in p or p["explanation"] is None for p in r.json()["predictions"])


def _instance(stack: dict[str, Any]) -> dict[str, Any]:
    cfg = get_model_config(MODEL)
    rec = json.loads(online_features(cfg, stack["ids"][:1]).to_json(orient="records"))[0]
    return {k: v for k, v in rec.items() if k in cfg.feature_names and v is not None}


BAD_INSTANCES = [
    ("missing", lambda x: {k: v for k, v in x.items() if k != "bmi"}, "bmi", "not_null"),
    ("extra", lambda x: {**x, "height": 180}, "height", "unknown_field"),
    ("text for a number", lambda x: {**x, "age": "old"}, "age", "dtype"),
    ("out of range", lambda x: {**x, "age": 300}, "age", "range"),
    ("fractional int", lambda x: {**x, "age": 40.5}, "age", "dtype"),
    ("bad category", lambda x: {**x, "smoking": "sometimes"}, "smoking", "allowed_category"),
    ("number for a bool", lambda x: {**x, "diabetes": 1}, "diabetes", "dtype"),
    ("null", lambda x: {**x, "cholesterol": None}, "cholesterol", "not_null"),
]


def _batches(url: str) -> tuple[float, float]:
    """(micro-batches, rows in them) so far, from the service's /metrics."""
    _, body = get(f"{url}/metrics")
    found = {}
    for line in body.decode().splitlines():
        for part in ("count", "sum"):
            if line.startswith(f"mlsteward_micro_batch_rows_{part}{{") and f'"{MODEL}"' in line:
                found[part] = float(line.rsplit(" ", 1)[1])
    return found.get("count", 0.0), found.get("sum", 0.0)


def test_concurrent_requests_share_micro_batches_with_the_same_answers(
    service: Service, stack: dict[str, Any]
) -> None:
    """A lone client is scored one request at a time; concurrent requests are batched together
    (one lookup, one SHAP pass) and get exactly the answers they get alone."""
    url = f"{service.url}{PREDICT}"
    ids = stack["ids"][:48]
    count0, rows0 = _batches(service.url)
    alone = {}
    for i in ids:
        status, body = post(url, {"entity_ids": [i], "explain": True}, token=service.token)
        assert status == 200, body
        alone[i] = body["predictions"][0]
    count1, rows1 = _batches(service.url)
    assert (count1 - count0, rows1 - rows0) == (len(ids), len(ids))

    async def burst() -> list[Any]:
        limits = httpx.Limits(max_connections=len(ids))
        async with httpx.AsyncClient(limits=limits, headers=service.headers, timeout=30) as client:
            return await asyncio.gather(
                *(client.post(url, json={"entity_ids": [i], "explain": True}) for i in ids)
            )

    answers = asyncio.run(burst())
    count2, rows2 = _batches(service.url)
    assert rows2 - rows1 == len(ids)
    assert count2 - count1 < len(ids), "no two concurrent requests shared a micro-batch"
    for i, r in zip(ids, answers, strict=True):
        assert r.status_code == 200, r.text
        got = r.json()["predictions"][0]
        assert got["probability"] == alone[i]["probability"]
        assert got["explanation"] == alone[i]["explanation"]


def test_an_id_outside_int64_is_refused_alone_not_with_its_micro_batch(
    service: Service, stack: dict[str, Any]
) -> None:
    """Sent together, the requests share micro-batches; the one with an id no 64-bit key can
    hold gets its own 422 and every other request is answered."""
    url = f"{service.url}{PREDICT}"
    ids = stack["ids"][:16]
    bad = 2**70

    async def burst() -> list[Any]:
        async with httpx.AsyncClient(headers=service.headers, timeout=30) as client:
            good = [client.post(url, json={"entity_ids": [i]}) for i in ids]
            return await asyncio.gather(client.post(url, json={"entity_ids": [bad]}), *good)

    refused, *answered = asyncio.run(burst())
    assert refused.status_code == 422, refused.text
    error = refused.json()["detail"][0]
    assert error["loc"] == ["body", "entity_ids", 0] and str(bad) in error["msg"], error
    assert [r.status_code for r in answered] == [200] * len(ids), [r.text for r in answered]


@pytest.mark.parametrize(("case", "mutate", "field", "rule"), BAD_INSTANCES,
                         ids=[c[0] for c in BAD_INSTANCES])  # fmt: skip
def test_bad_fields_are_422_naming_each(
    stack: dict[str, Any],
    refusing_client: TestClient,
    case: str,
    mutate: Any,
    field: str,
    rule: str,
) -> None:
    good = _instance(stack)
    r = refusing_client.post(PREDICT, json={"instances": [good, mutate(good)]})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "instances", 1, field], error
    assert error["type"] == rule and field in error["msg"]


def test_bad_requests_get_the_right_status(
    stack: dict[str, Any], serving_client: TestClient
) -> None:
    cfg = get_model_config(MODEL)
    known = stack["ids"][0]
    answered = []
    before = set(prediction_log.read(MODEL).get("request_id", []))
    r = serving_client.post(PREDICT, json={"entity_ids": [known, 987_654_321, 123_456_789]})
    assert r.status_code == 404
    msgs = [e["msg"] for e in r.json()["detail"]]
    assert len(msgs) == 2 and "987654321" in msgs[0] and "123456789" in msgs[1]
    r = serving_client.post(PREDICT, json={"entity_ids": ["abc"]})
    assert r.status_code == 422 and "expected an integer" in r.json()["detail"][0]["msg"]
    too_many = [known] * (cfg.serving.max_batch_rows + 1)
    r = serving_client.post(PREDICT, json={"entity_ids": too_many})
    assert r.status_code == 413 and "max_batch_rows" in r.json()["detail"][0]["msg"]
    r = serving_client.post(PREDICT, json={"entity_ids": [known], "instances": [{}]})
    assert r.status_code == 422 and "either entity_ids or instances" in r.text
    r = serving_client.post(PREDICT, json={"entity_ids": []})
    assert r.status_code == 422
    r = serving_client.post(
        PREDICT, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    r = serving_client.post(PREDICT, json={"entity_ids": [known], "top_k": 0})
    [error] = r.json()["detail"]
    assert r.status_code == 422 and error["loc"] == ["body", "top_k"], error
    r = serving_client.post(PREDICT, params={"explain": "maybe"}, json={"entity_ids": [known]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "explain"]
    r = serving_client.post(PREDICT, params={"explain": "yes"}, json={"entity_ids": [known]})
    assert r.status_code == 200 and "explanation" in r.json()["predictions"][0]
    answered.append(r.json()["request_id"])
    r = serving_client.post("/v1/models/no_such_model/predict", json={"entity_ids": [known]})
    assert r.status_code == 404 and "no_such_model" in r.text
    # nothing refused reached the prediction log: only the two answered requests
    r = serving_client.post(PREDICT, json={"entity_ids": [known]})
    assert r.status_code == 200
    answered.append(r.json()["request_id"])
    shut_down(serving_client)  # the app's log writer flushes what it answered
    # Only this process's ids: the module's running service may still be flushing its rows.
    logged = prediction_log.read(MODEL)
    ours = {i for i in logged["request_id"] if i.startswith(answered[0][:16])}
    assert ours - before == set(answered)
    assert set(logged["entity_id" if "entity_id" in logged else cfg.source.entity].dropna()) <= {
        *stack["ids"]
    }


def test_a_body_over_the_limit_is_413_at_any_length_and_one_at_it_is_read(
    stack: dict[str, Any], serving_client: TestClient
) -> None:
    """serving.max_body_bytes bounds the body whether its length is declared or not; a body of
    exactly the limit is answered."""
    limit = get_model_config(MODEL).serving.max_body_bytes
    known = json.dumps({"entity_ids": [stack["ids"][0]]}).encode()
    exact = known + b" " * (limit - len(known))
    r = serving_client.post(PREDICT, content=exact, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    for content in (exact + b" ", iter([exact, b" "])):  # declared length, then chunked
        r = serving_client.post(
            PREDICT, content=content, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body"] and error["type"] == "body_too_large", error
        assert f"limit of {limit} bytes (serving.max_body_bytes)" in error["msg"]
        assert r.headers["connection"] == "close"
    declared = serving_client.post(PREDICT, content=exact + b" ").json()["detail"][0]["msg"]
    assert f"of {limit + 1} bytes" in declared


HUGE_BODY = 300 * 2**20
CHUNK = 2**16


def _memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def _send_huge(service: Service, declared: bool, token: str | None) -> tuple[httpx.Response, int]:
    """POST a 300 MB body (streamed from a generator, announced or chunked) to the service:
    its answer and the bytes the client got to send."""
    sent = 0

    def body() -> Any:
        nonlocal sent
        chunk = b" " * CHUNK  # JSON whitespace: only its size can be wrong
        while sent < HUGE_BODY:
            sent += CHUNK
            yield chunk

    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    if declared:
        headers["Content-Length"] = str(HUGE_BODY)
    r = httpx.post(f"{service.url}{PREDICT}", content=body(), headers=headers, timeout=60)
    return r, sent


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_300_mb_body_is_refused_while_it_streams_in(
    service: Service, stack: dict[str, Any], declared: bool
) -> None:
    """The real server: a 300 MB body, announced or chunked, is refused with a 413 after a few
    MB at most (the connection closes; the client cannot send the rest) and the server's peak
    memory does not grow by it. Without a token it is a 401 just as early."""
    pid = service.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = _memory_mb(pid, "VmRSS")
    r, sent = _send_huge(service, declared, service.token)
    grown = _memory_mb(pid, "VmHWM") - before
    assert r.status_code == 413, r.text
    assert "serving.max_body_bytes" in r.json()["detail"][0]["msg"]
    assert sent < HUGE_BODY // 10, f"the server took {sent >> 20} MB of a refused body"
    assert grown < 50, f"the server's peak memory grew by {grown:.0f} MB"
    r, sent = _send_huge(service, declared, None)
    assert r.status_code == 401 and r.headers["connection"] == "close", r.text
    assert sent < HUGE_BODY // 10, f"the server took {sent >> 20} MB from a caller without a token"
    assert predict(service, {"entity_ids": stack["ids"][:1]})[0] == 200


def test_online_rows_take_late_labels_and_read_with_batch_rows(
    stack: dict[str, Any], serving_client: TestClient, tmp_path: Path
) -> None:
    """The loop drift and the quality guardrail rely on: an answer's (entity, event_timestamp)
    is the key its outcome comes back with, and online rows read back with batch-scored ones."""
    cfg = get_model_config(MODEL)
    ids = stack["ids"][100:130]
    out = serving_client.post(PREDICT, json={"entity_ids": ids}).json()["predictions"]
    shut_down(serving_client)  # everything the app answered is now in the log
    outcomes = pd.DataFrame({
        cfg.source.entity: [p["entity_id"] for p in out],
        cfg.timestamp_column: [p["event_timestamp"] for p in out],
        cfg.label: [p["label"] for p in out],
    })  # fmt: skip
    result = prediction_log.attach_labels(
        MODEL, outcomes, entity=cfg.source.entity, timestamp=cfg.timestamp_column, label=cfg.label
    )
    assert result["matched"] == len(ids) and result["unmatched"] == 0

    batch = online_features(cfg, ids[:10])
    source = tmp_path / "batch.parquet"
    batch.assign(**{cfg.timestamp_column: pd.Timestamp("2026-01-01", tz="UTC")}).to_parquet(source)
    scored = scoring_flow(model=MODEL, source=str(source))
    assert scored.rows == 10
    logged = prediction_log.read_with_labels(MODEL)
    online = logged[logged["request_id"].notna()]
    offline = logged[logged["request_id"].isna()]
    assert len(offline) >= 10 and set(online["arm"]) == {"champion"}
    assert online.loc[online[cfg.source.entity].isin(ids), "label"].notna().all()
    for col in cfg.feature_names:  # one schema for both kinds of rows
        assert online[col].notna().all(), col
        assert online[col].dtype == offline[col].dtype, col


# -- who may call -----------------------------------------------------------------------------
def _refusal(r: Any, status: int, kind: str) -> dict[str, Any]:
    """The one error entry of a refusal, in the service's error shape."""
    assert r.status_code == status, r.text
    [error] = r.json()["detail"]
    assert error["type"] == kind, error
    return error


def test_predict_needs_a_valid_token_in_either_header(
    stack: dict[str, Any], serving_client: TestClient
) -> None:
    body = {"entity_ids": stack["ids"][:1]}
    token = serving_client.headers.pop("Authorization").removeprefix("Bearer ")
    r = serving_client.post(PREDICT, json=body)
    error = _refusal(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"] == "Bearer"
    assert error["loc"] == ["header", "authorization"] and "X-API-Key" in error["msg"]
    forged = f"msw_{'0' * 12}_{'x' * 43}"
    r = serving_client.post(PREDICT, json=body, headers=bearer(forged))
    assert "not valid" in _refusal(r, 401, "unauthenticated")["msg"]
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert forged not in r.text  # a refusal never repeats the token
    r = serving_client.post(PREDICT, json=body, headers={"Authorization": f"Basic {token}"})
    assert "Bearer <token>" in _refusal(r, 401, "unauthenticated")["msg"]
    r = serving_client.post(PREDICT, json=body, headers={"X-API-Key": forged})
    assert _refusal(r, 401, "unauthenticated")["loc"] == ["header", "x-api-key"]
    # refused before the body is read: a bad body is still a 401, not a 422
    r = serving_client.post(PREDICT, content=b"{not json", headers={"X-API-Key": forged})
    _refusal(r, 401, "unauthenticated")
    assert serving_client.post(PREDICT, json=body, headers={"X-API-Key": token}).status_code == 200
    r = serving_client.post(PREDICT, json=body, headers=bearer(token))
    assert r.status_code == 200 and r.json()["predictions"][0]["entity_id"] == body["entity_ids"][0]


def test_describe_and_the_api_docs_need_a_token_that_may_read(
    serving_client: TestClient,
) -> None:
    token = serving_client.headers.pop("Authorization").removeprefix("Bearer ")
    for path in (f"/v1/models/{MODEL}", "/v1/models/nope", "/openapi.json", "/docs", "/redoc"):
        _refusal(serving_client.get(path), 401, "unauthenticated")
        assert serving_client.get(path, headers=bearer(token)).status_code in (200, 404), path
    schema = serving_client.get("/openapi.json", headers=bearer(token)).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearerToken", "apiKey"}
    predict_op = schema["paths"]["/v1/models/{model}/predict"]["post"]
    assert {"401", "403"} <= set(predict_op["responses"]) and predict_op["security"]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert serving_client.get("/metrics").status_code == 200  # open to scrapers by default


def test_a_revoked_token_is_refused_by_the_running_service(
    service: Service, stack: dict[str, Any]
) -> None:
    """Revoked in the identity store, a token stops working within the service's few seconds
    of caching it."""
    from mlsteward.identity import identity_store, local_principal

    token = issue_token("viewer", "soon-revoked")
    body = {"entity_ids": stack["ids"][:1]}
    assert post(f"{service.url}{PREDICT}", body, token=token)[0] == 200
    with identity_store() as store:
        token_id = token.split("_")[1]
        assert store.revoke_token(token_id, by=local_principal()).state == "revoked"
    wait_for(lambda: post(f"{service.url}{PREDICT}", body, token=token)[0] == 401, 20,
             "the revoked token to be refused")  # fmt: skip
    status, answer = post(f"{service.url}{PREDICT}", body, token=token)
    assert status == 401 and "revoked" in answer["detail"][0]["msg"], answer
    assert predict(service, body)[0] == 200  # the service's own token still works


def test_routing_keys_need_permission_route(
    stack: dict[str, Any], serving_client: TestClient
) -> None:
    """Routing keys choose the arm a request is routed to: a viewer may predict but not steer,
    an admin may."""
    body = {"instances": [_instance(stack)], "routing_keys": ["patient-7"]}
    r = serving_client.post(PREDICT, json=body)
    error = _refusal(r, 403, "permission_denied")
    assert error["permission"] == "route" and error["loc"] == ["body", "routing_keys"]
    assert "needs permission 'route'" in error["msg"] and "user:serving-viewer" in error["msg"]
    assert serving_client.post(PREDICT, json={"instances": body["instances"]}).status_code == 200
    r = serving_client.post(PREDICT, json=body, headers=bearer(issue_token("admin")))
    assert r.status_code == 200, r.text


def test_with_authentication_off_anyone_is_answered_and_the_service_says_so(
    stack: dict[str, Any], make_serving_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="mlsteward.serving"):
        client = make_serving_client(auth=False)
    assert "AUTHENTICATION IS OFF" in caplog.text
    client.headers.pop("Authorization")
    body = {"instances": [_instance(stack)], "routing_keys": ["patient-7"]}
    assert client.post(PREDICT, json=body).status_code == 200
    assert client.get(f"/v1/models/{MODEL}").status_code == 200
    assert client.get("/openapi.json").json()["components"].get("securitySchemes") is None
    assert "models" in client.get("/readyz").json()


def test_metrics_can_need_a_token_too(make_serving_client: Any) -> None:
    client = make_serving_client(metrics_auth=True)
    token = client.headers.pop("Authorization")
    _refusal(client.get("/metrics"), 401, "unauthenticated")
    r = client.get("/metrics", headers={"Authorization": token})
    assert r.status_code == 200 and "mlsteward_requests_total" in r.text
    schema = client.get("/openapi.json", headers={"Authorization": token}).json()
    assert schema["paths"]["/metrics"]["get"]["security"]


# -- probes and metrics ---------------------------------------------------------------------------
def test_probes_and_metrics(service: Service, stack: dict[str, Any]) -> None:
    """Probes are open; what readiness says about each model (versions, hashes, errors) only
    to a caller who may read."""
    assert get(f"{service.url}/healthz")[0] == 200
    assert get(f"{service.url}/readyz") == (200, b'{"ready":true}')
    status, body = get(f"{service.url}/readyz", service.token)
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True
    champion = ready["models"][MODEL]["champion"]
    assert champion["version"] == stack["champion"] and len(champion["sha256"]) == 64
    for ids in ([stack["ids"][1]], stack["ids"][2:6]):
        assert predict(service, {"entity_ids": ids, "explain": True})[0] == 200
    assert predict(service, {"entity_ids": [-5]})[0] == 404
    text = get(f"{service.url}/metrics")[1].decode()
    v = stack["champion"]
    assert (
        f'mlsteward_requests_total{{arm="champion",model="{MODEL}",status="200",version="{v}"}}'
        in text
    )
    assert f'mlsteward_requests_total{{arm="",model="{MODEL}",status="404",version=""}}' in text
    assert f'mlsteward_request_seconds_bucket{{arm="champion",le="0.005",model="{MODEL}"' in text
    assert "mlsteward_shap_seconds_count" in text and "mlsteward_prediction_log_queue_depth" in text
    assert (
        f'mlsteward_model_loaded{{arm="champion",model="{MODEL}",sha256="{champion["sha256"]}"'
        in text
    )


def test_predict_command_asks_the_service(
    service: Service, stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [str(i) for i in stack["ids"][:2]]
    args = ["predict", MODEL, "-e", ids[0], "-e", ids[1], "--explain", "--url", service.url]
    monkeypatch.delenv("MLSTEWARD_SERVING_TOKEN", raising=False)
    monkeypatch.delenv("MLSTEWARD_TOKEN", raising=False)
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "HTTP 401" in refused.output
    assert "MLSTEWARD_TOKEN" in refused.output
    monkeypatch.setenv("MLSTEWARD_TOKEN", service.token)
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert [str(p["entity_id"]) for p in out["predictions"]] == ids
    assert all(len(p["explanation"]["contributions"]) == 3 for p in out["predictions"])
    human = runner.invoke(app, args)
    assert (
        human.exit_code == 0
        and "log-odds" in human.stdout
        and f"v{stack['champion']}" in human.stdout
    )
    missing = runner.invoke(app, ["predict", MODEL, "-e", "424242424", "--url", service.url])
    assert missing.exit_code == 1 and "HTTP 404" in missing.output and "424242424" in missing.output


FUZZ_EXAMPLES = 60
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")
PREDICT_ROUTE = "/v1/models/{model}/predict"


def _fuzz(service: Service, token: str | None) -> dict[str, set[int]]:
    """Every operation of the service's OpenAPI schema, fuzzed with ``token`` (or none): the
    statuses each answered; the checks fail on any 5xx and on answers off the schema."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", headers=service.headers)
    headers = bearer(token) if token else {}
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.setdefault(operation.path, set()).update(_fuzz_operation(operation, headers))
    return seen


def _fuzz_operation(operation: Any, headers: dict[str, str]) -> set[int]:
    statuses: set[int] = set()

    @hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))  # fmt: skip
    @hypothesis.given(case=operation.as_strategy())
    def call(case: Any) -> None:
        response = case.call_and_validate(
            headers=headers, excluded_checks=[positive_data_acceptance]
        )
        statuses.add(response.status_code)

    call()
    return statuses


def test_fuzzed_requests_never_get_a_server_error(service: Service) -> None:
    """Whatever the schema admits, and what it does not, with a valid token: an answer or a 4xx
    other than 401 and 403, never a 5xx, and every answer matches the documented schema and
    status codes (the schema states its security, so schemathesis also checks that a request it
    got an answer to is refused without the token and with a wrong one)."""
    seen = _fuzz(service, service.token)
    assert PREDICT_ROUTE in seen, sorted(seen)
    assert not any(code >= 500 or code in (401, 403) for c in seen.values() for code in c), seen


def test_fuzzed_requests_without_a_token_are_all_401_on_protected_routes(service: Service) -> None:
    seen = _fuzz(service, None)
    protected = {path: codes for path, codes in seen.items() if path not in OPEN_PATHS}
    oip = {
        "/v2", "/v2/models/{model}", "/v2/models/{model}/versions/{version}",
        "/v2/models/{model}/ready", "/v2/models/{model}/versions/{version}/ready",
        "/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer",
    }  # fmt: skip
    assert set(protected) == {PREDICT_ROUTE, "/v1/models/{model}", *oip}, sorted(seen)
    assert all(codes == {401} for codes in protected.values()), protected
    assert not any(code >= 500 for codes in seen.values() for code in codes), seen


# -- canary routing -------------------------------------------------------------------------------
def _logged_arms(answers: list[dict[str, Any]]) -> dict[Any, str]:
    """Entity -> arm, as the prediction log recorded these answers (they never say it)."""
    entity = get_model_config(MODEL).source.entity
    request_ids = {a["request_id"] for a in answers}
    rows = sum(len(a["predictions"]) for a in answers)
    found: list[pd.DataFrame] = []

    def logged() -> bool:
        frame = prediction_log.read(MODEL, columns=[entity, "arm", "request_id"])
        found[:] = [frame[frame["request_id"].isin(request_ids)]]
        return len(found[0]) == rows

    wait_for(logged, what="the answers in the prediction log")
    return dict(zip(found[0][entity].tolist(), found[0]["arm"].tolist(), strict=True))


def test_canary_routes_a_stable_share_by_entity(service: Service, stack: dict[str, Any]) -> None:
    """Routing by entity, read back from the prediction log: neither the answers nor the
    service's description name the arm or the rollout id that salts the routing."""
    opened = canary.open_canary(MODEL, stack["challenger"], 0.3)
    try:
        wait_for(lambda: described(service)["fraction"] == 0.3, what="the canary to open")
        shown = described(service)
        assert shown["canary"]["challenger_version"] == stack["challenger"]
        assert "rollout_id" not in shown["canary"]
        assert opened.rollout_id not in json.dumps(shown)
        ids = stack["ids"][:2000]
        answered = []
        for start in range(0, len(ids), 200):
            status, out = predict(service, {"entity_ids": ids[start : start + 200]})
            assert status == 200, out
            assert not any("arm" in p for p in out["predictions"])
            assert opened.rollout_id not in json.dumps(out)
            answered.append(out)
        arms = _logged_arms(answered)
        for p in (p for out in answered for p in out["predictions"]):
            arm = arms[p["entity_id"]]
            assert p["version"] == stack["challenger" if arm == "challenger" else "champion"]
        share = sum(a == "challenger" for a in arms.values()) / len(arms)
        assert abs(share - 0.3) < 0.035, share  # ~3.5 standard errors at n=2000
        # One entity, one arm: asked again (alone and in other company), the same answer.
        sample = ids[:50]
        for chunk in (sample, list(reversed(sample)), sample[7:8]):
            again = _logged_arms([predict(service, {"entity_ids": chunk})[1]])
            assert again == {e: arms[e] for e in chunk}
        # Raising the share keeps the challenger's entities on the challenger.
        canary.set_fraction(MODEL, opened, 0.6, 2)
        wait_for(lambda: described(service)["fraction"] == 0.6, what="the new share")
        wider = _logged_arms([predict(service, {"entity_ids": ids[:200]})[1]])
        was_challenger = [e for e in ids[:200] if arms[e] == "challenger"]
        assert was_challenger and all(wider[e] == "challenger" for e in was_challenger)
    finally:
        canary.close_canary(MODEL)
    wait_for(lambda: described(service)["canary"] is None, what="the canary to close")
    after = _logged_arms([predict(service, {"entity_ids": ids[:200]})[1]])
    assert set(after.values()) == {"champion"}


# -- alias switch under load, then SIGTERM ---------------------------------------------------------
def test_alias_switch_under_load_loses_nothing_and_sigterm_flushes_the_log(
    service: Service, stack: dict[str, Any]
) -> None:
    started = pd.Timestamp.now(tz="UTC")
    answered: list[dict[str, Any]] = []
    failures: list[Any] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            ids = [stack["ids"][(worker * 7919 + n * 31 + k) % len(stack["ids"])] for k in range(3)]
            n += 1
            try:
                status, out = predict(service, {"entity_ids": ids})
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                if stop.is_set():
                    return  # the server stopped accepting after SIGTERM: not an answer
                failures.append(repr(exc))
                continue
            (answered if status == 200 else failures).append(out)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(answered) > 50, what="traffic")
        cfg = get_model_config(MODEL)
        governance.promote(cfg, stack["challenger"], actor="test", reason="switch under load")
        wait_for(lambda: any(p["version"] == stack["challenger"] for r in answered[-20:]
                             for p in r["predictions"]), what="the new champion")  # fmt: skip
        time.sleep(0.5)
        stop.set()
        code = service.stop()  # SIGTERM while the load threads still have requests in flight
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is normal
    log = service.log_tail()
    assert code in (0, -signal.SIGTERM), log[-2000:]
    assert "not written" not in log and "Traceback" not in log, log[-2000:]
    assert failures == []
    versions = [p["version"] for r in answered for p in r["predictions"]]
    assert set(versions) == {stack["champion"], stack["challenger"]}
    # Each request was answered by one version: no request mixed the old and the new champion.
    assert all(len({p["version"] for p in r["predictions"]}) == 1 for r in answered)
    logged = prediction_log.read(MODEL)
    ours = logged[logged["request_id"].isin({r["request_id"] for r in answered})]
    during = logged[logged["scored_at"] >= started]
    assert len(during) == len(ours) == sum(len(r["predictions"]) for r in answered)
    assert set(ours["model_version"].astype(str)) == {stack["champion"], stack["challenger"]}


def test_a_model_not_trained_yet_keeps_no_other_model_out_of_rotation(
    stack: dict[str, Any],
) -> None:
    """A model just added to the config has no champion: it answers 503 naming that, and the
    service stays ready for the model that has one."""
    from mlsteward.config.models import load_model_config
    from mlsteward.serving.app import create_app
    from mlsteward.serving.settings import ServingSettings

    untrained = load_model_config(REPO_ROOT / "config" / "models" / "diabetes.yaml")
    app = create_app([get_model_config(MODEL), untrained], ServingSettings())
    with TestClient(app, headers=bearer(issue_token("viewer"))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert "diabetes has no champion" in ready.json()["models"]["diabetes"]["errors"]
        r = client.post("/v1/models/diabetes/predict", json={"entity_ids": [1]})
        assert r.status_code == 503, r.text  # not applied to Feast, no champion either
        assert client.post(PREDICT, json={"entity_ids": stack["ids"][:2]}).status_code == 200


# -- training-serving skew: the served features against Feast's offline store -----------------
SKEWED = "bmi"
SKEW_ACTOR = "user:skew-test"


def _write_online(cfg: Any, rows: pd.DataFrame) -> None:
    """Rows of the feature view written straight into the online store (every column of the
    view, as Feast's write needs), past the offline source."""
    from mlsteward.features.store import get_store

    store = get_store()
    view = store.get_feature_view(cfg.feature_view_name)
    frame = rows[[cfg.source.entity, *(f.name for f in view.features)]].copy()
    frame[cfg.timestamp_column] = pd.Timestamp.now(tz="UTC")
    frame[view.batch_source.created_timestamp_column] = pd.Timestamp.now(tz="UTC")
    store.write_to_online_store(cfg.feature_view_name, frame)


def _served_since(since: datetime) -> int:
    return len(prediction_log.read(MODEL, since=since, columns=["request_id"]))


def _wait_for_log(since: datetime, rows: int) -> None:
    deadline = time.monotonic() + 30
    while _served_since(since) < rows:
        assert time.monotonic() < deadline, f"the log holds {_served_since(since)}, not {rows}"
        time.sleep(0.1)


def _predict_ids(client: Any, ids: list[Any]) -> None:
    for start in range(0, len(ids), 40):
        r = client.post(PREDICT, json={"entity_ids": ids[start : start + 40]})
        assert r.status_code == 200, r.text


def _alert_records(action: Action, after: int) -> list[Any]:
    with audit_store() as audit:
        return [r for r in audit.query(model=MODEL, action=action) if r.seq > after]


def _audit_head() -> int:
    with audit_store() as audit:
        last = audit.query(limit=1)
    return last[0].seq if last else 0


def test_a_corrupted_online_feature_alerts_by_name_and_a_clean_run_resolves_it(
    stack: dict[str, Any], make_serving_client: Any
) -> None:
    """One feature corrupted in the online store for a quarter of the entities (as a write that
    bypassed the source would); the service answers with it; the skew check finds exactly that
    feature and fires one alert naming it; once the online store holds the source's values again
    and the service has answered with them, the alert resolves."""
    from mlsteward.monitoring.skew import check_skew

    cfg = get_model_config(MODEL)
    champion = registry.version_by_alias(MODEL, registry.CHAMPION).version
    ids = stack["ids"][:120]
    corrupted = ids[:30]
    head = _audit_head()
    source_values = online_features(cfg, corrupted, attributes=True)
    _write_online(cfg, source_values.assign(bmi=source_values[SKEWED] * 1.25))

    began = datetime.now(UTC)
    client = make_serving_client()
    _predict_ids(client, ids)
    # features the client sent: no online read, never compared
    instance = source_values.drop(columns=["patient_id"]).iloc[0].to_dict()
    instance = {k: (v.item() if hasattr(v, "item") else v) for k, v in instance.items()}
    r = client.post(PREDICT, json={"instances": [instance]})
    assert r.status_code == 200, r.text
    _wait_for_log(began, 121)

    result = check_skew(cfg, since=began)
    assert (result.rows_in_window, result.rows_checked) == (120, 120)
    assert result.excluded == {"request": 1, "batch": 0}
    assert result.versions == {champion: 120}
    assert result.skewed == [SKEWED]
    bmi = result.features[SKEWED]
    assert (bmi.rows, bmi.differing, bmi.missing_offline) == (120, 30, 0)
    assert bmi.max_abs_diff == pytest.approx(0.25 * source_values[SKEWED].max())
    worst = bmi.worst[0]
    assert worst.entity in corrupted and worst.served == pytest.approx(worst.offline * 1.25)
    for name, feature in result.features.items():
        if name != SKEWED:
            assert feature.mismatches == 0, (name, feature.to_dict())

    outcomes = observe(cfg, result.observations(cfg, champion), actor=SKEW_ACTOR)
    assert {o.observation.subject for o in outcomes} == set(cfg.feature_names)
    fired = [o for o in outcomes if o.transition is Transition.FIRED]
    assert [o.observation.subject for o in fired] == [SKEWED]
    assert all(o.observation.breached is False for o in outcomes if o not in fired)
    [record] = _alert_records(Action.ALERT_FIRED, head)
    assert record.details["rule"] == "skew" and record.details["subject"] == SKEWED
    assert record.details["value"] == pytest.approx(0.25)
    assert record.details["details"]["worst_entities"][0]["entity"] in corrupted
    assert SKEWED in record.reason

    # The source's values back in the online store; the service answers with them.
    _write_online(cfg, source_values)
    restored = datetime.now(UTC)
    _predict_ids(client, ids)
    _wait_for_log(restored, 120)
    shut_down(client)

    clean = check_skew(cfg, since=restored)
    assert clean.rows_checked == 120 and clean.skewed == []
    assert all(f.mismatches == 0 for f in clean.features.values())
    outcomes = observe(cfg, clean.observations(cfg, champion), actor=SKEW_ACTOR)
    resolved = [o.observation.subject for o in outcomes if o.transition is Transition.RESOLVED]
    assert resolved == [SKEWED]
    [record] = _alert_records(Action.ALERT_RESOLVED, head)
    assert record.details["subject"] == SKEWED


def test_served_values_the_offline_store_never_had_are_counted_apart(
    stack: dict[str, Any], make_serving_client: Any
) -> None:
    """An entity written only to the online store: every feature has no offline value."""
    from mlsteward.monitoring.skew import MISSING_OFFLINE
    from tasks.skew import check_skew as check_skew_task

    cfg = get_model_config(MODEL)
    known = online_features(cfg, stack["ids"][:1], attributes=True)
    stranger = max(stack["ids"]) + 1_000
    _write_online(cfg, known.assign(patient_id=stranger))
    began = datetime.now(UTC)
    client = make_serving_client()
    _predict_ids(client, [stranger])
    _wait_for_log(began, 1)
    shut_down(client)

    result = check_skew_task(cfg, since=began)  # the monitor's task, as a flow calls it
    assert result.rows_checked == 1 and result.rows_without_offline == 1
    assert set(result.skewed) == set(cfg.feature_names)
    for feature in result.features.values():
        assert (feature.differing, feature.missing_offline) == (0, 1)
        assert feature.worst[0].kind == MISSING_OFFLINE and feature.worst[0].offline is None


# -- Prometheus itself, with the shipped rules and dashboard ------------------------------

PROMETHEUS = shutil.which("prometheus") or "prometheus"
READY_SECONDS = 60.0
# Dashboard queries that have no series on a healthy service: nothing failed to load.
EMPTY_WHEN_HEALTHY = {"mlsteward_model_load_failures_total"}


@pytest.fixture(scope="module")
def metrics_service(stack: dict[str, Any], start_module_service: Callable[..., Service]) -> Service:
    """A second service of the module's stack with ``/metrics`` behind a token, as the example
    configuration's authorization block is for."""
    return start_module_service(settings={"MLSTEWARD_SERVING_METRICS_AUTH": "true"})


@pytest.fixture(scope="module")
def prometheus(metrics_service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prometheus`` on a free loopback port with the example configuration pointed at the
    service (the service's viewer token in the credentials file), scraping and evaluating every
    second; stopped (SIGTERM, then SIGKILL) at the module's end. Its base URL."""
    work = tmp_path_factory.mktemp("prometheus")
    token = work / "mlsteward-token"
    token.write_text(metrics_service.token)
    token.chmod(0o600)
    config = work / "prometheus.yml"
    target = metrics_service.url.removeprefix("http://")
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
        # its storage is a temporary directory: nothing to flush, so no graceful stop (~10 s)
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


def test_prometheus_scrapes_the_service_and_the_rules_give_a_p99_and_a_throughput(
    stack: dict[str, Any], metrics_service: Service, prometheus: str
) -> None:
    """Debian's Prometheus scraping the running service with the example configuration under
    ``deploy/prometheus`` (its bearer-token block on), evaluating the rules every second: the
    recording rules give the model a p99 latency and a throughput, every rule evaluates without
    error on real series, every dashboard query answers, and no alert fires."""
    service = metrics_service
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
            for entity in stack["ids"][:2]:
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

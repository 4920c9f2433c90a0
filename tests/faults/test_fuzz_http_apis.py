"""schemathesis against every HTTP API, each with and without authentication: the governance
API (in process, as ``tests/integration/test_api.py`` fuzzes it), the prediction service as a
real process (``/v1`` and the Open Inference Protocol's ``/v2``), and the CI webhook gateway.

Callers: no token, a token that proves nobody, a token of the lowest role (a viewer) and an
admin's; for the gateway, whose callers sign instead: no signature, a wrong one, a valid one.
The property: no 5xx but the documented 503 of an unavailable dependency, every answer's
status and body as the API's own OpenAPI document states them, and every refusal with a
message. Failures are collected per operation and caller, so one run names them all.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from mlsteward.config.names import NAME_PATTERN
from tests.faults.conftest import FaultResult
from tests.fixtures.serving import StartService
from tests.support.fault_checks import assert_invariants
from tests.support.fuzz_strategies import example_count
from tests.support.governance import MODEL
from tests.support.platform import free_port
from tests.support.serving import bearer, issue_token

CALLERS = ("no_token", "bad_token", "viewer", "admin")
SIGNERS = ("unsigned", "bad_signature", "signed")
GATEWAY_SECRET = "fuzz-http-secret-0123456789"

# Product changes this fuzzing called for (each with a regression test): answers the OpenAPI
# documents did not state.
BUGS_FIXED = (
    "gateway: POST /hooks/ci documented only 202; its 200, 400, 401, 409, 413, 422, 502 and "
    "503 answers, its body and its signature header were undocumented",
    "serving: the Open Inference Protocol's /v2 routes were missing from /openapi.json",
)


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module: the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def prefect_api(prefect_harness: None) -> str:
    """The session's Prefect test server, for the module's flows."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def stack(prefect_api: str, champion_and_challenger: dict[str, Any]) -> dict[str, Any]:
    return champion_and_challenger


@pytest.fixture(scope="module")
def callers(mlsteward_home: Path) -> dict[str, dict[str, str]]:
    """Each caller's headers; the tokens in the module's identity store, where the API and
    the service look."""
    return {
        "no_token": {},
        "bad_token": bearer("msw_not-a-token-of-anybody"),
        "viewer": bearer(issue_token("viewer", "fuzz-viewer")),
        "admin": bearer(issue_token("admin", "fuzz-admin")),
    }


class Tally:
    """Requests sent per API and caller, and the failures found."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []

    def figures(self) -> dict[str, int]:
        """Numbers only: the reliability page prints each one."""
        by_class = Counter(
            "answers_503" if s == "503" else f"answers_{s[0]}xx" for s in self.statuses.elements()
        )
        return {
            "requests_sent": sum(self.sent.values()),
            **{f"requests_{caller}": n for caller, n in self.sent.items()},
            **dict(sorted(by_class.items())),
            "failures_found": len(self.failures),
            "bugs_fixed": len(BUGS_FIXED),
        }


def refusal_message(response: Any) -> str:
    """The message a refusal carries: ``error`` (our APIs, the protocol) or FastAPI's
    ``detail`` (its list of field errors, or text)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("error"), str):
        return body["error"]
    detail = body.get("detail")
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", "")) for d in detail if isinstance(d, dict))
    return str(detail or "")


def check_answer(response: Any) -> None:
    status = response.status_code
    assert status < 500 or status == 503, f"{status}: {response.text[:500]}"
    if status >= 400:
        assert refusal_message(response).strip(), f"refusal without a message: {response.text}"


Aim = Callable[[Any], None]


def fuzz(
    operation: Any,
    caller: str,
    send: Callable[[Any], Any],
    examples: int,
    tally: Tally,
    aim: Aim | None = None,
) -> None:
    """``examples`` generated cases of ``operation`` sent by ``send``; a failure is recorded
    with the operation and the caller, not raised."""

    @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))  # fmt: skip
    @hypothesis.given(case=operation.as_strategy())
    def call(case: Any) -> None:
        if aim is not None:
            aim(case)
        response = send(case)
        tally.sent[caller] += 1
        tally.statuses[str(response.status_code)] += 1
        check_answer(response)

    try:
        call()
    except Exception as exc:  # collected: the test names every failing operation at the end
        tally.failures.append(f"{operation.label} as {caller}: {exc}"[:3000])


EXCLUDED = [positive_data_acceptance, not_a_server_error]  # 503 allowed; refusals expected


def aim_at(versions: int) -> Aim:
    """A well-formed model name, and three in four of the others, becomes the trained model;
    a version number one of its versions or the next: the fuzzing reaches past the 404s into
    the routes."""

    def aim(case: Any) -> None:
        params = case.path_parameters or {}
        model = str(params.get("model", ""))
        if "model" in params and (NAME_PATTERN.fullmatch(model) or len(model) % 4):
            params["model"] = MODEL
        version = str(params.get("version", ""))
        if version.isascii() and version.isdigit():
            params["version"] = str(int(version) % (versions + 1) + 1)

    return aim


# --- the gateway: no stack needed ---------------------------------------------------------


def signed_send(client: TestClient, secret: str, signer: str) -> Callable[[Any], Any]:
    """Send a case with the signature ``signer`` stands for over its exact body bytes."""
    from mlsteward.gateway.signing import SIGNATURE_HEADER, sign

    def send(case: Any) -> Any:
        kwargs = case.as_transport_kwargs()
        headers = {k: v for k, v in kwargs["headers"].items() if k != SIGNATURE_HEADER}
        if "json" in kwargs:
            body = json.dumps(kwargs["json"]).encode()
            headers["Content-Type"] = "application/json"
        else:
            body = kwargs.get("data") or b""
            body = body.encode() if isinstance(body, str) else body
        if signer == "signed":
            headers[SIGNATURE_HEADER] = sign(body, secret)
        elif signer == "bad_signature":
            headers[SIGNATURE_HEADER] = sign(body, secret + "-not")
        response = client.request(
            kwargs["method"], kwargs["url"], content=body, headers=headers,
            params=kwargs.get("params"),
        )  # fmt: skip
        case.validate_response(response, excluded_checks=EXCLUDED, headers=headers)
        return response

    return send


def fuzz_every_caller(
    schema: Any,
    call: Callable[[Any, dict[str, str]], Any],
    callers: dict[str, dict[str, str]],
    examples: Callable[[str], int],
    tally: Tally,
    aim: Aim,
) -> None:
    """Every operation of ``schema`` as each caller, through ``call(case, headers)``."""
    for result in schema.get_all_operations():
        operation = result.ok()
        for caller in CALLERS:

            def send(case: Any, headers: dict[str, str] = callers[caller]) -> Any:
                return call(case, headers)

            fuzz(operation, caller, send, examples(caller), tally, aim)


def record_answers(
    fault_result: FaultResult, point: str, tally: Tally, checks: dict[str, Any]
) -> None:
    """One API's fuzzing on the reliability page: no failure, its answers counted."""
    assert not tally.failures, "\n\n".join(tally.failures)
    fault_result.record(
        "fuzz-http-apis",
        point=point,
        outcome="refused",
        user_sees="every answer documented, a message with every refusal, no 5xx",
        requests_failed=len(tally.failures),
        checks=checks,
        figures=tally.figures(),
    )


@pytest.mark.fault_subset
def test_the_gateway_answers_every_generated_request_as_documented(
    request: pytest.FixtureRequest, fault_result: FaultResult
) -> None:
    """Its OpenAPI document states every status a delivery can get; no Prefect API listens
    at its address, so a delivery that gets that far is the documented 503."""
    from mlsteward.gateway.app import create_app
    from mlsteward.gateway.settings import GatewaySettings

    settings = GatewaySettings(secret=GATEWAY_SECRET, api_url=f"http://127.0.0.1:{free_port()}/api")
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tally = Tally()
    examples = example_count(request, quick=15, full=80)
    with TestClient(app) as client:
        for result in schema.get_all_operations():
            operation = result.ok()
            for signer in SIGNERS:
                fuzz(
                    operation, signer, signed_send(client, GATEWAY_SECRET, signer), examples, tally
                )
    assert tally.statuses["401"] and tally.statuses["200"], tally.statuses
    checks = assert_invariants([MODEL], champions=False)
    point = "the CI webhook gateway: unsigned, badly signed and signed requests"
    record_answers(fault_result, point, tally, checks)


# --- the governance API ----------------------------------------------------------------------


def test_the_governance_api_answers_every_caller_as_documented(
    stack: dict[str, Any],
    callers: dict[str, dict[str, str]],
    request: pytest.FixtureRequest,
    fault_result: FaultResult,
) -> None:
    """Every route, every caller: a documented answer, never a 5xx but the 503."""
    from mlsteward.api.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
    tally = Tally()
    examples = example_count(request, quick=3, full=8)

    def call(case: Any, headers: dict[str, str]) -> Any:
        return case.call_and_validate(headers=headers, excluded_checks=EXCLUDED, timeout=120)

    def weighted(caller: str) -> int:  # callers who get past authentication, twice as often
        return examples * 2 if caller in ("viewer", "admin") else examples

    fuzz_every_caller(schema, call, callers, weighted, tally, aim_at(versions=2))
    checks = assert_invariants([MODEL])
    point = "the governance API (/api/v1), every route, four callers"
    record_answers(fault_result, point, tally, checks)


# --- the prediction service, as a process of its own ---------------------------------------


def test_the_prediction_service_answers_every_caller_as_documented(
    stack: dict[str, Any],
    callers: dict[str, dict[str, str]],
    start_module_service: StartService,
    request: pytest.FixtureRequest,
    fault_result: FaultResult,
) -> None:
    """``/v1`` and ``/v2`` of ``python -m mlsteward.serving``, as its ``/openapi.json`` (read
    with an admin's token) documents them."""
    service = start_module_service()
    document = httpx.get(f"{service.url}/openapi.json", headers=callers["admin"], timeout=30)
    assert document.status_code == 200, document.text
    paths = document.json()["paths"]
    assert any(p.startswith("/v2/") for p in paths), sorted(paths)
    schema = schemathesis.openapi.from_dict(document.json())
    tally = Tally()
    examples = example_count(request, quick=5, full=25)

    def call(case: Any, headers: dict[str, str]) -> Any:
        return case.call_and_validate(
            base_url=service.url, headers=headers, excluded_checks=EXCLUDED, timeout=60
        )

    fuzz_every_caller(schema, call, callers, lambda _: examples, tally, aim_at(versions=2))
    assert service.process.poll() is None, service.log_tail()
    checks = assert_invariants([MODEL])
    point = "the prediction service (/v1 and /v2) as a process, four callers"
    record_answers(fault_result, point, tally, checks)

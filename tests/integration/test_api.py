"""The governance REST API on the real stack: MLflow on SQLite, the audit trail and the
identity store in the module's home, the session's Prefect server, FastAPI's TestClient (and a
real uvicorn for the command), tokens from the identity store.

One trained home for the module (v1 champion, v2 challenger). Tests run in file order: the
reads and refusals first, then runs, outcomes and rollouts, then the decisions that change who
serves, and the fuzzing last (it may change anything).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from mlsteward.alerts.engine import observe
from mlsteward.alerts.observation import Observation
from mlsteward.api.app import create_app
from mlsteward.api.client import GovernanceClient
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config
from mlsteward.config.names import NAME_PATTERN
from mlsteward.errors import NotFoundError, PermissionDeniedError
from mlsteward.governance import canary, registry
from mlsteward.identity import (
    PERMISSIONS,
    Permission,
    Role,
    clear_cache,
    identity_store,
    local_principal,
)
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, write_config
from tests.support.platform import free_port
from tests.support.serve_training import runner_deployment
from tests.support.serving import FAST_TUNING
from tests.support.stack import stop_process, wait_for

API = "/api/v1"
P = Permission
IDENTITIES = {
    Role.VIEWER: "user:vera",
    Role.TRAINER: "user:tom",
    Role.APPROVER: "user:ann",
    Role.ADMIN: "user:ada",
    Role.CI: "service:ci-bot",
}
ENDED_ROLLOUT = "20260101T000000Z-0000beef"


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def stack(champion_and_challenger: dict[str, Any]) -> dict[str, Any]:
    return champion_and_challenger


@pytest.fixture(scope="module")
def tokens(mlsteward_home: Path) -> dict[Role, str]:
    """One principal per role, each with a token, in the module's identity store."""
    clear_cache()
    operator = local_principal()
    out = {}
    with identity_store() as store:
        for role, identity in IDENTITIES.items():
            kind, name = identity.split(":")
            store.add_principal(name, kind=kind, roles=[role.value], by=operator)
            out[role] = store.create_token(identity, by=operator, description="tests")[1]
    return out


@pytest.fixture(scope="module")
def client(stack: dict[str, Any], tokens: dict[Role, str]) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="module")
def ended_rollout(stack: dict[str, Any]) -> str:
    """A rollout the audit trail says started and completed (for the stop route's table)."""
    with audit_store() as store:
        for action in (Action.ROLLOUT_STARTED, Action.ROLLOUT_COMPLETED):
            store.append(
                action,
                model=MODEL,
                version=stack["challenger"],
                actor="user:tom",
                reason="test rollout",
                details={"rollout_id": ENDED_ROLLOUT, "champion": stack["champion"]},
            )
    return ENDED_ROLLOUT


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def records(action: Action, **filters: Any) -> list[Any]:
    with audit_store() as store:
        return store.query(action=action, **filters)


# -- the permission table, route by route ----------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A request, the permission it needs, and the status when it is granted: each request is
    built so that a granted one stops at a known later check (a version that does not exist,
    a deployment that is not on the server) and changes nothing."""

    method: str
    path: str
    permission: Permission | None
    granted: int
    body: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


M = f"/models/{MODEL}"
ROUTES = [
    Route("GET", "/whoami", None, 200),
    Route("GET", "/models", P.READ, 200),
    Route("GET", M, P.READ, 200),
    Route("GET", f"{M}/versions", P.READ, 200),
    Route("GET", f"{M}/versions/1", P.READ, 200),
    Route("GET", "/approvals", P.READ, 200),
    Route("GET", "/rollouts", P.READ, 200),
    Route("GET", "/audit", P.READ, 200),
    Route("GET", "/audit/verify", P.READ, 200),
    Route("GET", "/dashboard", P.READ, 200),
    Route("GET", f"{M}/alerts", P.READ, 200),
    Route("GET", "/process", P.READ, 200),
    Route("POST", f"{M}/versions/999/validate", P.VALIDATE, 404, {}),
    Route("POST", f"{M}/versions/999/promote", P.PROMOTE, 404, {"reason": "table"}),
    Route("POST", f"{M}/versions/999/approve", P.APPROVE, 409, {"reason": "table"}),
    Route("POST", f"{M}/versions/999/reject", P.REJECT, 404, {"reason": "table"}),
    Route("POST", f"{M}/rollback", P.ROLLBACK, 404, {"reason": "table", "to": "999"}),
    Route("POST", f"{M}/runs", P.TRAIN, 422, {"action": "train", "max_evals": 100_000}),
    Route("POST", f"{M}/runs", P.DRIFT, 503, {"action": "drift"}),
    Route("POST", f"{M}/runs", P.SCORE, 422, {"action": "score", "source": "/etc/passwd"}),
    Route("POST", "/rollouts", P.ROLLOUT, 404, {"model": MODEL, "version": "999"}),
    Route("POST", f"/rollouts/{ENDED_ROLLOUT}/stop", P.ROLLOUT, 409, {"reason": "table"}),
    Route("POST", f"{M}/outcomes", P.OUTCOMES, 422, {"rows": [{"unknown": 1}]}),
]


def call(client: TestClient, route: Route, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.request(route.method, API + route.path, json=route.body, headers=headers)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.label} {r.body or ''}")
def test_each_route_lets_exactly_the_roles_with_its_permission_through(
    client: TestClient, tokens: dict[Role, str], ended_rollout: str, route: Route
) -> None:
    for role, token in tokens.items():
        response = call(client, route, bearer(token))
        if route.permission is None or route.permission in PERMISSIONS[role]:
            assert response.status_code == route.granted, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            body = response.json()
            assert body["permission"] == route.permission.value
            assert f"needs permission '{route.permission.value}'" in body["error"]
            assert IDENTITIES[role] in body["error"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.label} {r.body or ''}")
def test_every_route_but_health_needs_a_valid_token(client: TestClient, route: Route) -> None:
    missing = call(client, route)
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    forged = call(client, route, bearer("msw_0123456789ab_not-a-real-secret"))
    assert forged.status_code == 401, forged.text
    assert forged.headers["WWW-Authenticate"].startswith("Bearer error=")
    assert client.get(f"{API}/health").json()["ok"] is True


def test_a_revoked_token_is_refused(client: TestClient) -> None:
    operator = local_principal()
    with identity_store() as store:
        info, token = store.create_token("user:vera", by=operator, description="to revoke")
        assert client.get(f"{API}/whoami", headers=bearer(token)).status_code == 200
        store.revoke_token(info.token_id, by=operator)
    clear_cache()  # this process verified it a moment ago
    refused = client.get(f"{API}/whoami", headers=bearer(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_a_refusal_is_audited_with_who_tried_what(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    before = len(records(Action.ACCESS_DENIED))
    refused = client.post(
        f"{API}{M}/runs", json={"action": "train"}, headers=bearer(tokens[Role.VIEWER])
    )
    assert refused.status_code == 403
    denied = records(Action.ACCESS_DENIED)
    assert len(denied) == before + 1
    last = denied[-1]
    assert last.actor == "user:vera" and last.details["model"] == MODEL
    assert last.details["permission"] == "train" and last.details["path"] == f"{API}{M}/runs"


def test_whoami_names_the_principal_and_its_permissions(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    me = client.get(f"{API}/whoami", headers=bearer(tokens[Role.APPROVER])).json()
    assert me["identity"] == "user:ann" and me["roles"] == ["approver"]
    assert me["authenticated"] is True and "promote" in me["permissions"]
    assert "train" not in me["permissions"]


# -- bad input: 404 and 422 naming the field ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field", "words"),
    [
        ("GET", "/models/Heart-Disease", None, 422, "model", "not a model name"),
        ("GET", "/models/nope", None, 404, None, "unknown model 'nope'"),
        ("GET", f"{M}/versions/999", None, 404, None, "no registered version 999"),
        ("GET", f"{M}/versions/v2", None, 422, "version", "not a version number"),
        ("POST", f"{M}/versions/2/reject", {}, 422, "reason", "Field required"),
        ("POST", f"{M}/versions/2/promote", {"reasn": "typo"}, 422, "reasn", "Extra inputs"),
        ("POST", f"{M}/rollback", {"reason": "x", "to": "v1"}, 422, "to", "pattern"),
        ("POST", f"{M}/runs", {"action": "deploy"}, 422, "action", "'deploy'"),
        (
            "POST",
            f"{M}/runs",
            {"action": "train", "max_evals": "many"},
            422,
            "max_evals",
            "integer",
        ),
        (
            "POST",
            f"{M}/runs",
            {"action": "drift", "window_days": -1},
            422,
            "window_days",
            "greater",
        ),
        ("POST", f"{M}/outcomes", {"rows": []}, 422, "rows", "at least 1"),
        ("POST", f"{M}/outcomes", {"rows": [{"patient_id": -(2**63) - 1}]}, 422, "rows", "rows"),
        ("POST", f"{M}/outcomes", {"rows": [{"patient_id": {}}]}, 422, "rows", "rows"),
        ("POST", "/rollouts", {"model": "../x"}, 422, "model", "not a model name"),
        ("POST", "/rollouts/no%20such/stop", {"reason": "x"}, 422, "rollout_id", "not a rollout"),
        (
            "POST",
            "/rollouts/20990101T000000Z-00000000/stop",
            {"reason": "x"},
            404,
            None,
            "no rollout",
        ),
        ("GET", "/audit?since=yesterday", None, 422, "since", "ISO-8601"),
        ("GET", "/audit?action=promoted_maybe", None, 422, "action", "unknown action"),
        ("GET", "/audit?limit=0", None, 422, "limit", "greater than or equal"),
        ("GET", "/rollouts?model=A", None, 422, "model", "not a model name"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: TestClient,
    tokens: dict[Role, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    field: str | None,
    words: str,
) -> None:
    response = client.request(method, API + path, json=body, headers=bearer(tokens[Role.ADMIN]))
    assert response.status_code == status, response.text
    answer = response.json()
    assert words in answer["error"], answer
    if field is not None:
        assert answer["field"] == field, answer
        assert answer["error"].startswith(f"{field}: ")


# -- reading ----------------------------------------------------------------------------------


def test_models_list_what_serves(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    [model] = client.get(f"{API}/models", headers=bearer(tokens[Role.VIEWER])).json()["models"]
    assert (
        model["name"] == MODEL and model["policy"] == "auto" and model["owner"] == "cardiology-ml"
    )
    assert (model["champion"], model["challenger"]) == (stack["champion"], stack["challenger"])


def test_a_models_status(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    status = client.get(f"{API}{M}", headers=bearer(tokens[Role.VIEWER])).json()
    assert status["champion"]["version"] == stack["champion"]
    assert status["challenger"]["version"] == stack["challenger"]
    assert status["champion"]["metrics"]["roc_auc"] > 0.5
    assert status["policy"] == "auto" and status["approvals_required"] == 1
    assert status["owner"] == "cardiology-ml"
    assert status["last_drift"] is None and status["active_rollout"] is None
    assert status["pending_approvals"] == []
    assert [v["version"] for v in status["versions"]] == [stack["champion"], stack["challenger"]]
    assert any(r["action"] == "promoted" for r in status["recent_decisions"])


def test_a_versions_metrics_lineage_gates_and_history(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    headers = bearer(tokens[Role.VIEWER])
    listed = client.get(f"{API}{M}/versions", headers=headers).json()["versions"]
    assert [v["version"] for v in listed] == [stack["champion"], stack["challenger"]]
    v = client.get(f"{API}{M}/versions/{stack['challenger']}", headers=headers).json()
    assert v["version"] == stack["challenger"] and v["lifecycle"] == "challenger"
    assert v["validation_status"] == "passed" and v["aliases"] == ["challenger"]
    assert v["metrics"]["roc_auc"] > 0.5 and v["lineage"]["data_digest"]
    gates = {g["name"]: g["passed"] for g in v["gates"]}
    assert gates["fairness"] is True and gates["champion_comparison"] is True, gates
    assert v["fairness"]["name"] == "fairness" and v["validation_error"] is None
    actions = [e["action"] for e in v["history"]]
    assert "version_registered" in actions and "validation_passed" in actions
    assert v["approvals"] == []  # policy auto: nobody was asked


def test_the_audit_trail_filtered_and_checked(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    headers = bearer(tokens[Role.VIEWER])
    promoted = client.get(
        f"{API}/audit", params={"model": MODEL, "action": "promoted"}, headers=headers
    ).json()["records"]
    assert [r["version"] for r in promoted] == [stack["champion"]]
    assert client.get(f"{API}/audit", params={"limit": 1}, headers=headers).json()["records"]
    future = client.get(f"{API}/audit", params={"since": "2999-01-01"}, headers=headers)
    assert future.json()["records"] == []
    verified = client.get(f"{API}/audit/verify", headers=headers).json()
    assert verified["ok"] is True and verified["records"] > 10 and verified["head_hash"]


def test_the_dashboard_summarises_every_model(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    page = client.get(f"{API}/dashboard", headers=bearer(tokens[Role.VIEWER])).json()
    [row] = page["models"]
    assert row["model"] == MODEL and row["champion"]["version"] == stack["champion"]
    assert row["challenger"]["version"] == stack["challenger"]
    assert row["challenger"]["metrics"]["roc_auc"] > 0.5
    assert row["pending_approvals"] == [] and row["open_alerts"] == []
    assert row["last_drift"] is None and row["active_rollout"] is None
    assert row["champion_check"]["consistent"] is True


def test_the_dashboard_reads_a_version_the_lifecycle_search_misses(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    """The page fetches champions and challengers in one search by lifecycle tag; a version
    whose tag says otherwise is read on its own, never left out or shown stale."""
    known = registry.live_versions()
    assert (MODEL, stack["champion"]) in known and (MODEL, stack["challenger"]) in known
    registry.set_tags(MODEL, stack["challenger"], {"lifecycle": "odd"})
    try:
        assert (MODEL, stack["challenger"]) not in registry.live_versions()
        [row] = client.get(f"{API}/dashboard", headers=bearer(tokens[Role.VIEWER])).json()["models"]
    finally:
        registry.set_tags(MODEL, stack["challenger"], {"lifecycle": "challenger"})
    assert row["challenger"]["version"] == stack["challenger"]
    assert row["challenger"]["lifecycle"] == "odd"
    assert row["challenger"]["metrics"]["roc_auc"] > 0.5


def test_an_alias_moved_outside_governance_is_an_alert_on_the_dashboard(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    viewer = bearer(tokens[Role.VIEWER])
    registry.set_alias(MODEL, registry.CHAMPION, stack["challenger"])
    try:
        [row] = client.get(f"{API}/dashboard", headers=viewer).json()["models"]
        [model] = client.get(f"{API}/models", headers=viewer).json()["models"]
    finally:
        registry.set_alias(MODEL, registry.CHAMPION, stack["champion"])
    assert row["champion"]["version"] == stack["champion"]  # the record, not the alias
    [alert] = row["open_alerts"]
    assert alert["rule"] == "alias_mismatch" and alert["severity"] == "critical"
    assert f"points at v{stack['challenger']}" in alert["message"]
    assert model["champion"] == stack["champion"]
    assert model["champion_check"]["alias_champion"] == stack["challenger"]


# -- runs on the Prefect server -----------------------------------------------------------------


REGISTERED = ["score-heart-disease", "rollout-heart-disease"]


@pytest.fixture(scope="module")
def deployments(stack: dict[str, Any]) -> Iterator[None]:
    """The score and rollout deployments on the session's server, nothing serving them: the
    runs the API starts stay scheduled, to be read back."""
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    subprocess.run(
        [sys.executable, "-m", "tests.support.serve_training", "--register-only", *REGISTERED],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=180,
    )
    try:
        yield
    finally:
        for name in REGISTERED:
            delete_deployment(name)


def delete_deployment(name: str) -> None:
    with get_client(sync_client=True) as prefect:
        try:
            dep = prefect.read_deployment_by_name(f"{runner_deployment(name).flow_name}/{name}")
        except ObjectNotFound:
            return
        runs = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])),
            limit=200,
        )
        for run in runs:
            with suppress(ObjectNotFound):
                prefect.delete_flow_run(run.id)
        prefect.delete_deployment(dep.id)


def flow_run(run_id: str) -> Any:
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(uuid.UUID(run_id))


def test_a_run_starts_on_the_server_acting_for_the_caller(
    client: TestClient,
    tokens: dict[Role, str],
    deployments: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLSTEWARD_WEBHOOK_DATA_ROOTS", str(tmp_path))
    batch = tmp_path / "batch.parquet"
    batch.write_bytes(b"not read: the run stays scheduled")
    started = client.post(
        f"{API}{M}/runs",
        json={"action": "score", "source": str(batch)},
        headers=bearer(tokens[Role.TRAINER]),
    )
    assert started.status_code == 202, started.text
    answer = started.json()
    assert answer["deployment"] == "score-model/score-heart-disease"
    assert answer["ui_url"].endswith(f"/runs/flow-run/{answer['flow_run_id']}")
    run = flow_run(answer["flow_run_id"])
    assert run.parameters == {"model": MODEL, "source": str(batch), "requested_by": "user:tom"}
    assert "api" in run.tags and "requested_by:user:tom" in run.tags
    # a file outside the roots, and a deployment not on the server
    outside = client.post(
        f"{API}{M}/runs",
        json={"action": "score", "source": str(REPO_ROOT / "pyproject.toml")},
        headers=bearer(tokens[Role.TRAINER]),
    )
    assert outside.status_code == 422 and outside.json()["field"] == "source"
    missing = client.post(
        f"{API}{M}/runs", json={"action": "drift"}, headers=bearer(tokens[Role.TRAINER])
    )
    assert missing.status_code == 503
    assert "drift-model/drift-heart-disease is not on the Prefect server" in missing.json()["error"]


def test_a_rollout_starts_as_a_deployment_run(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any], deployments: None
) -> None:
    started = client.post(
        f"{API}/rollouts",
        json={"model": MODEL, "version": stack["challenger"]},
        headers=bearer(tokens[Role.TRAINER]),
    )
    assert started.status_code == 202, started.text
    run = flow_run(started.json()["flow_run_id"])
    assert run.parameters == {
        "model": MODEL,
        "version": stack["challenger"],
        "requested_by": "user:tom",
    }


def test_stopping_a_rollout_puts_traffic_back_on_the_champion(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    opened = canary.open_canary(MODEL, stack["challenger"], 0.2)
    steering = str(uuid.uuid4())
    try:
        with audit_store() as store:
            store.append(
                Action.ROLLOUT_STARTED,
                model=MODEL,
                version=stack["challenger"],
                actor=f"flow-run:{steering} for user:tom",
                reason="canary",
                details={"rollout_id": opened.rollout_id, "champion": stack["champion"]},
            )
        viewer = bearer(tokens[Role.VIEWER])
        [running] = client.get(f"{API}/rollouts", params={"running": True}, headers=viewer).json()[
            "rollouts"
        ]
        assert running["rollout_id"] == opened.rollout_id and running["flow_run_id"] == steering
        assert running["canary"]["fraction"] == 0.2
        active = client.get(f"{API}{M}", headers=viewer).json()["active_rollout"]
        assert active["rollout_id"] == opened.rollout_id and active["started_by"].endswith(
            "user:tom"
        )
        path = f"{API}/rollouts/{opened.rollout_id}/stop"
        refused = client.post(path, json={"reason": "x"}, headers=bearer(tokens[Role.APPROVER]))
        assert refused.status_code == 403 and refused.json()["permission"] == "rollout"
        assert canary.read_target(MODEL).canary is not None
        stopped = client.post(
            path, json={"reason": "p99 looks off"}, headers=bearer(tokens[Role.TRAINER])
        )
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["canary_closed"] is True
        assert stopped.json()["flow_run_cancelled"] is False  # no such run on the server
        assert canary.read_target(MODEL).canary is None
        aborted = records(Action.ROLLOUT_ABORTED, model=MODEL)[-1]
        assert aborted.actor == "user:tom" and aborted.details["rollout_id"] == opened.rollout_id
        assert "p99 looks off" in aborted.reason
        again = client.post(path, json={"reason": "again"}, headers=bearer(tokens[Role.TRAINER]))
        assert again.status_code == 409 and "ended already" in again.json()["error"]
        listed = client.get(f"{API}/rollouts", params={"model": MODEL}, headers=viewer).json()
        mine = next(r for r in listed["rollouts"] if r["rollout_id"] == opened.rollout_id)
        assert mine["decision"] == "aborted" and mine["canary"] is None
    finally:
        canary.close_canary(MODEL)


# -- late outcomes ----------------------------------------------------------------------------


def test_outcomes_are_attached_with_the_labels_contract(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    rows = [
        {"patient_id": i, "event_timestamp": "2026-11-01T10:00:00Z", "heart_disease": i % 2}
        for i in stack["ids"][:5]
    ]
    headers = bearer(tokens[Role.TRAINER])
    attached = client.post(f"{API}{M}/outcomes", json={"rows": rows}, headers=headers)
    assert attached.status_code == 200, attached.text
    answer = attached.json()
    assert answer["rows"] == 5 and answer["matched"] + answer["unmatched"] == 5
    assert answer["source"] == "api" and "path" not in answer
    ingested = records(Action.LABELS_INGESTED, model=MODEL)[-1]
    assert ingested.actor == "user:tom"
    bad = [*rows[:2], {**rows[2], "heart_disease": 7}]
    refused = client.post(f"{API}{M}/outcomes", json={"rows": bad}, headers=headers)
    assert refused.status_code == 422 and refused.json()["field"] == "rows"
    assert "'heart_disease' not one of [0, 1] in row(s) 3" in refused.json()["error"]
    assert len(records(Action.LABELS_INGESTED, model=MODEL)) == 1


# -- the client the command line uses -----------------------------------------------------------


def test_the_client_answers_as_the_core_would(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    viewer = GovernanceClient("http://testserver", tokens[Role.VIEWER], http=client)
    assert viewer.whoami()["identity"] == "user:vera"
    assert viewer.status(MODEL)["champion"]["version"] == stack["champion"]
    with pytest.raises(PermissionDeniedError) as refused:
        viewer.start_run(MODEL, "train")
    assert refused.value.permission == "train"
    with pytest.raises(NotFoundError, match="unknown model 'nope'"):
        viewer.status("nope")
    assert viewer.pending_approvals() == []


# -- the command: a real uvicorn ------------------------------------------------------------------


def test_mlsteward_api_serves_the_routes(tokens: dict[Role, str], tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.cli", "api", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def healthy() -> bool:
                assert proc.poll() is None, log_path.read_text()
                with suppress(httpx.HTTPError):
                    return httpx.get(f"{base}{API}/health").status_code == 200
                return False

            wait_for("the API to answer", healthy, 60)
            me = httpx.get(f"{base}{API}/whoami", headers=bearer(tokens[Role.CI]))
            assert me.status_code == 200 and me.json()["identity"] == "service:ci-bot"
            assert httpx.get(f"{base}{API}/whoami").status_code == 401
            schema = httpx.get(f"{base}/openapi.json").json()
            assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
            the_cli_decides_through_the_api(base, tokens)
        finally:
            stop_process(proc)


def the_cli_decides_through_the_api(base: str, tokens: dict[Role, str]) -> None:
    """With MLSTEWARD_API_URL and MLSTEWARD_TOKEN the governance commands ask the service,
    which authorizes the token's principal, not the local operator."""
    from typer.testing import CliRunner

    from mlsteward.cli.app import app

    runner = CliRunner()
    env = {"MLSTEWARD_API_URL": base, "MLSTEWARD_TOKEN": tokens[Role.VIEWER]}
    status = runner.invoke(app, ["status", MODEL, "--json"], env=env)
    assert status.exit_code == 0, status.output
    assert "active_rollout" in json.loads(status.stdout)  # the API's answer, not the core's
    refused = runner.invoke(app, ["rollback", MODEL, "--reason", "try"], env=env)
    assert refused.exit_code == 1
    assert "user:vera may not rollback" in refused.output and "Traceback" not in refused.output
    verified = runner.invoke(app, ["audit", "verify", "--json"], env=env)
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"] is True
    logged = runner.invoke(app, ["audit", "log", "--action", "access_denied", "--json"], env=env)
    assert any(
        r["actor"] == "user:vera" and r["details"].get("permission") == "rollback"
        for r in json.loads(logged.stdout)["records"]
    )
    gone = runner.invoke(
        app, ["status", MODEL], env={**env, "MLSTEWARD_API_URL": "http://127.0.0.1:9"}
    )
    assert gone.exit_code == 1 and "no governance API at http://127.0.0.1:9" in gone.output


# -- decisions that change who serves -----------------------------------------------------------


def decide(client: TestClient, token: str, verb: str, version: str, **body: Any) -> httpx.Response:
    return client.post(f"{API}{M}/versions/{version}/{verb}", json=body, headers=bearer(token))


def test_under_the_manual_policy_two_approvers_promote(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    write_config(
        config_dir, tuning=FAST_TUNING, promotion={"policy": "manual"}, approvals={"required": 2}
    )
    try:
        v2 = stack["challenger"]
        refused = decide(client, tokens[Role.TRAINER], "promote", v2, reason="ship it")
        assert refused.status_code == 403 and refused.json()["permission"] == "promote"
        first = decide(client, tokens[Role.APPROVER], "promote", v2, reason="looks right")
        assert first.status_code == 200, first.text
        assert first.json()["decision"] == "pending"
        assert first.json()["approvals"] == ["user:ann"] and first.json()["approvals_required"] == 2
        viewer = bearer(tokens[Role.VIEWER])
        [waiting] = client.get(f"{API}/approvals", headers=viewer).json()["approvals"]
        assert (waiting["version"], waiting["approvals"]) == (v2, ["user:ann"])
        assert client.get(f"{API}{M}", headers=viewer).json()["pending_approvals"] == [waiting]
        board = client.get(f"{API}/dashboard", headers=viewer).json()["models"][0]
        assert [p["version"] for p in board["pending_approvals"]] == [v2]
        again = decide(client, tokens[Role.APPROVER], "approve", v2, reason="still right")
        assert again.json()["decision"] == "pending" and again.json()["approvals"] == ["user:ann"]
        second = decide(client, tokens[Role.ADMIN], "approve", v2, reason="agreed")
        assert second.status_code == 200, second.text
        assert second.json()["decision"] == "promoted"
        assert second.json()["promotion"]["previous_champion"] == stack["champion"]
        promoted = records(Action.PROMOTED, model=MODEL)[-1]
        assert promoted.version == v2 and promoted.actor == "user:ada"
        assert client.get(f"{API}/approvals", headers=viewer).json()["approvals"] == []
    finally:
        write_config(config_dir, tuning=FAST_TUNING)


def test_a_rolled_back_version_comes_back_only_by_an_admins_override(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    rollback = f"{API}{M}/rollback"
    back = client.post(rollback, json={"reason": "alerts"}, headers=bearer(tokens[Role.APPROVER]))
    assert back.status_code == 200, back.text
    assert (back.json()["action"], back.json()["version"]) == ("rolled_back", v1)
    assert records(Action.ROLLBACK, model=MODEL)[-1].actor == "user:ann"
    blocked = decide(client, tokens[Role.APPROVER], "promote", v2, reason="fixed")
    assert blocked.status_code == 409 and "override" in blocked.json()["error"]
    not_admin = decide(client, tokens[Role.APPROVER], "promote", v2, reason="fixed", override=True)
    assert not_admin.status_code == 403 and not_admin.json()["permission"] == "override"
    no_reason = decide(client, tokens[Role.ADMIN], "promote", v2, override=True)
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
    overridden = decide(client, tokens[Role.ADMIN], "promote", v2, reason="fixed", override=True)
    assert overridden.status_code == 200, overridden.text
    assert overridden.json()["decision"] == "promoted"
    again = decide(client, tokens[Role.ADMIN], "promote", v2, reason="twice")
    assert again.status_code == 409 and "already the champion" in again.json()["error"]
    champion = decide(client, tokens[Role.APPROVER], "reject", v2, reason="no")
    assert champion.status_code == 409 and "roll it back instead" in champion.json()["error"]
    restored = client.post(
        rollback, json={"reason": "back", "to": v1}, headers=bearer(tokens[Role.ADMIN])
    )
    assert restored.status_code == 200 and restored.json()["version"] == v1


def test_validate_and_reject_are_recorded_with_the_caller(
    client: TestClient, tokens: dict[Role, str], stack: dict[str, Any]
) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    champion = decide(client, tokens[Role.TRAINER], "validate", v1)
    assert champion.status_code == 409 and "is the champion" in champion.json()["error"]
    validated = decide(client, tokens[Role.TRAINER], "validate", v2)
    assert validated.status_code == 200, validated.text
    assert validated.json()["decision"] in ("validated", "rejected")
    gates = records(Action.VALIDATION_PASSED, model=MODEL) + records(
        Action.VALIDATION_FAILED, model=MODEL
    )
    assert max(gates, key=lambda r: r.seq).actor == "user:tom"
    rejected = decide(client, tokens[Role.APPROVER], "reject", v2, reason="not this one")
    assert rejected.status_code == 200 and rejected.json()["decision"] == "rejected"
    assert records(Action.APPROVAL_REJECTED, model=MODEL)[-1].actor == "user:ann"


# -- fuzzing: no server error on any input ---------------------------------------------------------


FUZZ_EXAMPLES = 15


def aim(case: Any) -> None:
    """A well-formed model name becomes the trained model, a version number one of its
    versions or the next (unknown) one: the fuzzing reaches past the 404s into the routes."""
    params = case.path_parameters or {}
    if NAME_PATTERN.fullmatch(str(params.get("model", ""))):
        params["model"] = MODEL
    version = str(params.get("version", ""))
    if version.isascii() and version.isdigit():
        params["version"] = str(int(version) % 3 + 1)


def fuzz(operation: Any, headers: dict[str, str], examples: int, seen: Counter[Any]) -> None:
    @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))  # fmt: skip
    @hypothesis.given(case=operation.as_strategy())
    def call(case: Any) -> None:
        aim(case)
        response = case.call_and_validate(
            headers=headers, excluded_checks=[positive_data_acceptance, not_a_server_error]
        )
        assert response.status_code < 500 or response.status_code == 503, response.text
        seen[operation.label, response.status_code // 100] += 1

    call()


def test_fuzzed_requests_never_get_a_server_error(tokens: dict[Role, str]) -> None:
    """Whatever the schema admits, and what it does not, with an admin's token and without
    one: a documented 4xx or an answer, never a 5xx but the documented 503, and every answer
    matches the documented schema. Last in the module: it may change anything."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
    seen: Counter[Any] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzz(operation, bearer(tokens[Role.ADMIN]), FUZZ_EXAMPLES, seen)
        fuzz(operation, {}, 3, seen)
    operations = {label for label, _ in seen}
    documented = sum(len(methods) for methods in create_app().openapi()["paths"].values())
    assert len(operations) == documented, operations
    for label in ("GET /api/v1/models/{model}", "GET /api/v1/models/{model}/versions/{version}"):
        assert seen[label, 2] > 0, seen  # the fuzzing reached the trained model


def test_the_alerts_route_shows_open_incidents_and_recent_alerts(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    cfg = get_model_config(MODEL)
    breach = Observation(
        rule="skew", breached=True, subject="bmi", summary="bmi differs", value=0.4
    )
    observe(cfg, [breach], actor="service:monitor")
    body = client.get(f"{API}{M}/alerts", headers=bearer(tokens[Role.VIEWER])).json()
    [incident] = [i for i in body["firing"] if i["rule"] == "skew"]
    assert incident["subject"] == "bmi" and incident["breaches"] == 1
    assert body["recent"][0]["kind"] == "fired" and body["recent"][0]["value"] == 0.4
    board = client.get(f"{API}/dashboard", headers=bearer(tokens[Role.VIEWER])).json()
    [row] = [m for m in board["models"] if m["model"] == MODEL]
    assert [(a["rule"], a["subject"]) for a in row["open_alerts"]] == [("skew", "bmi")]
    observe(cfg, [dataclasses.replace(breach, breached=False)], actor="service:monitor")
    after = client.get(f"{API}{M}/alerts", headers=bearer(tokens[Role.VIEWER])).json()
    assert [i for i in after["firing"] if i["rule"] == "skew"] == []
    assert after["recent"][0]["kind"] == "resolved"

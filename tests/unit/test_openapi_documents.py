"""Each HTTP API's OpenAPI document states every answer it gives (found wanting by
tests/faults/test_fuzz_http_apis.py, which holds every answer to its document)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mlsteward.config.models import get_model_config
from mlsteward.gateway.answers import DeliveryAnswer
from mlsteward.gateway.app import create_app as create_gateway
from mlsteward.gateway.settings import GatewaySettings
from mlsteward.gateway.signing import SIGNATURE_HEADER, sign
from mlsteward.serving.app import create_app as create_service
from mlsteward.serving.settings import ServingSettings
from tests.support.governance import MODEL
from tests.support.platform import free_port
from tests.support.serving import bearer, issue_token

SECRET = "openapi-secret-0123456789"


def test_the_gateway_documents_every_status_a_delivery_can_get() -> None:
    settings = GatewaySettings(secret=SECRET, api_url=f"http://127.0.0.1:{free_port()}/api")
    app = create_gateway(settings)
    hook = app.openapi()["paths"]["/hooks/ci"]["post"]
    assert set(hook["responses"]) == {"200", "202", "400", "401", "409", "413", "422", "502", "503"}
    assert hook["requestBody"]["content"]["application/json"]
    [signature] = [p for p in hook["parameters"] if p["name"] == SIGNATURE_HEADER]
    assert signature["in"] == "header" and signature["required"] is True
    with TestClient(app) as client:
        unsigned = client.post("/hooks/ci", content=b"{}")
        body = b'{"zen": "hi"}'
        headers = {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "d-1",
            SIGNATURE_HEADER: sign(body, SECRET),
        }
        ping = client.post("/hooks/ci", content=body, headers=headers)
    assert unsigned.status_code == 401 and ping.status_code == 200
    for answer in (unsigned, ping):  # the documented body, whatever the status
        assert DeliveryAnswer.model_validate(answer.json()).accepted is (answer.status_code == 200)


def test_the_prediction_service_documents_its_open_inference_protocol_routes() -> None:
    app = create_service([get_model_config(MODEL)], ServingSettings(models=[MODEL]))
    client = TestClient(app, headers=bearer(issue_token("viewer")))
    paths = client.get("/openapi.json").json()["paths"]
    infer = paths["/v2/models/{model}/infer"]["post"]
    assert {"200", "400", "401", "403", "404", "413", "429", "503"} <= set(infer["responses"])
    assert infer["security"] and infer["requestBody"]["content"]["application/json"]
    for path in ("/v2", "/v2/models/{model}/versions/{version}", "/v2/models/{model}/ready"):
        assert paths[path]["get"]["security"], path
    assert "security" not in paths["/v2/health/live"]["get"]
    unsecured = create_service(
        [get_model_config(MODEL)], ServingSettings(models=[MODEL], auth=False)
    )
    open_paths = TestClient(unsecured).get("/openapi.json").json()["paths"]
    assert "security" not in open_paths["/v2/models/{model}/infer"]["post"]

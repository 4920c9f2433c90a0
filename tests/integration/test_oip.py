"""The prediction service in the Open Inference Protocol (``/v2``), called by a real client from
PyPI (tritonclient's HTTP client) on the trained stack's running service: the same answers,
refusals, routing, prediction log and metrics as ``/v1``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from mlsteward.config.models import get_model_config
from mlsteward.features.online import online_features
from mlsteward.governance import canary
from mlsteward.monitoring import prediction_log
from tests.support.governance import MODEL, write_config
from tests.support.serving import FAST_TUNING, SERVICE_SETTINGS, Service, bearer, issue_token

V1 = f"/v1/models/{MODEL}/predict"
EXPLAINED = ("probability", "label", "threshold", "version", "base_value", "contributions",
             "contribution_features")  # fmt: skip


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def stack(champion_and_challenger: dict[str, Any], mlsteward_home: Path) -> dict[str, Any]:
    write_config(mlsteward_home.parent / "config", tuning=FAST_TUNING, **SERVICE_SETTINGS)
    return champion_and_challenger


@pytest.fixture(scope="module")
def service(stack: dict[str, Any], start_module_service: Callable[[], Service]) -> Service:
    return start_module_service()


@pytest.fixture(scope="module")
def client(service: Service) -> Iterator[triton.InferenceServerClient]:
    """tritonclient's HTTP client on the running service (it takes the address without the
    scheme); each call is given its headers."""
    with triton.InferenceServerClient(service.url.removeprefix("http://")) as c:
        yield c


@pytest.fixture(scope="module")
def v1(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=30) as c:
        yield c


def headers(service: Service) -> dict[str, str]:
    """A fresh dict per call: tritonclient writes its binary-layout header into the one given."""
    return dict(service.headers)


def feature_rows(stack: dict[str, Any], ids: list[Any]) -> list[dict[str, Any]]:
    cfg = get_model_config(MODEL)
    records = json.loads(online_features(cfg, ids).to_json(orient="records"))
    return [{k: v for k, v in rec.items() if k in cfg.feature_names} for rec in records]


def feature_inputs(
    meta: dict[str, Any], rows: list[dict[str, Any]], binary: bool
) -> list[triton.InferInput]:
    """One tensor per feature, typed as the model's metadata declares it."""
    declared = {t["name"]: t["datatype"] for t in meta["inputs"]}
    out = []
    for name in get_model_config(MODEL).feature_names:
        datatype = declared[name]
        column = [row[name] for row in rows]
        if datatype == "BYTES":
            array = np.array([str(v).encode() for v in column], dtype=np.object_)
        else:
            array = np.array(column, dtype=triton_to_np_dtype(datatype))
        tensor = triton.InferInput(name, [len(rows)], datatype)
        out.append(tensor.set_data_from_numpy(array, binary_data=binary))
    return out


def entity_input(ids: list[int]) -> triton.InferInput:
    tensor = triton.InferInput("patient_id", [len(ids)], "INT64")
    return tensor.set_data_from_numpy(np.array(ids, dtype=np.int64))


def outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(n) for n in names]


def assert_same_answers(result: triton.InferResult, predictions: list[dict[str, Any]]) -> None:
    """tritonclient's arrays are /v1's answers, number for number."""
    assert result.as_numpy("probability").tolist() == [p["probability"] for p in predictions]
    assert result.as_numpy("label").tolist() == [p["label"] for p in predictions]
    assert result.as_numpy("threshold").tolist() == [p["threshold"] for p in predictions]
    assert result.as_numpy("version").tolist() == [p["version"] for p in predictions]
    explained = [p["explanation"] for p in predictions]
    assert result.as_numpy("base_value").tolist() == [e["base_value"] for e in explained]
    assert result.as_numpy("contributions").tolist() == [
        [c["value"] for c in e["contributions"]] for e in explained
    ]
    assert result.as_numpy("contribution_features").tolist() == [
        [c["feature"] for c in e["contributions"]] for e in explained
    ]


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, str]:
    """(status, message) of the InferenceServerException the client raises for this call."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return str(caught.value.status()), caught.value.message()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def logged(request_ids: set[str], rows: int) -> pd.DataFrame:
    """The prediction log's rows of these requests, once all ``rows`` are written."""
    entity = get_model_config(MODEL).source.entity
    found: list[pd.DataFrame] = []

    def written() -> bool:
        frame = prediction_log.read(MODEL, columns=[entity, "arm", "model_version", "request_id"])
        found[:] = [frame[frame["request_id"].isin(request_ids)]]
        return len(found[0]) == rows

    wait_for(written, "the answers in the prediction log")
    return found[0]


def requests_answered(service: Service, status: str) -> float:
    """``mlsteward_requests_total`` of the model with this status, summed over arms."""
    text = httpx.get(f"{service.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlsteward_requests_total{")
        and f'model="{MODEL}"' in line
        and f'status="{status}"' in line
    )


# -- the protocol's handshake -----------------------------------------------------------------
def test_probes_and_metadata(
    service: Service, client: triton.InferenceServerClient, stack: dict[str, Any]
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL, headers=headers(service))
    assert not client.is_model_ready(MODEL)  # who may not read is told nothing
    assert client.get_server_metadata(headers=headers(service))["name"] == "mlsteward"
    meta = client.get_model_metadata(MODEL, headers=headers(service))
    cfg = get_model_config(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == [stack["champion"]]
    declared = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert list(declared)[: len(cfg.feature_names)] == cfg.feature_names
    assert declared["age"] == ("INT64", [-1]) and declared["bmi"] == ("FP64", [-1])
    assert declared["sex"][0] == "BYTES" and declared["diabetes"][0] == "BOOL"
    assert declared["patient_id"] == ("INT64", [-1])
    assert {t["name"]: t["datatype"] for t in meta["outputs"]}["contributions"] == "FP64"
    assert {"probability", "label", "contribution_features"} <= {t["name"] for t in meta["outputs"]}
    status, message = refusal(client.get_model_metadata, "no_such_model", headers=headers(service))
    assert status == "404" and "no_such_model" in message
    status, message = refusal(client.get_model_metadata, MODEL)
    assert status == "401" and "Bearer" in message


# -- the same answers as /v1 --------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False], ids=["binary inputs", "json inputs"])
def test_feature_tensors_get_v1s_predictions_and_explanations(
    service: Service,
    client: triton.InferenceServerClient,
    v1: httpx.Client,
    stack: dict[str, Any],
    binary: bool,
) -> None:
    """The features as tensors, in the binary layout tritonclient sends by default or as JSON:
    /v1's answer for the same values as instances, explanations included."""
    rows = feature_rows(stack, stack["ids"][:6])
    meta = client.get_model_metadata(MODEL, headers=headers(service))
    result = client.infer(MODEL, feature_inputs(meta, rows, binary), outputs=outputs(*EXPLAINED),
                          headers=headers(service))  # fmt: skip
    answer = v1.post(V1, json={"instances": rows, "explain": True})
    assert answer.status_code == 200, answer.text
    assert_same_answers(result, answer.json()["predictions"])
    assert result.as_numpy("contributions").shape == (6, 3)
    assert result.get_response()["model_version"] == stack["champion"]


def test_entity_ids_get_v1s_answers_and_are_logged_and_counted(
    service: Service,
    client: triton.InferenceServerClient,
    v1: httpx.Client,
    stack: dict[str, Any],
) -> None:
    """Features from the online store by entity id, as /v1 reads them; every answered row is
    in the prediction log under the answer's request id, and counted in the metrics."""
    ids = stack["ids"][10:18]
    before = requests_answered(service, "200")
    result = client.infer(MODEL, [entity_input(ids)], headers=headers(service),
                          parameters={"explain": True, "top_k": 4})  # fmt: skip
    answer = v1.post(V1, json={"entity_ids": ids, "explain": True, "top_k": 4})
    assert_same_answers(result, answer.json()["predictions"])
    assert result.as_numpy("contribution_features").shape == (len(ids), 4)
    # without explanations, what the model answers and no explanation tensors
    plain = client.infer(MODEL, [entity_input(ids[:2])], headers=headers(service))
    names = [o["name"] for o in plain.get_response()["outputs"]]
    assert names == ["probability", "label", "threshold", "version", "event_timestamp"]
    assert requests_answered(service, "200") - before == 3  # one each: v2, v1, v2
    request_ids = {r.get_response()["parameters"]["request_id"] for r in (result, plain)}
    rows = logged(request_ids, len(ids) + 2)
    assert sorted(rows["patient_id"].tolist()) == sorted([*ids, *ids[:2]])
    assert set(rows["arm"]) == {"champion"}
    assert set(rows["model_version"].astype(str)) == {stack["champion"]}


# -- refusals ---------------------------------------------------------------------------------
def test_refusals_name_the_input_and_the_rule(
    service: Service, client: triton.InferenceServerClient, stack: dict[str, Any]
) -> None:
    ids = stack["ids"][:1]
    before = requests_answered(service, "400")
    status, message = refusal(client.infer, MODEL, [entity_input(ids)])
    assert status == "401" and "authentication required" in message
    status, message = refusal(
        client.infer, "no_such_model", [entity_input(ids)], headers=headers(service)
    )
    assert status == "404" and "unknown model 'no_such_model'" in message

    def bad(*inputs: triton.InferInput) -> str:
        status, message = refusal(client.infer, MODEL, list(inputs), headers=headers(service))
        assert status == "400", message
        return message

    rows = feature_rows(stack, ids)
    meta = client.get_model_metadata(MODEL, headers=headers(service))
    good = {t.name(): t for t in feature_inputs(meta, rows, binary=False)}
    wide = triton.InferInput("age", [1, 2], "INT64").set_data_from_numpy(
        np.array([[40, 41]], dtype=np.int64)
    )
    message = bad(*{**good, "age": wide}.values())
    assert "input 'age': shape [1, 2]" in message and "(rule: shape)" in message
    typed = triton.InferInput("sex", [1], "FP64").set_data_from_numpy(np.array([1.0]))
    message = bad(*{**good, "sex": typed}.values())
    assert "input 'sex': datatype FP64 does not fit; send BYTES" in message
    assert "(rule: datatype)" in message
    extra = triton.InferInput("height", [1], "FP64").set_data_from_numpy(np.array([180.0]))
    message = bad(*good.values(), extra)
    assert "input 'height': not an input of this model" in message
    assert "(rule: unknown_input)" in message
    old = triton.InferInput("age", [1], "INT64").set_data_from_numpy(np.array([300]))
    message = bad(*{**good, "age": old}.values())  # the contract's rules, as /v1 applies them
    assert "input 'age', row 0: 300 is outside [18.0, 100.0] (rule: range)" in message
    assert requests_answered(service, "400") - before == 4
    status, message = refusal(
        client.infer, MODEL, [entity_input([987_654_321])], headers=headers(service)
    )
    assert status == "404" and "input 'patient_id', row 0: unknown patient_id 987654321" in message
    # a version in the path aims every row at it: only for who may route
    status, message = refusal(
        client.infer, MODEL, [entity_input(ids)], model_version=stack["champion"],
        headers=headers(service),
    )  # fmt: skip
    assert status == "403" and "needs permission 'route'" in message


# -- canary routing -------------------------------------------------------------------------------
def test_canary_routing_is_v1s_and_a_version_in_the_path_pins_it(
    service: Service, client: triton.InferenceServerClient, v1: httpx.Client,
    stack: dict[str, Any],
) -> None:  # fmt: skip
    """During a canary each entity gets the arm it gets on /v1 (one routing hash), and the log
    records which; an admin's request to a version's path is answered by that version alone."""
    ids = stack["ids"][:200]
    admin = bearer(issue_token("admin"))
    opened = canary.open_canary(MODEL, stack["challenger"], 0.5)
    try:
        wait_for(lambda: v1.get(f"/v1/models/{MODEL}").json()["fraction"] == 0.5, "the canary")
        result = client.infer(MODEL, [entity_input(ids)], headers=headers(service))
        versions = result.as_numpy("version").tolist()
        by_v1 = [p["version"] for p in v1.post(V1, json={"entity_ids": ids}).json()["predictions"]]
        assert versions == by_v1
        assert set(versions) == {stack["champion"], stack["challenger"]}
        assert "model_version" not in result.get_response()  # two versions answered
        rows = logged({result.get_response()["parameters"]["request_id"]}, len(ids))
        arm_of = dict(zip(rows["patient_id"], rows["arm"], strict=True))
        for entity, version in zip(ids, versions, strict=True):
            challenger = version == stack["challenger"]
            assert arm_of[entity] == ("challenger" if challenger else "champion")
        pinned = client.infer(MODEL, [entity_input(ids[:20])], model_version=stack["challenger"],
                              headers=dict(admin))  # fmt: skip
        assert pinned.as_numpy("version").tolist() == [stack["challenger"]] * 20
        assert pinned.get_response()["model_version"] == stack["challenger"]
        assert client.is_model_ready(MODEL, stack["challenger"], headers=headers(service))
        meta = client.get_model_metadata(MODEL, headers=headers(service))
        assert meta["versions"] == [stack["champion"], stack["challenger"]]
    finally:
        canary.close_canary(MODEL)
    assert opened.rollout_id not in json.dumps(result.get_response())
    wait_for(lambda: v1.get(f"/v1/models/{MODEL}").json()["canary"] is None, "the canary to close")
    status, message = refusal(
        client.infer, MODEL, [entity_input(ids[:1])], model_version=stack["challenger"],
        headers=dict(admin),
    )  # fmt: skip
    assert status == "404" and f"version '{stack['challenger']}' is not served" in message


def test_tensor_forms_and_request_rules_over_plain_http(
    service: Service, v1: httpx.Client, stack: dict[str, Any]
) -> None:
    """What a hand-written client may send: ``[N, 1]`` tensors with nested data, the binary
    layout with its header, NaN for a missing value; each broken rule named."""
    ids = stack["ids"][:2]
    url = f"/v2/models/{MODEL}/infer"
    column = {
        "name": "patient_id",
        "shape": [2, 1],
        "datatype": "INT64",
        "data": [[i] for i in ids],
    }
    r = v1.post(url, json={"inputs": [column], "outputs": [{"name": "probability"}], "id": "a-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "a-1" and [o["name"] for o in body["outputs"]] == ["probability"]
    by_v1 = v1.post(V1, json={"entity_ids": ids}).json()["predictions"]
    assert body["outputs"][0]["data"] == [p["probability"] for p in by_v1]

    binary = {"name": "patient_id", "shape": [2], "datatype": "INT64",
              "parameters": {"binary_data_size": 16}}  # fmt: skip
    header = json.dumps({"inputs": [binary]}).encode()
    data = np.array(ids, dtype="<i8").tobytes()
    r = v1.post(
        url, content=header + data, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [p["probability"] for p in by_v1]
    r = v1.post(url, content=header + data[:12],
                headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert r.status_code == 400 and "12 bytes are not a whole number of INT64 values" in r.text

    rows = feature_rows(stack, ids[:1])
    tensors = [
        {"name": n, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else
         "BOOL" if isinstance(v, bool) else "FP64", "data": [v]}
        for n, v in rows[0].items()
    ]  # fmt: skip
    with_nan = [{**t, "data": [math.nan]} if t["name"] == "bmi" else t for t in tensors]
    nan = json.dumps({"inputs": with_nan})  # Python's json writes NaN, as rapidjson does
    r = v1.post(url, content=nan)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "input 'bmi', row 0: a value is required (not nullable) "
                                 "(rule: not_null)"}  # fmt: skip
    missing = [t for t in tensors if t["name"] != "bmi"]
    r = v1.post(url, json={"inputs": missing, "parameters": {"explian": True}})
    assert r.status_code == 400
    assert "input 'bmi': missing" in r.text and "unknown parameter 'explian'" in r.text
    r = v1.post(url, json={"inputs": tensors, "outputs": [{"name": "probabilty"}]})
    assert r.status_code == 400 and "output 'probabilty': not an output" in r.text
    r = v1.get(url)
    assert r.status_code == 405 and r.json() == {"error": f"GET {url}: use POST"}
    r = v1.post(url, content=b"{not json")
    assert r.status_code == 400 and "(rule: json_invalid)" in r.json()["error"]
    malformed = {"inputs": [{"name": "age", "shape": "1", "datatype": 7, "data": [40]}], "x": 1}
    error = v1.post(url, json=malformed).json()["error"]
    assert "x: unknown field" in error and "input 'age': shape '1'" in error, error
    assert "input 'age', field 'datatype': expected a string" in error, error
    # a length left over from an earlier binary request (tritonclient writes it into the
    # headers dict it is given) is named, not taken for a JSON error of the caller's own
    short = {"Inference-Header-Content-Length": "20"}
    r = v1.post(url, json={"inputs": [column]}, headers=short)
    assert r.status_code == 400
    assert "header 'Inference-Header-Content-Length': the body's first 20 bytes" in r.text

"""The governance API's plain parts: how a refusal names its field, which core error a client
raises for a status, the deployment a run request names, where file parameters may point."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.exceptions import RequestValidationError

from mlsteward.api import errors, launch
from mlsteward.api.auth import check_model_name, check_version
from mlsteward.api.client import GovernanceClient, error_for
from mlsteward.errors import (
    AuthenticationError,
    ChampionChangedError,
    IntegrityError,
    MlstewardError,
    NotFoundError,
    PermissionDeniedError,
    PromotionError,
)


@pytest.mark.parametrize(
    ("error", "field"),
    [
        ({"loc": ("body", "reason"), "msg": "Field required", "type": "missing"}, "reason"),
        ({"loc": ("body", "rows", 3, "label"), "msg": "x", "type": "t"}, "rows.3.label"),
        ({"loc": ("body", "train", "max_evals"), "msg": "x", "type": "t"}, "max_evals"),
        ({"loc": ("query", "limit"), "msg": "x", "type": "t"}, "limit"),
        ({"loc": ("body",), "msg": "JSON decode error", "type": "json_invalid"}, "body"),
        (
            {
                "loc": ("body",),
                "msg": "Input tag 'deploy' found using 'action' does not match",
                "type": "union_tag_invalid",
                "ctx": {"discriminator": "'action'"},
            },
            "action",
        ),
    ],
)
def test_a_validation_error_names_its_field(error: dict, field: str) -> None:
    answer = errors.validation_answer(RequestValidationError([error]))
    assert answer.status_code == 422
    body = answer.body.decode()
    assert f'"field":"{field}"' in body and f'"error":"{field}: ' in body


def test_several_validation_errors_name_the_first_and_count_the_rest() -> None:
    answer = errors.validation_answer(
        RequestValidationError(
            [
                {"loc": ("body", "reason"), "msg": "Field required", "type": "missing"},
                {"loc": ("body", "to"), "msg": "bad", "type": "t"},
            ]
        )
    )
    assert "reason: Field required (and 1 more)" in answer.body.decode()


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (AuthenticationError("no"), 401),
        (PermissionDeniedError("no", "promote"), 403),
        (NotFoundError("no"), 404),
        (PromotionError("no"), 409),
        (ChampionChangedError("no"), 409),
        (IntegrityError("no"), 409),
        (errors.BadInput("model", "no"), 422),
        (MlstewardError("no"), 422),
    ],
)
def test_each_refusal_has_its_status(exc: MlstewardError, status: int) -> None:
    assert errors.status_of(exc) == status


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, PromotionError),
        (422, MlstewardError),
        (503, MlstewardError),
    ],
)
def test_the_client_raises_the_cores_error_for_a_status(
    status: int, kind: type[MlstewardError]
) -> None:
    raised = error_for(status, {"error": "because", "permission": "promote"}, "fallback")
    assert type(raised) is kind and "because" in str(raised)
    if status == 403:
        assert isinstance(raised, PermissionDeniedError) and raised.permission == "promote"
    assert "HTTP 502" in str(error_for(502, None, "bad gateway"))


def test_the_client_is_on_only_with_a_url_and_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSTEWARD_API_URL", raising=False)
    monkeypatch.setenv("MLSTEWARD_TOKEN", "msw_x")
    assert GovernanceClient.from_env() is None
    monkeypatch.setenv("MLSTEWARD_API_URL", "http://127.0.0.1:8788/")
    client = GovernanceClient.from_env()
    assert client is not None and client.url == "http://127.0.0.1:8788"
    client.close()


def test_an_unreachable_api_is_one_clear_error() -> None:
    with (
        GovernanceClient("http://127.0.0.1:9", "msw_x", timeout=2) as client,
        pytest.raises(MlstewardError, match=r"no governance API at http://127\.0\.0\.1:9"),
    ):
        client.whoami()


@pytest.mark.parametrize("value", ["Heart", "../x", "a/b", "", "x" * 64, "1abc"])
def test_a_model_name_that_is_not_one_is_a_422_naming_the_field(value: str) -> None:
    with pytest.raises(errors.BadInput) as refused:
        check_model_name(value, "model")
    assert refused.value.field == "model" and errors.status_of(refused.value) == 422


@pytest.mark.parametrize("value", ["v1", "-1", "1.0", "1234567890", "\u0661"])
def test_a_version_that_is_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(errors.BadInput, match="not a version number"):
        check_version(value)
    assert check_version("007") == "7"


def test_each_action_names_its_deployment() -> None:
    assert launch.DeploymentRun("train", "heart_disease").deployment == (
        "train-model/train-heart-disease"
    )
    assert launch.DeploymentRun("rollout", "heart_disease").deployment == (
        "rollout-model/rollout-heart-disease"
    )


def test_file_parameters_may_point_under_the_gateways_data_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_WEBHOOK_DATA_ROOTS", f"{tmp_path}:s3://bucket/in/")
    assert launch.data_roots() == [str(tmp_path.resolve()), "s3://bucket/in"]
    monkeypatch.delenv("MLSTEWARD_WEBHOOK_DATA_ROOTS")
    assert any(root.endswith("/data") for root in launch.data_roots())


def test_every_refusal_is_documented_with_the_error_shape() -> None:
    documented = errors.responses(401, 403, 404, 409, 422, 503)
    assert set(documented) == {401, 403, 404, 409, 422, 503}
    assert all(d["model"].__name__ == "ErrorBody" for d in documented.values())

"""Canary routing, request-field rules, settings and token headers of the prediction service
(pure functions)."""

from __future__ import annotations

import math

import pytest
from starlette.datastructures import Headers

from mlsteward.config.models import get_model_config
from mlsteward.errors import AuthenticationError
from mlsteward.serving.auth import secure_openapi, token_of
from mlsteward.serving.features import check_instances, check_value, field_rules
from mlsteward.serving.routing import CHALLENGER_ARM, CHAMPION_ARM, bucket, choose_arm, routing_key
from mlsteward.serving.settings import ServingConfigError, ServingSettings


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5])
def test_hash_routing_hits_the_share(fraction: float) -> None:
    n = 40_000
    hits = sum(choose_arm("m", "r1", fraction, str(i)) == CHALLENGER_ARM for i in range(n))
    sd = math.sqrt(fraction * (1 - fraction) / n)
    assert abs(hits / n - fraction) < 4 * sd


def test_routing_is_deterministic_sticky_and_salted_per_rollout() -> None:
    keys = [str(i) for i in range(5_000)]
    first = [choose_arm("m", "r1", 0.25, k) for k in keys]
    assert first == [choose_arm("m", "r1", 0.25, k) for k in keys]
    # raising the share never moves a challenger entity back to the champion
    wider = [choose_arm("m", "r1", 0.5, k) for k in keys]
    assert all(
        w == CHALLENGER_ARM for f, w in zip(first, wider, strict=True) if f == CHALLENGER_ARM
    )
    # another rollout samples another cohort (overlap ~ 0.25 * 0.25, not 0.25)
    other = [choose_arm("m", "r2", 0.25, k) for k in keys]
    both = sum(a == b == CHALLENGER_ARM for a, b in zip(first, other, strict=True)) / len(keys)
    assert 0.04 < both < 0.09
    # no rollout or no share: champion; full share: challenger
    assert {choose_arm("m", None, 0.5, k) for k in keys[:50]} == {CHAMPION_ARM}
    assert {choose_arm("m", "r1", 0.0, k) for k in keys[:50]} == {CHAMPION_ARM}
    assert {choose_arm("m", "r1", 1.0, k) for k in keys[:50]} == {CHALLENGER_ARM}
    assert 0 <= bucket("m", "r1", "x") < 1


def test_routing_key_of_values_ignores_key_order() -> None:
    assert routing_key(None, {"a": 1, "b": "x"}) == routing_key(None, {"b": "x", "a": 1})
    assert routing_key(7, {"a": 1}) == "7"


def test_field_rules_name_the_field_and_the_rule() -> None:
    cfg = get_model_config("heart_disease")
    rules = field_rules(cfg, {})
    ok = {
        "age": 50, "sex": "F", "resting_bp": 120.0, "cholesterol": 200, "max_heart_rate": 150,
        "bmi": 25.5, "smoking": "never", "diabetes": False, "chest_pain_type": "typical",
        "exercise_angina": True, "st_depression": 1.0, "fasting_glucose": 90,
        "resting_ecg": "normal", "physical_activity_hours": 3,
    }  # fmt: skip
    assert check_instances(rules, [ok]) == []
    errors = check_instances(rules, [{**ok, "age": True, "bmi": float("nan"), "zip": "x"}])
    assert {(e.loc[-1], e.type) for e in errors} == {
        ("age", "dtype"),
        ("bmi", "dtype"),
        ("zip", "unknown_field"),
    }
    assert all(e.loc[:3] == ("body", "instances", 0) for e in errors)
    # bounds are inclusive, as in the ingestion contract
    assert check_value(rules["age"], 18, ("x",)) is None
    assert check_value(rules["age"], 17, ("x",)).type == "range"  # type: ignore[union-attr]


def test_authentication_is_on_unless_switched_off_and_a_typo_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("MLSTEWARD_SERVING_AUTH", "MLSTEWARD_SERVING_METRICS_AUTH"):
        monkeypatch.delenv(variable, raising=False)
    settings = ServingSettings.from_env()
    assert (settings.auth, settings.metrics_auth) == (True, False)
    monkeypatch.setenv("MLSTEWARD_SERVING_AUTH", "OFF")
    monkeypatch.setenv("MLSTEWARD_SERVING_METRICS_AUTH", "true")
    settings = ServingSettings.from_env()
    assert (settings.auth, settings.metrics_auth) == (False, True)
    monkeypatch.setenv("MLSTEWARD_SERVING_AUTH", "of")  # a typo never opens the service
    with pytest.raises(ServingConfigError, match="MLSTEWARD_SERVING_AUTH='of': use on or off"):
        ServingSettings.from_env()


def test_faults_that_do_not_parse_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSTEWARD_SERVING_FAULTS", '{"challenger": {"error_rate": 0.5}}')
    assert ServingSettings.from_env().faults["challenger"].error_rate == 0.5
    for bad in ('{"canary": {}}', '{"challenger": {"error_rate": 2}}', "[1]", "{oops"):
        monkeypatch.setenv("MLSTEWARD_SERVING_FAULTS", bad)
        with pytest.raises(ServingConfigError, match="MLSTEWARD_SERVING_FAULTS"):
            ServingSettings.from_env()


def test_a_token_comes_as_a_bearer_token_or_an_api_key() -> None:
    assert token_of(Headers({"Authorization": "Bearer  abc "})) == ("abc", "authorization")
    assert token_of(Headers({"authorization": "bearer abc"})) == ("abc", "authorization")
    assert token_of(Headers({"X-API-Key": "abc"})) == ("abc", "x-api-key")
    both = Headers({"Authorization": "Bearer one", "X-API-Key": "two"})
    assert token_of(both) == ("one", "authorization")
    assert token_of(Headers({})) == (None, "authorization")
    for bad in ("Basic abc", "Bearer", "abc"):
        with pytest.raises(AuthenticationError, match="Bearer <token>"):
            token_of(Headers({"Authorization": bad}))


def test_the_schema_states_security_only_on_protected_routes() -> None:
    schema = {
        "paths": {
            "/p": {"post": {"responses": {"200": {"description": "ok"}}}},
            "/healthz": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"X": {}}},
    }
    secured = secure_openapi(schema, {"/p": "predict"})
    assert set(secured["components"]) == {"schemas", "securitySchemes"}
    op = secured["paths"]["/p"]["post"]
    assert op["security"] == [{"bearerToken": []}, {"apiKey": []}]
    assert "'predict'" in op["responses"]["403"]["description"] and "401" in op["responses"]
    assert secured["paths"]["/healthz"] == schema["paths"]["/healthz"]
    assert "securitySchemes" not in schema["components"]  # the input is left alone

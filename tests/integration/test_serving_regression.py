"""A regression model through the prediction service, on the real stack: XGBRegressors
(``count:poisson``) trained, registered, signed and promoted by the training flow, their
features in the Feast online store, the service as its own process called over HTTP, the
prediction log it writes, and a canary rollout of the stronger version through it. The demo
classifier is served by the same process, so its answers are checked beside the regression
model's. The tests run in file order: the rollout, last, changes the champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.rollout import rollout_flow
from mlsteward.cli.app import app
from mlsteward.config.models import get_model_config
from mlsteward.errors import ConfigError
from mlsteward.features.encoding import encode
from mlsteward.features.online import online_features
from mlsteward.governance import promotion as governance
from mlsteward.monitoring import prediction_log
from mlsteward.serving.scorer import ServedModel
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL as CLASSIFIER
from tests.support.platform import free_port
from tests.support.serving import (
    FAST_TUNING,
    SERVICE_SETTINGS,
    Service,
    issue_token,
    live_traffic,
)

MODEL = "length_of_stay"
LABEL = "length_of_stay_days"
RACE = "race"
RACES = ["group_a", "group_b", "group_c"]
FEATURES = [
    {"name": "age", "dtype": "int", "min": 18, "max": 100},
    {"name": "sex", "dtype": "category", "categories": ["F", "M"]},
    {"name": "bmi", "dtype": "float", "min": 12, "max": 70},
    {"name": "smoking", "dtype": "category", "categories": ["never", "former", "current"]},
    {"name": "diabetes", "dtype": "bool"},
    {"name": "resting_bp", "dtype": "float", "min": 70, "max": 250},
    {"name": "fasting_glucose", "dtype": "float", "min": 50, "max": 400},
]
FEATURE_NAMES = [f["name"] for f in FEATURES]
REGRESSION_ANSWER = {"entity_id", "prediction", "version", "event_timestamp"}
CLASSIFICATION_ANSWER = {"entity_id", "probability", "label", "threshold", "version",
                         "event_timestamp"}  # fmt: skip
READY_TIMEOUT_SECONDS = 90.0
runner = CliRunner()


# Days in hospital add up on the log scale, which stumps fit well: the weak version stops after
# a few slow rounds, close to predicting the mean.
WEAK_TUNING = {
    "max_evals": 1,
    "num_boost_round": 5,
    "early_stopping_rounds": 5,
    "search_space": {
        "max_depth": {"dist": "choice", "options": [1]},
        "learning_rate": {"dist": "choice", "options": [0.05]},
    },
}
# A rollout that decides in seconds. Its subject is the regression path (the shift measured on
# predicted values, the quality test's numbers); the two test models differ by construction,
# and a step's p99 on a few dozen requests is their maximum, so neither may decide here.
FAST_ROLLOUT = {
    "steps": [0.5, 1.0],
    "min_requests": 60,
    "check_interval_seconds": 0.5,
    "step_timeout_seconds": 90,
    "guardrails": {"latency_slack_ms": 500, "max_prediction_psi": 10.0},
}


def _config(source: Path, *, with_race: bool, tuning: dict[str, Any]) -> dict[str, Any]:
    """The regression model's config; ``with_race`` adds a sensitive column that is not a
    feature (what serving accepts beside the features, for the prediction log only)."""
    sensitive: list[Any] = ["sex"]
    if with_race:
        sensitive.append({"column": RACE, "dtype": "category", "categories": RACES})
    return {
        "name": MODEL,
        "description": "Days in hospital after the visit (a test model).",
        "task": "regression",
        "source": {"path": str(source), "entity": "patient_id", "timestamp": "event_timestamp"},
        "label": LABEL,
        "features": FEATURES,
        "sensitive_attributes": sensitive,
        # a 450-row holdout: the error ratio between the sexes is reported, not gated
        "fairness": {"limits": {"mae_ratio": {}}},
        "tuning": {"objective": "count:poisson", **tuning},
        "promotion": {"policy": "auto"},
        "rollout": FAST_ROLLOUT,
        **SERVICE_SETTINGS,
    }


def _write(config_dir: Path, config: dict[str, Any]) -> None:
    path = config_dir / "models" / f"{MODEL}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _stays(cohort: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The cohort with days in hospital (a Poisson count that rises with age, weight, diabetes
    and smoking) instead of the diagnosis."""
    rng = np.random.default_rng(seed)
    rate = np.exp(
        0.6
        + 0.025 * (cohort["age"] - 50)
        + 0.03 * (cohort["bmi"] - 27)
        + 0.5 * cohort["diabetes"].astype(float)
        + 0.3 * (cohort["smoking"] == "current")
    )
    out = cohort[["patient_id", "event_timestamp", *FEATURE_NAMES]].copy()
    out[LABEL] = rng.poisson(rate.to_numpy()).astype("int64")
    return out


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def stack(mlsteward_home: Path) -> dict[str, Any]:
    """Both models trained, each one's first version promoted, their features materialized;
    the regression model's v1 a weak one (a few stumps), its v2 a stronger challenger that passed
    every gate. The regression config then gets its sensitive column that is not a feature."""
    # start-up time: the flows load Prefect, MLflow and Feast
    from flows.ingestion import ingestion_flow, materialize_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset
    from tests.support.governance import write_config

    work = mlsteward_home.parent
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    cohort = generate_cohort(n_rows=3_000, seed=11)
    heart = write_dataset(cohort, work / "cohort.parquet")
    stays = work / "stays.parquet"
    _stays(cohort, seed=12).to_parquet(stays, index=False)
    write_config(config_dir, tuning=FAST_TUNING, **SERVICE_SETTINGS)
    _write(config_dir, _config(stays, with_race=False, tuning=WEAK_TUNING))
    versions = {}
    for model, source in ((MODEL, stays), (CLASSIFIER, heart)):
        ingestion_flow(model=model, source=str(source))
        trained = training_flow(model=model)
        assert trained.governance.decision == "promoted", trained.governance
        materialize_flow(model=model)
        versions[model] = trained.version
    _write(config_dir, _config(stays, with_race=False, tuning=FAST_TUNING))
    challenger = training_flow(model=MODEL, promote=False)
    assert challenger.governance.decision == "challenger", challenger.governance
    _write(config_dir, _config(stays, with_race=True, tuning=FAST_TUNING))
    ids = cohort["patient_id"].unique().tolist()
    return {"versions": versions, "challenger": challenger.version, "ids": ids}


@pytest.fixture(scope="module")
def service(stack: dict[str, Any], mlsteward_home: Path) -> Iterator[Service]:
    """``python -m mlsteward.serving`` serving both models on a free port, with a viewer's
    token; SIGTERM at the module's end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSTEWARD_SERVING_")}
    log_path = mlsteward_home.parent / f"serving-{port}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.serving", "--port", str(port), "--model", MODEL,
             "--model", CLASSIFIER, "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Service(f"http://127.0.0.1:{port}", process, log_path, issue_token("viewer"))
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not _ready(running):
            assert process.poll() is None, f"service exited:\n{running.log_tail()}"
            assert time.monotonic() < deadline, f"service not ready:\n{running.log_tail()}"
            time.sleep(0.3)
        yield running
    finally:
        running.stop()


def _ready(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=30) as c:
        yield c


def _predict(client: httpx.Client, body: dict[str, Any], model: str = MODEL) -> httpx.Response:
    return client.post(f"/v1/models/{model}/predict", json=body)


def _online(model: str, ids: list[Any]) -> pd.DataFrame:
    cfg = get_model_config(model)
    return online_features(cfg, ids)


def _instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Online feature rows as a client would send them (JSON values, nulls for missing)."""
    records: list[dict[str, Any]] = json.loads(frame[FEATURE_NAMES].to_json(orient="records"))
    return records


def _logged(request_ids: set[str], rows: int, model: str = MODEL) -> pd.DataFrame:
    """The prediction log's rows of these requests, once the service has written them all."""
    deadline = time.monotonic() + 30
    while True:
        frame = prediction_log.read(model)
        if not frame.empty:
            frame = frame[frame["request_id"].isin(request_ids)]
            if len(frame) == rows:
                return frame.reset_index(drop=True)
        assert time.monotonic() < deadline, f"{rows} logged rows expected, found {len(frame)}"
        time.sleep(0.2)


# -- answers ------------------------------------------------------------------------------------
def test_a_regression_model_answers_the_models_numbers_explained_in_its_units(
    stack: dict[str, Any], client: httpx.Client
) -> None:
    """The numbers are ``XGBRegressor.predict`` on the same online features; every contribution
    asked for, with the base value, adds up to the prediction (a log link's restated in days,
    where unrestated they would add up to its logarithm); no probability, label or threshold."""
    ids = stack["ids"][:40]
    verified = governance.load_version(MODEL, "champion", actor="test")
    assert verified.is_regression and verified.objective == "count:poisson"
    expected = verified.model.predict(encode(_online(MODEL, ids), verified.info.encoding))
    r = _predict(client, {"entity_ids": ids, "explain": True, "top_k": len(FEATURE_NAMES)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "request_id", "predictions"} and body["model"] == MODEL
    out = body["predictions"]
    assert [p["entity_id"] for p in out] == ids
    assert [p["prediction"] for p in out] == [float(v) for v in expected]
    assert all(isinstance(p["prediction"], float) for p in out)
    assert {p["version"] for p in out} == {stack["versions"][MODEL]}
    for p in out:
        assert set(p) == {*REGRESSION_ANSWER, "explanation"}
        exp = p["explanation"]
        assert {c["feature"] for c in exp["contributions"]} == set(FEATURE_NAMES)
        total = exp["base_value"] + sum(c["value"] for c in exp["contributions"])
        assert total == pytest.approx(p["prediction"], rel=1e-5)
    plain = _predict(client, {"entity_ids": ids[:3]}).json()["predictions"]
    assert [set(p) for p in plain] == [REGRESSION_ANSWER] * 3
    assert "probability" not in r.text and "threshold" not in r.text and "label" not in r.text


def test_feature_values_give_the_same_numbers_as_entity_ids(
    stack: dict[str, Any], client: httpx.Client
) -> None:
    ids = stack["ids"][40:50]
    by_id = _predict(client, {"entity_ids": ids}).json()["predictions"]
    r = _predict(client, {"instances": _instances(_online(MODEL, ids))})
    assert r.status_code == 200, r.text
    assert [p["prediction"] for p in r.json()["predictions"]] == pytest.approx(
        [p["prediction"] for p in by_id], rel=1e-6
    )


def test_the_description_shows_no_threshold_for_a_regression_model(
    stack: dict[str, Any], client: httpx.Client
) -> None:
    described = client.get(f"/v1/models/{MODEL}").json()
    assert described["champion"]["version"] == stack["versions"][MODEL]
    assert described["champion"]["objective"] == "count:poisson"
    assert "threshold" not in described["champion"]
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and "threshold" not in ready["models"][MODEL]["champion"]
    assert isinstance(ready["models"][CLASSIFIER]["champion"]["threshold"], float)


# -- the prediction log and the sensitive column --------------------------------------------------
def test_the_log_holds_float_predictions_and_an_optional_sensitive_column(
    stack: dict[str, Any], client: httpx.Client
) -> None:
    """A sensitive column that is not a feature comes in instances or beside entity ids, is
    written to the log with the prediction, and changes nothing in the answer."""
    ids = stack["ids"][50:54]
    instances = _instances(_online(MODEL, ids))
    given = [{**row, RACE: race} for row, race in zip(instances[:3], RACES, strict=True)]
    with_race = _predict(client, {"instances": [*given, instances[3]]})
    without = _predict(client, {"instances": instances})
    beside_ids = _predict(
        client, {"entity_ids": ids[:2], "attributes": [{RACE: "group_b"}, {RACE: None}]}
    )
    answers = [with_race, without, beside_ids]
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
    assert [p["prediction"] for p in with_race.json()["predictions"]] == [
        p["prediction"] for p in without.json()["predictions"]
    ]
    request_ids = {a.json()["request_id"] for a in answers}
    log = _logged(request_ids, rows=10)
    assert "prediction_proba" not in log.columns
    assert log["prediction"].dtype == np.float64
    answered = [p["prediction"] for a in answers for p in a.json()["predictions"]]
    assert sorted(log["prediction"].tolist()) == sorted(answered)
    by_request = {rid: part for rid, part in log.groupby("request_id")}
    race_of = by_request[with_race.json()["request_id"]][RACE].tolist()
    assert race_of == [*RACES, None]
    assert by_request[without.json()["request_id"]][RACE].isna().all()
    assert by_request[beside_ids.json()["request_id"]][RACE].tolist() == ["group_b", None]
    assert set(log["arm"]) == {"champion"}


def test_a_sensitive_column_of_the_wrong_type_is_a_422_naming_it(
    stack: dict[str, Any], client: httpx.Client
) -> None:
    instance = _instances(_online(MODEL, stack["ids"][:1]))[0]
    r = _predict(client, {"instances": [{**instance, RACE: 5}]})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "instances", 0, RACE] and error["type"] == "dtype"
    assert error["msg"] == f"{RACE}: expected a string, got 5"
    r = _predict(client, {"instances": [{**instance, RACE: "group_z"}]})
    assert r.status_code == 422 and "group_z" in r.json()["detail"][0]["msg"]
    r = _predict(client, {"entity_ids": stack["ids"][:1], "attributes": [{RACE: True}]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "attributes", 0, RACE]
    r = _predict(client, {"entity_ids": stack["ids"][:1], "attributes": [{"religion": "x"}]})
    assert r.status_code == 422 and "religion" in r.json()["detail"][0]["msg"]
    assert RACE in r.json()["detail"][0]["msg"]
    r = _predict(client, {"entity_ids": stack["ids"][:2], "attributes": [{RACE: "group_a"}]})
    assert r.status_code == 422 and "one object per entity id" in r.text
    # the classifier has no such column: the name is refused as any unknown field
    r = _predict(client, {"entity_ids": stack["ids"][:1], "attributes": [{RACE: "group_a"}]},
                 model=CLASSIFIER)  # fmt: skip
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "unknown_field"


# -- the classifier beside it ----------------------------------------------------------------
def test_a_classification_answer_is_unchanged(stack: dict[str, Any], client: httpx.Client) -> None:
    ids = stack["ids"][:5]
    r = _predict(client, {"entity_ids": ids, "explain": True}, model=CLASSIFIER)
    assert r.status_code == 200, r.text
    out = r.json()["predictions"]
    assert [set(p) for p in out] == [{*CLASSIFICATION_ANSWER, "explanation"}] * len(ids)
    for p in out:
        assert p["label"] == int(p["probability"] >= p["threshold"])
        assert set(p["explanation"]) == {"base_value", "contributions"}
    log = _logged({r.json()["request_id"]}, rows=len(ids), model=CLASSIFIER)
    assert log["prediction_proba"].tolist() == [p["probability"] for p in out]
    assert log["prediction"].tolist() == [p["label"] for p in out]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert list(schema["PredictionOut"]["properties"]) == [
        "entity_id", "probability", "label", "threshold", "version", "event_timestamp",
        "explanation",
    ]  # fmt: skip
    assert list(schema["RegressionPredictionOut"]["properties"]) == [
        "entity_id", "prediction", "version", "event_timestamp", "explanation",
    ]  # fmt: skip


def test_a_version_of_the_other_task_is_not_served(stack: dict[str, Any]) -> None:
    verified = governance.load_version(MODEL, "champion", actor="test")
    with pytest.raises(ConfigError, match=r"is a regression model \(count:poisson\), but the "
                       r"config's task is binary_classification"):  # fmt: skip
        ServedModel.from_verified(get_model_config(CLASSIFIER), verified)


def test_the_predict_command_prints_the_predicted_value(
    stack: dict[str, Any], service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_TOKEN", service.token)
    entity = str(stack["ids"][0])
    args = ["predict", MODEL, "-e", entity, "--explain", "--url", service.url]
    human = runner.invoke(app, args)
    assert human.exit_code == 0, human.output
    value = runner.invoke(app, [*args, "--json"])
    prediction = json.loads(value.stdout)["predictions"][0]["prediction"]
    assert human.stdout.startswith(f"{entity}: {prediction:.4g}  v{stack['versions'][MODEL]}")
    assert "in the label's units" in human.stdout
    assert "p=" not in human.stdout and "log-odds" not in human.stdout


# -- a canary of the stronger version (last: it changes the champion) ------------------------------
def test_a_regression_challenger_is_canaried_on_its_predicted_values_and_promoted(
    stack: dict[str, Any], service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollout flow steps the challenger through live traffic: each step's prediction shift
    is measured on the logged predicted values (no probabilities exist), quality waits for
    labels, and after the last step the version is promoted."""
    v1, v2 = stack["versions"][MODEL], stack["challenger"]
    monkeypatch.setenv("MLSTEWARD_SERVING_URL", service.url)
    monkeypatch.setenv("MLSTEWARD_SERVING_TOKEN", issue_token("viewer", "rollout-watch"))
    with live_traffic(service, MODEL, stack["ids"]) as traffic:
        result = rollout_flow(model=MODEL, version=v2)
    assert traffic.failed == 0, traffic.errors[:3]
    assert result.decision == "promoted", result
    assert result.champion == v1 and traffic.versions.get(v2, 0) > 0
    checks = [{c["name"]: c for c in s["verdict"]["checks"]} for s in result.steps]
    assert [s["fraction"] for s in result.steps] == [0.5, 1.0]
    first = checks[0]["prediction_shift"]
    assert first["evaluable"] and first["observed"]["psi"] is not None, first
    assert first["message"].startswith("PSI of challenger vs champion predicted values")
    for step in checks:
        quality = step["quality"]
        assert not quality["evaluable"] and "labelled rows" in quality["message"]
        assert set(quality["limit"]) >= {"mae_margin", "mae_margin_mode"}
    logged = prediction_log.read(MODEL)
    canary_rows = logged[logged["model_version"] == v2]
    assert len(canary_rows) > 0 and canary_rows["prediction"].dtype == np.float64
    assert "challenger" in set(canary_rows["arm"])  # (and champion, once promoted)
    described = httpx.get(f"{service.url}/v1/models/{MODEL}", headers=service.headers).json()
    deadline = time.monotonic() + 30
    while described["champion"]["version"] != v2 and time.monotonic() < deadline:
        time.sleep(0.3)
        described = httpx.get(f"{service.url}/v1/models/{MODEL}", headers=service.headers).json()
    assert described["champion"]["version"] == v2 and described["canary"] is None

"""What a signed delivery may ask for: trials up to the model's ceiling, files under the data
roots, model names by the one rule. Checked as pure functions and through the real app, whose
refusals come before any call to Prefect."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlsteward.audit import Action, audit_store
from mlsteward.config.models import get_model_config, load_model_config
from mlsteward.config.sections.training import TuningConfig
from mlsteward.errors import ConfigError
from mlsteward.gateway.app import create_app
from mlsteward.gateway.client import build_request
from mlsteward.gateway.limits import check_run, under_roots
from mlsteward.gateway.payloads import Refusal, RunRequest, check_model
from mlsteward.gateway.settings import GatewayConfigError, GatewaySettings, split_roots
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, write_config

SECRET = "limits-secret-0123456789"
UNREACHABLE_API = "http://127.0.0.1:9/api"  # never called: every request here is refused first


def test_the_trial_ceiling_defaults_to_200_and_never_refuses_a_configs_own_max_evals() -> None:
    assert TuningConfig().max_evals_ceiling == 200
    assert TuningConfig(max_evals=500).max_evals_ceiling == 500  # written before the ceiling
    assert TuningConfig(max_evals=5, max_evals_ceiling=8).max_evals_ceiling == 8
    assert get_model_config(MODEL).tuning.max_evals_ceiling == 200


def test_a_ceiling_below_max_evals_is_a_config_error_naming_both(tmp_path: Path) -> None:
    path = write_config(tmp_path, tuning={"max_evals": 50, "max_evals_ceiling": 10})
    with pytest.raises(ConfigError) as info:
        load_model_config(path)
    message = str(info.value)
    assert "tuning" in message and "max_evals (50)" in message
    assert "max_evals_ceiling (10)" in message


@pytest.fixture
def roots(tmp_path: Path) -> list[str]:
    data = tmp_path / "data"
    (data / "batches").mkdir(parents=True)
    (data / "batches" / "b.parquet").write_bytes(b"x")
    (tmp_path / "secret.csv").write_text("x")
    (data / "escape.csv").symlink_to(tmp_path / "secret.csv")
    (data / "inside.csv").symlink_to(data / "batches" / "b.parquet")
    return GatewaySettings(secret=SECRET, data_roots=[str(data), "s3://bucket/in/"]).data_roots


def test_files_must_resolve_under_a_data_root(tmp_path: Path, roots: list[str]) -> None:
    data = tmp_path / "data"
    assert roots == [str(data.resolve()), "s3://bucket/in"]
    assert under_roots(str(data / "batches" / "b.parquet"), roots)
    assert under_roots(str(data / "not-yet-written.csv"), roots)
    assert under_roots(str(data / "inside.csv"), roots)
    assert not under_roots(str(data / "escape.csv"), roots)  # a symlink out of the root
    assert not under_roots(str(data / ".." / "secret.csv"), roots)
    assert not under_roots(str(data) + "-other/x.csv", roots)  # a sibling sharing the prefix
    assert not under_roots("/etc/passwd", roots)
    assert not under_roots("x\0y", roots)


def test_relative_paths_are_read_from_the_project_root_as_the_run_reads_them() -> None:
    roots = GatewaySettings(secret=SECRET, data_roots=["data"]).data_roots
    assert roots == [str(REPO_ROOT / "data")]
    assert under_roots("data/heart_disease.parquet", roots)
    assert not under_roots("data/../pyproject.toml", roots)
    assert not under_roots("config/models/heart_disease.yaml", roots)


def test_urls_only_under_a_configured_url_root(roots: list[str]) -> None:
    assert under_roots("s3://bucket/in/batch.parquet", roots)
    assert not under_roots("s3://bucket/input/batch.parquet", roots)
    assert not under_roots("s3://bucket/in/../private/x.parquet", roots)
    assert not under_roots("s3://other/in/x.parquet", roots)
    assert not under_roots("file:///etc/passwd", roots)
    local_only = GatewaySettings(secret=SECRET, data_roots=["/srv/data"]).data_roots
    assert not under_roots("s3://bucket/in/batch.parquet", local_only)


def test_data_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLSTEWARD_WEBHOOK_SECRET", SECRET)
    assert GatewaySettings.from_env().data_roots == [
        str(REPO_ROOT / "data"),
        str(Path(os.environ["MLSTEWARD_HOME"]).resolve() / "data"),
    ]
    raw = os.pathsep.join([str(tmp_path), "s3://bucket/in", "gs://b"])
    assert split_roots(raw) == [str(tmp_path), "s3://bucket/in", "gs://b"]
    monkeypatch.setenv("MLSTEWARD_WEBHOOK_DATA_ROOTS", raw)
    assert GatewaySettings.from_env().data_roots == [str(tmp_path), "s3://bucket/in", "gs://b"]
    for bad in ("", "s3://"):
        monkeypatch.setenv("MLSTEWARD_WEBHOOK_DATA_ROOTS", bad)
        with pytest.raises(GatewayConfigError, match="data_roots"):
            GatewaySettings.from_env()


def test_run_requests_over_a_limit_are_refused_naming_the_parameter(
    tmp_path: Path, roots: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path / "config", tuning={"max_evals": 5, "max_evals_ceiling": 10})
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))
    check_run(RunRequest("train", MODEL, {"max_evals": 10}), roots)
    check_run(RunRequest("train", MODEL, {"max_evals": "many"}), roots)  # the schema's to name
    check_run(RunRequest("score", MODEL, {"source": str(tmp_path / "data" / "b.csv")}), roots)
    cases: list[tuple[RunRequest, str]] = [
        (RunRequest("train", MODEL, {"max_evals": 11}), "parameters.max_evals: 11 trials"),
        (RunRequest("score", MODEL, {"source": "/etc/passwd"}), "parameters.source: '/etc/"),
        (RunRequest("score", MODEL, {"entities": "../x.csv"}), "parameters.entities"),
        (RunRequest("drift", MODEL, {"current": "s3://other/x"}), "parameters.current"),
    ]
    for request, needle in cases:
        with pytest.raises(Refusal) as info:
            check_run(request, roots)
        assert info.value.status == 422 and needle in info.value.reason, info.value.reason
    with pytest.raises(Refusal) as ceiling:
        check_run(RunRequest("train", MODEL, {"max_evals": 11}), roots)
    assert "ceiling of 10 (tuning.max_evals_ceiling)" in ceiling.value.reason


def test_model_names_follow_the_one_rule_before_the_known_list() -> None:
    assert check_model("churn", ["churn"]) == "churn"
    for bad in ("../../elsewhere/heart_disease", "Heart", 7, None):
        with pytest.raises(Refusal) as info:
            check_model(bad, ["churn", "Heart"])
        assert info.value.status == 422 and "is not a model name" in info.value.reason
    with pytest.raises(Refusal, match="unknown model 'fraud'"):
        check_model("fraud", ["churn"])


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    write_config(tmp_path / "config", tuning={"max_evals": 5, "max_evals_ceiling": 10})
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))
    settings = GatewaySettings(
        secret=SECRET, api_url=UNREACHABLE_API, data_roots=[str(tmp_path / "data")]
    )
    with TestClient(create_app(settings)) as c:
        yield c


def post(client: TestClient, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
    body, headers = build_request(action, MODEL, parameters, SECRET)
    response = client.post("/hooks/ci", content=body, headers=headers)
    assert response.status_code == 422, response.text
    return response.json()


def test_the_gateway_refuses_a_signed_request_over_a_limit_with_its_own_record(
    client: TestClient,
) -> None:
    answer = post(client, "train", {"max_evals": 1000})
    assert "parameters.max_evals: 1000 trials" in answer["error"]
    assert "ceiling of 10" in answer["error"] and answer["ceiling"] == 10
    answer = post(client, "score", {"source": "/etc/passwd"})
    assert "parameters.source" in answer["error"] and answer["field"] == "source"
    with audit_store() as store:
        refused = store.query(action=Action.WEBHOOK_REFUSED)
    assert [r.details["status"] for r in refused] == [422, 422]
    assert "max_evals" in refused[0].reason and refused[0].model == MODEL
    assert "parameters.source" in refused[1].reason

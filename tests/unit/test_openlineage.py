"""OpenLineage without Prefect: where events go (variables over profile over defaults), the
events as the spec wants them, and an emitter that reports a failure once and never raises."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openlineage.client.serde import Serde

from mlsteward.config.models import get_model_config
from mlsteward.config.settings import lineage_settings, locations
from mlsteward.data.lineage_emitter import emit_event, warn_once
from mlsteward.data.lineage_events import ParentRef, flow_io, run_event
from mlsteward.errors import ConfigError
from tests.support.openlineage import lineage_server, read_events, validate_run_event

MODEL = "heart_disease"
VARIABLES = (
    "MLSTEWARD_LINEAGE_TRANSPORT",
    "MLSTEWARD_LINEAGE_URL",
    "MLSTEWARD_LINEAGE_ENDPOINT",
    "MLSTEWARD_LINEAGE_NAMESPACE",
    "MLSTEWARD_LINEAGE_FILE",
    "MLSTEWARD_LINEAGE_TIMEOUT",
    "MLSTEWARD_LINEAGE_API_KEY",
    "MLSTEWARD_LINEAGE_API_KEY_BLOCK",
    "OPENLINEAGE_URL",
    "OPENLINEAGE_CONFIG",
    "OPENLINEAGE_DISABLED",
    "OPENLINEAGE_NAMESPACE",
    "OPENLINEAGE_API_KEY",
    "OPENLINEAGE__TRANSPORT__TYPE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = set(os.environ)
    yield
    # the OpenLineage client copies OPENLINEAGE_URL and its key into OPENLINEAGE__* variables
    for name in set(os.environ) - before:
        if name.startswith("OPENLINEAGE__"):
            del os.environ[name]


def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lineage: dict[str, Any]) -> None:
    path = tmp_path / "team.yaml"
    path.write_text(json.dumps({"description": "a team's", "lineage": lineage}))
    monkeypatch.setenv("MLSTEWARD_PROFILE", str(path))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- where events go -------------------------------------------------------------------------


def test_by_default_events_are_json_lines_under_the_home(mlsteward_home: Path) -> None:
    settings = lineage_settings()
    assert settings.transport == "file" and settings.namespace == "mlsteward"
    assert settings.path == mlsteward_home.resolve() / "lineage" / "events.jsonl"
    assert locations()["lineage"] == f"file {settings.path}"


def test_a_url_means_http_and_the_profile_yields_to_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile(
        tmp_path,
        monkeypatch,
        {"url": "http://marquez.internal:5000", "namespace": "team-a", "api_key_env": "TEAM_KEY"},
    )
    settings = lineage_settings()
    assert (settings.transport, settings.namespace) == ("http", "team-a")
    assert settings.api_key_env == "TEAM_KEY" and settings.endpoint == "api/v1/lineage"
    assert settings.destination() == "http http://marquez.internal:5000/api/v1/lineage"

    monkeypatch.setenv("MLSTEWARD_LINEAGE_URL", "https://ingest:s3cret@datahub.internal")
    monkeypatch.setenv("MLSTEWARD_LINEAGE_ENDPOINT", "openapi/openlineage/api/v1/lineage")
    monkeypatch.setenv("MLSTEWARD_LINEAGE_NAMESPACE", "prod")
    settings = lineage_settings()
    assert settings.url == "https://ingest:s3cret@datahub.internal" and settings.namespace == "prod"
    # what is shown names the server, never its password
    assert settings.destination() == (
        "http https://datahub.internal/openapi/openlineage/api/v1/lineage"
    )
    assert "s3cret" not in str(locations())

    monkeypatch.setenv("MLSTEWARD_LINEAGE_TRANSPORT", "none")
    assert lineage_settings().enabled is False


def test_openlineage_own_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", "http://marquez:5000")
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "airflow-prod")
    settings = lineage_settings()
    assert (settings.transport, settings.namespace) == ("openlineage", "airflow-prod")
    monkeypatch.setenv("MLSTEWARD_LINEAGE_TRANSPORT", "file")  # ours, named, wins
    assert lineage_settings().transport == "file"
    monkeypatch.delenv("MLSTEWARD_LINEAGE_TRANSPORT")
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert lineage_settings().transport == "none"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MLSTEWARD_LINEAGE_TRANSPORT", "kafka", "MLSTEWARD_LINEAGE_TRANSPORT='kafka'"),
        ("MLSTEWARD_LINEAGE_TRANSPORT", "http", "MLSTEWARD_LINEAGE_URL"),
        ("MLSTEWARD_LINEAGE_URL", "ftp://files.internal", "MLSTEWARD_LINEAGE_URL"),
        ("MLSTEWARD_LINEAGE_NAMESPACE", "two words", "MLSTEWARD_LINEAGE_NAMESPACE"),
        ("MLSTEWARD_LINEAGE_TIMEOUT", "0", "MLSTEWARD_LINEAGE_TIMEOUT='0'"),
    ],
)
def test_a_setting_that_cannot_be_right_is_named(
    variable: str, value: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named):
        lineage_settings()


def test_a_profile_key_that_cannot_be_right_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile(tmp_path, monkeypatch, {"transprt": "http"})
    with pytest.raises(ConfigError, match=r"lineage\.transprt"):
        lineage_settings()
    profile(tmp_path, monkeypatch, {"api_key_env": "the key itself"})
    with pytest.raises(ConfigError, match=r"lineage\.api_key_env"):
        lineage_settings()


# -- the events ------------------------------------------------------------------------------


def as_json(event: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(Serde.to_json(event))
    return document


def test_events_built_without_prefect_follow_the_spec(tmp_path: Path) -> None:
    cfg = get_model_config(MODEL)
    run_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    source = tmp_path / "cohort.csv"
    io = flow_io("ingestion", cfg, {"model": MODEL, "source": str(source)})
    try:
        raise ValueError("a row broke the contract")
    except ValueError as exc:
        error = exc
    event = as_json(
        run_event(
            "FAIL",
            run_id=run_id,
            flow="ingest-data",
            model=MODEL,
            namespace="mlsteward",
            io=io,
            parent=ParentRef(parent_id, f"drift-model.{MODEL}", parent_id, f"drift-model.{MODEL}"),
            error=error,
        )
    )
    used = validate_run_event(event)
    assert len(used) == 8, used  # engine, ours, parent, error, job type; source, schema, ours
    assert event["run"]["facets"]["errorMessage"]["message"] == (
        "ValueError: a row broke the contract"
    )
    assert "raise ValueError" in event["run"]["facets"]["errorMessage"]["stackTrace"]
    [read] = event["inputs"]
    assert (read["namespace"], read["name"]) == ("file", str(source))
    fields = [f["name"] for f in read["facets"]["schema"]["fields"]]
    assert fields[0] == cfg.source.entity and fields[-1] == cfg.label
    assert set(cfg.data_column_names) <= set(fields)

    # the check is real: a facet without what its schema requires, or under another key, fails
    broken = json.loads(json.dumps(event))
    del broken["inputs"][0]["facets"]["mlsteward"]["role"]
    with pytest.raises(jsonschema.ValidationError, match="'role' is a required property"):
        validate_run_event(broken)
    moved = json.loads(json.dumps(event))
    moved["run"]["facets"]["error"] = moved["run"]["facets"].pop("errorMessage")
    with pytest.raises(AssertionError, match="'error' is not"):
        validate_run_event(moved)


def test_drift_reads_the_reference_from_the_report_it_logged() -> None:
    cfg = get_model_config(MODEL)
    result = {
        "rows": {"reference": 300, "current": 1200},
        "report_uri": "runs:/0a1b2c/drift/v7/drift-20260101T000000Z.html",
        "decision": {"retrain": True},
    }
    io = flow_io("drift", cfg, {"model": MODEL, "current": None, "window_days": None}, result)
    names = [d.name for d in io.inputs]
    assert names[0] == "runs/0a1b2c/artifacts/holdout/test_predictions.parquet"
    assert names[1].endswith(f"predictions/{MODEL}")
    assert (io.inputs[0].rows, io.inputs[1].rows) == (300, 1200)
    assert io.run == {"modelVersion": "7", "decision": "retrain"}
    # a report address of another shape: no reference rather than a wrong one
    result["report_uri"] = "s3://elsewhere/report.html"
    io = flow_io("drift", cfg, {"model": MODEL}, result)
    assert [d.name for d in io.inputs] == [names[1]]


# -- sending ---------------------------------------------------------------------------------


def event_for(model: str = MODEL) -> Any:
    return run_event(
        "START", run_id=str(uuid.uuid4()), flow="score-model", model=model, namespace="mlsteward"
    )


def test_the_file_transport_appends_one_line_per_event(mlsteward_home: Path) -> None:
    settings = lineage_settings()
    first, second = event_for(), event_for()
    assert emit_event(first, settings) and emit_event(second, settings)
    assert settings.path is not None
    written = read_events(settings.path)
    assert [e["run"]["runId"] for e in written] == [first.run.runId, second.run.runId]
    for event in written:
        validate_run_event(event)


def test_openlineage_configuration_sends_where_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    with lineage_server() as (url, received):
        monkeypatch.setenv("OPENLINEAGE_URL", url)
        monkeypatch.setenv("OPENLINEAGE_API_KEY", "ol-key")
        assert emit_event(event_for(), lineage_settings())
    [request] = received
    assert request["path"] == "/api/v1/lineage"
    assert request["headers"]["Authorization"] == "Bearer ol-key"


def test_a_failure_is_one_warning_and_never_an_exception(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLSTEWARD_LINEAGE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLSTEWARD_LINEAGE_API_KEY", "never-shown")
    settings = lineage_settings()
    with caplog.at_level(logging.WARNING, logger="mlsteward.lineage"):
        assert emit_event(event_for(), settings) is False
        assert emit_event(event_for(), settings) is False
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlsteward.lineage"]
    assert len(warnings) == 1 and "cannot be sent to http http://127.0.0.1:" in warnings[0]
    assert "never-shown" not in warnings[0]


def test_a_warning_never_quotes_the_key_or_a_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLSTEWARD_LINEAGE_URL", "http://user:pa55@lineage-a.internal")
    settings = lineage_settings()
    leak = RuntimeError("refused Bearer k3y for http://user:pa55@lineage-a.internal/api")
    with caplog.at_level(logging.WARNING, logger="mlsteward.lineage"):
        warn_once(settings, leak, None, key="k3y")
    [message] = [r.getMessage() for r in caplog.records if r.name == "mlsteward.lineage"]
    assert "k3y" not in message and "pa55" not in message
    assert "Bearer *** for http://lineage-a.internal/api" in message


def test_a_snapshot_loaded_into_postgres_is_a_second_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "production-like.yaml"
    path.write_text(json.dumps({"postgres": {"url": "postgresql://app:pw@db.internal:6543"}}))
    monkeypatch.setenv("MLSTEWARD_PROFILE", str(path))
    digest = "c" * 64
    result = {
        "model": MODEL,
        "data_version": digest,
        "snapshot_path": str(tmp_path / f"{digest}.parquet"),
        "rows": 90,
        "time_range": ["2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"],
        "contract": {"source": str(tmp_path / "in.csv"), "total_rows": 100},
        "offline_table": {"table": f"heart_disease__{digest[:16]}", "rows": 90},
    }
    io = flow_io("ingestion", get_model_config(MODEL), {"model": MODEL}, result)
    snapshot, table = io.outputs
    assert (table.namespace, table.name) == (
        "postgres://db.internal:6543",
        f"mlsteward_offline.public.heart_disease__{digest[:16]}",
    )
    assert "pw" not in table.namespace and table.rows == 90
    event = as_json(
        run_event(
            "COMPLETE",
            run_id=str(uuid.uuid4()),
            flow="ingest-data",
            model=MODEL,
            namespace="mlsteward",
            io=io,
        )
    )
    validate_run_event(event)
    assert event["outputs"][1]["facets"]["version"]["datasetVersion"] == digest
    assert io.inputs[0].rows == 100 and snapshot.rows == 90

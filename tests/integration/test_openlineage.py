"""OpenLineage run events of real ingestion, training, scoring and drift runs: valid against
the spec, linked through the datasets they share, sent over HTTP with the key, off when asked,
and never the reason a run fails."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect.states import Crashed, State

from flows.drift import drift_flow
from flows.ingestion import ingestion_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from mlsteward.config.settings import predictions_dir, snapshots_dir
from mlsteward.data.lineage_events import producer
from mlsteward.data.synthetic import generate_batch, generate_cohort, write_dataset
from tasks.lineage import lineage_hooks
from tests.support.governance import MODEL
from tests.support.openlineage import lineage_server as collecting_server
from tests.support.openlineage import read_events, validate_run_event

KEY = "lineage-key-5f0c2e"


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    return {"tuning": {"max_evals": 1}}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def cohort(mlsteward_home: Path) -> Path:
    return write_dataset(
        generate_cohort(n_rows=4_000, seed=7), mlsteward_home.parent / "cohort.parquet"
    )


def events_file(home: Path) -> Path:
    return home / "lineage" / "events.jsonl"


def run_of(state: State[Any]) -> str:
    return str(state.state_details.flow_run_id)


def events_of(home: Path, run_id: str) -> list[dict[str, Any]]:
    return [e for e in read_events(events_file(home)) if e["run"]["runId"] == run_id]


def by_name(datasets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in datasets}


@pytest.fixture(scope="module")
def loop(mlsteward_home: Path, cohort: Path) -> dict[str, Any]:
    """One run of each flow on the default transport (JSON lines under the home): ingest,
    train (promoted: the first version), score a file, check drift on the prediction log."""
    batch = mlsteward_home.parent / "batch.parquet"
    generate_batch(n_rows=400, seed=11).drop(columns=["heart_disease"]).to_parquet(batch)
    states = {
        "ingest-data": ingestion_flow(model=MODEL, source=str(cohort), return_state=True),
        "train-model": training_flow(model=MODEL, return_state=True),
        "score-model": scoring_flow(model=MODEL, source=str(batch), return_state=True),
        "drift-model": drift_flow(model=MODEL, window_days=1.0, return_state=True),
    }
    assert all(s.is_completed() for s in states.values()), states
    return {
        "states": states,
        "results": {flow: s.result() for flow, s in states.items()},
        "events": {flow: events_of(mlsteward_home, run_of(s)) for flow, s in states.items()},
        "batch": batch,
    }


def test_each_run_tells_what_it_read_and_wrote_in_valid_linked_events(
    loop: dict[str, Any], cohort: Path
) -> None:
    used: set[str] = set()
    for flow_name, events in loop["events"].items():
        # one START, then one COMPLETE, of the Prefect run, for the job <flow>.<model>
        assert [e["eventType"] for e in events] == ["START", "COMPLETE"], flow_name
        start, complete = events
        run_id = run_of(loop["states"][flow_name])
        assert start["run"]["runId"] == complete["run"]["runId"] == run_id
        assert {e["job"]["name"] for e in events} == {f"{flow_name}.{MODEL}"}
        assert {e["job"]["namespace"] for e in events} == {"mlsteward"}
        assert start["eventTime"] <= complete["eventTime"]
        assert complete["producer"] == producer()
        engine = complete["run"]["facets"]["processing_engine"]
        assert engine["name"] == "mlsteward" and engine["version"] == "0.1.0"
        assert complete["run"]["facets"]["mlsteward"]["flow"] == flow_name
        assert "errorMessage" not in complete["run"]["facets"]
        for event in events:
            used |= validate_run_event(event)
    names = {url.rpartition("/")[2] for url in used}
    assert {
        "SchemaDatasetFacet",
        "DatasetVersionDatasetFacet",
        "DatasourceDatasetFacet",
        "DatasetTypeDatasetFacet",
        "InputStatisticsInputDatasetFacet",
        "OutputStatisticsOutputDatasetFacet",
        "ProcessingEngineRunFacet",
        "JobTypeJobFacet",
        "MlstewardRunFacet",
        "MlstewardDatasetFacet",
    } <= names, names

    results, events = loop["results"], loop["events"]
    ingested, trained = results["ingest-data"], results["train-model"]
    scored = results["score-model"]

    # ingestion: the source file in (named at START already), the snapshot out
    start, complete = events["ingest-data"]
    assert [d["name"] for d in start["inputs"]] == [str(cohort)]
    [source] = complete["inputs"]
    assert (source["namespace"], source["name"]) == ("file", str(cohort))
    assert source["inputFacets"]["inputStatistics"]["rowCount"] == 4_000
    [snapshot] = complete["outputs"]
    assert snapshot["name"] == str(snapshots_dir(MODEL) / f"{ingested.data_version}.parquet")
    assert snapshot["facets"]["version"]["datasetVersion"] == ingested.data_version
    assert snapshot["facets"]["mlsteward"]["sha256"] == ingested.data_version
    assert snapshot["outputFacets"]["outputStatistics"]["rowCount"] == ingested.rows
    columns = {f["name"] for f in snapshot["facets"]["schema"]["fields"]}
    assert set(pd.read_parquet(snapshot["name"]).columns) == columns
    assert complete["run"]["facets"]["mlsteward"]["dataVersion"] == ingested.data_version

    # training: that same snapshot in, the registered version out, with the digests
    start, complete = events["train-model"]
    assert start["outputs"] == [] and start["inputs"] == []
    [trained_on] = complete["inputs"]
    assert (trained_on["namespace"], trained_on["name"]) == ("file", snapshot["name"])
    [version] = complete["outputs"]
    assert version["name"] == f"models/{MODEL}/versions/{trained.version}"
    ours = version["facets"]["mlsteward"]
    assert ours["sha256"] == trained.artifact_sha256 and ours["mlflowRunId"] == trained.run_id
    assert version["facets"]["datasetType"]["datasetType"] == "MODEL"
    run = complete["run"]["facets"]["mlsteward"]
    assert run["modelVersion"] == trained.version and run["decision"] == "promoted"
    assert run["dataVersion"] == ingested.data_version
    assert run["modelArtifactSha256"] == trained.artifact_sha256

    # scoring: the file and that version in; the scored file and the prediction log out
    _, complete = events["score-model"]
    inputs = by_name(complete["inputs"])
    assert set(inputs) == {str(loop["batch"]), version["name"]}
    assert inputs[version["name"]]["namespace"] == version["namespace"]
    outputs = by_name(complete["outputs"])
    log = outputs[str(predictions_dir(MODEL))]
    assert log["facets"]["mlsteward"]["file"] == scored.prediction_log_path
    assert outputs[scored.scored_path]["outputFacets"]["outputStatistics"]["rowCount"] == 400
    assert {"prediction", "prediction_proba"} <= {
        f["name"] for f in outputs[scored.scored_path]["facets"]["schema"]["fields"]
    }

    # drift: the champion's holdout and the prediction log that scoring wrote, in
    _, complete = events["drift-model"]
    inputs = by_name(complete["inputs"])
    holdout = f"runs/{trained.run_id}/artifacts/holdout/test_predictions.parquet"
    assert set(inputs) == {holdout, log["name"]}
    assert inputs[holdout]["facets"]["mlsteward"]["modelVersion"] == trained.version
    assert inputs[log["name"]]["facets"]["mlsteward"]["windowDays"] == 1.0
    assert inputs[log["name"]]["inputFacets"]["inputStatistics"]["rowCount"] == 400
    assert complete["run"]["facets"]["mlsteward"]["modelVersion"] == trained.version


def test_a_source_that_breaks_the_contract_ends_in_fail_with_the_error(
    mlsteward_home: Path, cohort: Path
) -> None:
    broken = mlsteward_home.parent / "no_label.csv"
    pd.read_parquet(cohort).drop(columns=["heart_disease"]).head(50).to_csv(broken, index=False)
    state = ingestion_flow(model=MODEL, source=str(broken), return_state=True)
    assert state.is_failed()
    events = events_of(mlsteward_home, run_of(state))
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    fail = events[1]
    used = validate_run_event(fail)
    assert any(url.endswith("ErrorMessageRunFacet") for url in used)
    error = fail["run"]["facets"]["errorMessage"]
    assert (
        error["message"].startswith("ContractViolation: ") and "heart_disease" in error["message"]
    )
    assert error["programmingLanguage"] == "PYTHON" and "Traceback" in error["stackTrace"]
    # the file that was refused is the run's input; nothing came out
    assert [d["name"] for d in fail["inputs"]] == [str(broken)] and fail["outputs"] == []


@pytest.fixture
def lineage_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with collecting_server() as server:
        yield server


def test_http_sends_the_events_with_the_key_to_the_endpoint(
    mlsteward_home: Path,
    cohort: Path,
    lineage_server: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = lineage_server
    monkeypatch.setenv("MLSTEWARD_LINEAGE_URL", url)
    monkeypatch.setenv("MLSTEWARD_LINEAGE_ENDPOINT", "openapi/openlineage/api/v1/lineage")
    monkeypatch.setenv("MLSTEWARD_LINEAGE_API_KEY", KEY)
    before = len(read_events(events_file(mlsteward_home)))
    state = ingestion_flow(model=MODEL, source=str(cohort), return_state=True)
    assert state.is_completed()
    assert [r["event"]["eventType"] for r in received] == ["START", "COMPLETE"]
    for request in received:
        assert request["path"] == "/openapi/openlineage/api/v1/lineage"
        assert request["headers"]["Authorization"] == f"Bearer {KEY}"
        assert request["event"]["run"]["runId"] == run_of(state)
        validate_run_event(request["event"])
        assert KEY not in json.dumps(request["event"])
    assert len(read_events(events_file(mlsteward_home))) == before  # sent, not written
    assert KEY not in "\n".join(run_logs(run_of(state)))


def run_logs(run_id: str) -> list[str]:
    APILogWorker.drain_all(timeout=5)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_costs_one_warning_not_the_run(
    mlsteward_home: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_LINEAGE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLSTEWARD_LINEAGE_API_KEY", KEY)
    state = ingestion_flow(model=MODEL, source=str(cohort), return_state=True)
    assert state.is_completed(), state
    assert state.result().rows > 0
    warnings = [m for m in run_logs(run_of(state)) if "OpenLineage events cannot be sent" in m]
    assert len(warnings) == 1, warnings  # START and COMPLETE failed: said once
    assert "ConnectionError" in warnings[0] and KEY not in warnings[0]


def test_transport_none_writes_nothing(
    mlsteward_home: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = mlsteward_home.parent / "empty.csv"
    broken.write_text("")
    target = mlsteward_home.parent / "lineage-elsewhere.jsonl"
    monkeypatch.setenv("MLSTEWARD_LINEAGE_FILE", str(target))
    monkeypatch.setenv("MLSTEWARD_LINEAGE_TRANSPORT", "none")
    ingestion_flow(model=MODEL, source=str(broken), return_state=True)
    assert not target.exists()
    # the same run on the file transport writes its START and FAIL there
    monkeypatch.setenv("MLSTEWARD_LINEAGE_TRANSPORT", "file")
    ingestion_flow(model=MODEL, source=str(broken), return_state=True)
    assert [e["eventType"] for e in read_events(target)] == ["START", "FAIL"]


@flow(name="lineage-parent")
def parent_flow(model: str, source: str) -> str:
    """A run that starts ingestion as its subflow, as drift starts training."""
    return ingestion_flow(model=model, source=source).data_version


def test_a_subflow_names_its_parent_and_root_run(mlsteward_home: Path, cohort: Path) -> None:
    state = parent_flow(model=MODEL, source=str(cohort), return_state=True)
    assert state.is_completed()
    children = [
        e
        for e in read_events(events_file(mlsteward_home))
        if (e["run"]["facets"].get("parent") or {}).get("run", {}).get("runId") == run_of(state)
    ]
    assert [e["eventType"] for e in children] == ["START", "COMPLETE"]
    for event in children:
        validate_run_event(event)
        parent = event["run"]["facets"]["parent"]
        assert parent["job"] == {"namespace": "mlsteward", "name": f"lineage-parent.{MODEL}"}
        assert parent["root"]["run"]["runId"] == run_of(state)
        assert event["job"]["name"] == f"ingest-data.{MODEL}"


def test_a_crashed_or_cancelled_run_is_aborted_with_the_reason(
    mlsteward_home: Path, cohort: Path
) -> None:
    """Prefect calls the same hook on a crash (a killed process, an interrupt) and on a
    cancel: here with a real run's record and the state Prefect would pass."""
    state = ingestion_flow(model=MODEL, source=str(cohort), return_state=True)
    with get_client(sync_client=True) as client:
        record = client.read_flow_run(UUID(run_of(state)))
    hooks = lineage_hooks("ingestion")
    assert hooks["on_crashed"] == hooks["on_cancellation"]
    [abort] = hooks["on_crashed"]
    abort(ingestion_flow, record, Crashed(message="Execution was aborted by an interrupt signal."))
    events = events_of(mlsteward_home, run_of(state))
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "ABORT"]
    validate_run_event(events[-1])
    error = events[-1]["run"]["facets"]["errorMessage"]
    assert error["message"] == "CrashedRun: Execution was aborted by an interrupt signal."
    assert "stackTrace" not in error

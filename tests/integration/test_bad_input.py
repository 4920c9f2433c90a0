"""Broken input of every kind: a clear error naming the problem, nothing registered, the feature
store unchanged. Driven through the CLI, as a user or CI would meet it: in-process for the
details, and as the real ``python -m mlsteward.cli`` for what a person sees (one message, no
traceback)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect import flow, task
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from mlsteward.cli.app import app
from mlsteward.config.settings import feast_dir, home, mlflow_tracking_uri, snapshots_dir
from mlsteward.errors import PromotionError, quiet_refusals
from tests.conftest import REPO_ROOT

MODEL = "heart_disease"
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def store_fingerprint() -> dict[str, str]:
    """Hashes of everything that makes up the feature store and the current data version."""
    files = [
        *sorted(feast_dir().glob("*")),
        *sorted(snapshots_dir(MODEL).glob("*")),
        *sorted((home() / "state").glob("*")),
    ]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def registered_versions() -> int:
    uri = mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return len(client.search_model_versions(f"name = '{MODEL}'"))


def rows_broken(fraction: float, column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        idx = df.sample(frac=fraction, random_state=0).index
        df[column] = df[column].astype(object)
        df.loc[idx, column] = value

    return mutate


CASES: dict[str, tuple[Callable[[pd.DataFrame], None] | None, str]] = {
    "missing_column": (
        lambda df: df.drop(columns="cholesterol", inplace=True),
        "missing required column(s) ['cholesterol']",
    ),
    "wrong_dtype": (rows_broken(1.0, "resting_bp", "high"), "rule dtype on column 'resting_bp'"),
    "nan_label": (
        rows_broken(0.1, "heart_disease", None),
        "rule label_value on column 'heart_disease'",
    ),
    "out_of_range": (rows_broken(0.1, "age", 250), "rule range on column 'age'"),
    "unknown_category": (rows_broken(0.1, "sex", "X"), "rule allowed_category on column 'sex'"),
    "future_timestamp": (
        rows_broken(0.1, "event_timestamp", "2100-01-01T00:00:00+00:00"),
        "rule no_future_timestamp on column 'event_timestamp'",
    ),
}


@pytest.fixture
def baseline(small_cohort_path: Path) -> pd.DataFrame:
    """A healthy feature store first, so 'unchanged' has something to compare against."""
    code, out = cli("ingest", MODEL, "--source", str(small_cohort_path))
    assert code == 0, out
    return pd.read_parquet(small_cohort_path)


def assert_rejected(code: int, out: dict, expected: str, before: dict[str, str]) -> None:
    assert code == 1
    assert out["ok"] is False
    assert expected in out["error"], out["error"]
    assert store_fingerprint() == before, "the feature store or current snapshot changed"
    assert registered_versions() == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_rows_are_rejected_with_the_rule_and_column(
    case: str, baseline: pd.DataFrame, tmp_path: Path
) -> None:
    mutate, expected = CASES[case]
    df = baseline.copy()
    mutate(df)
    path = tmp_path / f"{case}.csv"
    df.to_csv(path, index=False)
    before = store_fingerprint()
    code, out = cli("ingest", MODEL, "--source", str(path))
    assert_rejected(code, out, expected, before)
    # the refusal is in the audit trail, after the baseline's acceptance
    code, log = cli("audit", "log", "--model", MODEL)
    assert [r["action"] for r in log["records"]] == ["ingestion_accepted", "ingestion_rejected"]
    assert expected in log["records"][-1]["reason"]
    if case != "missing_column":  # row-level failures leave the rejected rows in quarantine
        assert "rejected rows are in" in out["error"]


def test_duplicate_keys_are_rejected(baseline: pd.DataFrame, tmp_path: Path) -> None:
    df = pd.concat([baseline, baseline.sample(frac=0.1, random_state=0)])
    path = tmp_path / "dupes.parquet"
    df.to_parquet(path)
    before = store_fingerprint()
    code, out = cli("ingest", MODEL, "--source", str(path))
    assert_rejected(
        code, out, "rule unique_entity_timestamp on column 'patient_id+event_timestamp'", before
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "source file is empty (0 bytes)"),
        (b'patient_id,age\n1,"unclosed\n', "cannot parse as csv"),
        (b"patient_id,event_timestamp,age\n", "no data rows"),
    ],
    ids=["empty_file", "unparsable_csv", "header_only"],
)
def test_unreadable_files_are_rejected(
    baseline: pd.DataFrame, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    before = store_fingerprint()
    code, out = cli("ingest", MODEL, "--source", str(path))
    assert_rejected(code, out, expected, before)


def broken_config(tmp_path: Path) -> Path:
    """A config directory whose only model file is not valid YAML (at line 5)."""
    conf = tmp_path / "config" / "models"
    conf.mkdir(parents=True)
    (conf / f"{MODEL}.yaml").write_text(
        f"name: {MODEL}\ntask: binary_classification\nlabel: heart_disease\nfeatures: [age\n"
    )
    return tmp_path / "config"


def test_invalid_config_yaml_is_rejected_naming_the_file(
    baseline: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = broken_config(tmp_path) / "models"
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(conf.parent))
    before = store_fingerprint()
    for command in (["ingest", MODEL], ["train", MODEL, "--max-evals", "1"]):
        code, out = cli(*command)
        assert_rejected(code, out, f"{conf / MODEL}.yaml: not valid YAML at line", before)


def test_training_without_ingested_data_is_refused() -> None:
    code, out = cli("train", MODEL, "--max-evals", "1")
    assert code == 1 and "has no ingested data yet" in out["error"]
    assert registered_versions() == 0


# -- what a person sees: the real command line ----------------------------------------------


def real_cli(*args: str, **env: str) -> tuple[int, str]:
    """``python -m mlsteward.cli ARGS`` in a fresh process on the session's Prefect server;
    the exit code and everything it printed (stdout and stderr)."""
    environ = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **env}
    for offline in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        environ.pop(offline, None)  # the CLI sets its own offline defaults
    done = subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO_ROOT,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def assert_one_message(code: int, output: str, message: str, detail: str | None = None) -> None:
    """Exit 1; the message once as the command's error, no traceback, no telemetry noise."""
    assert code == 1, output
    assert f"error: {message}" in output, output
    assert output.count("error: ") == 1, output
    assert "Traceback" not in output, output
    assert "telemetry" not in output.lower(), output
    if detail is not None:  # the rest of a multi-line message, printed once
        assert output.count(detail) == 1, output


def test_a_contract_violation_prints_one_message(small_cohort_path: Path, tmp_path: Path) -> None:
    df = pd.read_parquet(small_cohort_path)
    df.loc[df.index[: len(df) // 3], "age"] = 250
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    code, output = real_cli("ingest", MODEL, "--source", str(path))
    assert_one_message(
        code, output, f"data contract failed for model '{MODEL}'", "rule range on column 'age'"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nope", "--max-evals", "1"], "unknown model 'nope'"),
        (["status", "nope"], "unknown model 'nope'"),
        (["score", MODEL], f"{MODEL} has no champion yet"),
    ],
    ids=["unknown_model_in_a_flow", "unknown_model_read_only", "no_champion"],
)
def test_refusals_print_one_message(args: list[str], message: str) -> None:
    assert_one_message(*real_cli(*args), message)


def test_a_broken_config_prints_one_message_naming_file_and_line(tmp_path: Path) -> None:
    config = broken_config(tmp_path)
    code, output = real_cli("ingest", MODEL, MLSTEWARD_CONFIG_DIR=str(config))
    assert_one_message(code, output, f"{config / 'models' / MODEL}.yaml: not valid YAML at line 5")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def run_logs() -> Iterator[list[logging.LogRecord]]:
    """What Prefect's flow and task run loggers pass on (after their filters)."""
    quiet_refusals()
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.records
    for lg in loggers:
        lg.removeHandler(handler)


@task
def failing_step(refusal: bool) -> None:
    if refusal:
        raise PromotionError("v3 failed validation: refusing to promote it")
    raise ValueError("a bug")


@flow
def failing_flow(refusal: bool) -> None:
    failing_step(refusal)


def test_a_refusal_ends_its_runs_in_one_line_while_a_bug_keeps_its_traceback(
    run_logs: list[logging.LogRecord],
) -> None:
    with pytest.raises(PromotionError):
        failing_flow(refusal=True)
    assert not [r for r in run_logs if r.exc_info], "a refusal was logged with its traceback"
    ends = [r.getMessage() for r in run_logs if r.getMessage().startswith("Finished in state")]
    assert ends == ["Finished in state Failed: v3 failed validation: refusing to promote it"] * 2

    run_logs.clear()
    with pytest.raises(ValueError, match="a bug"):
        failing_flow(refusal=False)
    traced = [r for r in run_logs if r.exc_info and isinstance(r.exc_info[1], ValueError)]
    assert len(traced) == 2, "a bug's traceback must stay in the task's and the flow's logs"

"""Broken input of every kind: a clear error naming the problem, nothing registered, the feature
store unchanged. Driven through the CLI, as a user or CI would meet it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mlsteward.cli.app import app
from mlsteward.config.settings import feast_dir, home, mlflow_tracking_uri, snapshots_dir

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


def test_invalid_config_yaml_is_rejected_naming_the_file(
    baseline: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "config" / "models"
    conf.mkdir(parents=True)
    (conf / f"{MODEL}.yaml").write_text(
        f"name: {MODEL}\ntask: binary_classification\nlabel: heart_disease\nfeatures: [age\n"
    )
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))
    before = store_fingerprint()
    for command in (["ingest", MODEL], ["train", MODEL, "--max-evals", "1"]):
        code, out = cli(*command)
        assert_rejected(code, out, f"{conf / MODEL}.yaml: not valid YAML at line", before)


def test_training_without_ingested_data_is_refused() -> None:
    code, out = cli("train", MODEL, "--max-evals", "1")
    assert code == 1 and "has no ingested data yet" in out["error"]
    assert registered_versions() == 0

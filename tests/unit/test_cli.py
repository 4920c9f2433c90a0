"""CLI commands that need no Prefect run: JSON output and exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlsteward.cli import app

runner = CliRunner()


def test_models_lists_configs_as_json() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    names = [m["name"] for m in json.loads(result.stdout)["models"]]
    assert "heart_disease" in names


def test_where_points_into_mlsteward_home(mlsteward_home) -> None:
    result = runner.invoke(app, ["where", "--json"])
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["home"] == str(mlsteward_home)
    assert out["mlflow_tracking_uri"].startswith(f"sqlite:///{mlsteward_home}")


def test_generate_writes_the_cohort(tmp_path) -> None:
    target = tmp_path / "hd.csv"
    result = runner.invoke(
        app, ["generate", "heart_disease", "--rows", "300", "--out", str(target), "--json"]
    )
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["rows"] == 300 and target.exists()


def test_unknown_model_fails_with_json_error() -> None:
    result = runner.invoke(app, ["generate", "nope", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["ok"] is False


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ingest", "train", "materialize", "models", "generate", "where"):
        assert command in result.stdout


def test_unexpected_failures_still_give_json_and_exit_1(tmp_path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("x")  # a file where a directory must be created
    result = runner.invoke(
        app,
        [
            "generate",
            "heart_disease",
            "--rows",
            "10",
            "--out",
            str(blocked / "sub" / "hd.parquet"),
            "--json",
        ],
    )
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False and "Error" in out["error"]

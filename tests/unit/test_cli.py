"""CLI commands that need no Prefect run: JSON output and exit codes."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from mlsteward.cli.app import app

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
    assert out["local_platform"].startswith("not running; make up starts")
    assert "/hooks/ci" in out["local_platform"]
    assert "/api/v1" in out["local_platform"]


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


def _source_in(tmp_path, monkeypatch):
    """The demo config with its source path inside tmp_path (relative paths resolve there)."""
    from tests.conftest import REPO_ROOT

    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(REPO_ROOT / "config"))
    monkeypatch.setenv("MLSTEWARD_PROJECT_ROOT", str(tmp_path))
    return tmp_path / "data" / "heart_disease.parquet"


def test_generate_a_shifted_batch_and_append_it_to_the_source(tmp_path, monkeypatch) -> None:
    import pandas as pd

    source = _source_in(tmp_path, monkeypatch)
    assert runner.invoke(app, ["generate", "--rows", "400", "--json"]).exit_code == 0
    batch = tmp_path / "aug.parquet"
    args = ["generate", "--rows", "300", "--seed", "5", "--start", "2025-08-01", "--days", "10"]
    args += ["--shift", "bmi=2", "--out", str(batch), "--append-to-source", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["shift"]["covariate"] == {"bmi": 2.0}
    assert out["appended_to"] == str(source)
    assert out["time_range"][0].startswith("2025-08-01")
    assert out["time_range"][1] < "2025-08-11"

    cohort, shifted = pd.read_parquet(source), pd.read_parquet(batch)
    assert len(cohort) == 700 and len(shifted) == 300
    assert cohort.tail(300).reset_index(drop=True).equals(shifted)
    # the shift moved BMI well up (by two SDs before clipping into the config range)
    head = cohort.head(400)
    assert shifted["bmi"].mean() - head["bmi"].mean() > 1.0 * head["bmi"].std()


def test_generate_refuses_a_bad_shift_and_appending_a_cohort(tmp_path, monkeypatch) -> None:
    source = _source_in(tmp_path, monkeypatch)
    bad = runner.invoke(app, ["generate", "--start", "2025-08-01", "--shift", "bmi", "--json"])
    assert bad.exit_code == 1 and "COLUMN=SDS" in json.loads(bad.stdout)["error"]
    unknown = runner.invoke(app, ["generate", "--start", "2025-08-01", "--shift", "sex=1"])
    assert unknown.exit_code == 1 and "'sex' is not a numeric feature" in unknown.stderr
    cohort = runner.invoke(app, ["generate", "--append-to-source", "--json"])
    assert cohort.exit_code == 1 and "--start" in json.loads(cohort.stdout)["error"]
    assert not source.exists()


def test_drift_output_says_what_moved_what_was_decided_and_what_followed() -> None:
    from mlsteward.cli.monitoring import drift_human

    run = {
        "drifted_columns": ["bmi", "cholesterol"],
        "dataset_drift_share": 2 / 14,
        "decision": {"retrain": True, "reasons": ["key feature(s) drifted: bmi, cholesterol"]},
        "notes": [],
        "performance": {
            "reference": {"roc_auc": 0.8826, "pr_auc": 0.84, "brier": 0.14},
            "current": {"roc_auc": 0.8712, "pr_auc": None, "brier": 0.15, "rows": 334.0},
        },
        "retrain": {
            "triggered": True,
            "mode": "subflow",
            "reason": "no retrain running and outside the cooldown window",
            "training": {
                "model": "heart_disease",
                "version": "2",
                "decision": "rejected",
                "reasons": ["roc_auc 0.8825 vs champion v1 0.8826: no improvement"],
            },
        },
        "report_path": "/tmp/r.html",
    }
    text = drift_human(run)
    assert "drifted columns: bmi, cholesterol (share 0.14)" in text
    assert "decision: RETRAIN" in text and "key feature(s) drifted" in text
    assert "quality on 334 labelled rows: roc_auc 0.8826 -> 0.8712, pr_auc 0.8400 -> n/a" in text
    assert "retrain: triggered (subflow)" in text
    assert "retraining run: heart_disease v2: REJECTED" in text and "no improvement" in text

    quiet = {**run, "drifted_columns": [], "performance": None, "retrain": None}
    quiet["decision"] = {"retrain": False, "reasons": []}
    quiet["notes"] = ["12 labelled rows < min_labelled_rows (200)"]
    text = drift_human(quiet)
    assert "drifted columns: none" in text and "decision: no retrain" in text
    assert "note: 12 labelled rows" in text and "retrain:" not in text


def test_trigger_reports_an_unreachable_gateway_and_bad_parameters(monkeypatch) -> None:
    monkeypatch.setenv("MLSTEWARD_WEBHOOK_SECRET", "s3cret")
    args = ["trigger", "train", "heart_disease", "--url", "http://127.0.0.1:9", "--json"]
    down = runner.invoke(app, args)
    assert down.exit_code == 1
    assert (
        "cannot reach the webhook gateway at http://127.0.0.1:9/hooks/ci"
        in (json.loads(down.stdout)["error"])
    )
    bad = runner.invoke(app, [*args, "-p", "max_evals"])
    assert bad.exit_code == 1 and "max_evals" in json.loads(bad.stdout)["error"]


def test_offline_defaults_are_set_by_the_cli_and_the_users_own_win(monkeypatch) -> None:
    import os

    from mlsteward.cli.runtime import OFFLINE_DEFAULTS

    for key in OFFLINE_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the user's choice
    assert runner.invoke(app, ["where", "--json"]).exit_code == 0
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert os.environ["DO_NOT_TRACK"] == "1"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["FEAST_USAGE"] == "False"


def test_no_platform_or_a_chosen_server_leaves_the_prefect_api_alone(tmp_path, monkeypatch):
    import os

    from mlsteward.cli.runtime import use_local_platform

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    assert use_local_platform() is None  # nothing runs for this home
    assert "PREFECT_API_URL" not in os.environ

    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://10.0.0.9:4200/api"\n'
    )
    assert use_local_platform() is None  # the user's Prefect profile names a server
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert use_local_platform() is None
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"


READ_ONLY = [["status", "heart_disease"], ["audit", "log"], ["audit", "verify"], ["where"]]
READ_ONLY += [["models"], ["profile", "show"], ["report", "heart_disease"]]


def test_read_only_commands_start_no_prefect_server_and_load_no_heavy_stack() -> None:
    """In a fresh process, as a person runs them: Prefect, Feast, XGBoost and Evidently are
    never imported (so no temporary Prefect server either)."""
    import subprocess
    import sys

    script = f"""
import json, sys
from mlsteward.cli.app import app
codes = []
for args in {READ_ONLY!r}:
    try:
        app([*args, "--json"])
    except SystemExit as exc:
        codes.append(exc.code)
heavy = ("prefect", "feast", "xgboost", "evidently", "shap", "sklearn")
print(json.dumps({{"codes": codes, "loaded": [m for m in heavy if m in sys.modules]}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], result
    assert result["codes"] == [0] * len(READ_ONLY), done.stdout + done.stderr
    assert "temporary server" not in done.stderr


def test_a_typed_flow_result_prints_as_the_document_it_dumps_to() -> None:
    """Flows return pydantic results; --json shows their model_dump and the human summary and
    the exit-code checks read the same document."""
    import typer
    from pydantic import BaseModel

    from mlsteward.cli.output import JsonOpt, run

    class Outcome(BaseModel):
        model: str
        decision: str

    demo = typer.Typer()

    @demo.command()
    def decide(as_json: bool = JsonOpt) -> None:
        document = run(as_json, lambda: Outcome(model="m", decision="rejected"), str)
        if document["decision"] == "rejected":
            raise typer.Exit(1)

    machine = runner.invoke(demo, ["--json"])
    assert machine.exit_code == 1
    assert json.loads(machine.stdout) == {"model": "m", "decision": "rejected"}
    person = runner.invoke(demo, [])
    assert person.stdout.strip() == str({"model": "m", "decision": "rejected"})


def test_a_path_as_model_name_is_a_usage_error_before_anything_runs(mlsteward_home) -> None:
    for args in (["train", "../../elsewhere/heart_disease"], ["status", "Heart"],
                 ["report", "../x"], ["ingest", "a/b"]):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        said = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # the box Typer draws
        assert f"{args[1]!r} is not a model name: it must be lower_snake_case" in said, said
        assert "Traceback" not in result.output
    assert not mlsteward_home.exists() or not any(mlsteward_home.rglob("*.json"))

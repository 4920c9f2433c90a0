"""``mlsteward generate`` for every built-in model: files written, the label summarised as its
task has it, and each option that does not fit a model refused by name."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlsteward.cli.app import app
from mlsteward.data.builtin import builtin

runner = CliRunner()


@pytest.mark.parametrize("model", ["heart_disease", "diabetes", "readmission"])
def test_generate_writes_each_builtin_dataset(tmp_path, model: str) -> None:
    target = tmp_path / f"{model}.parquet"
    args = ["generate", model, "--rows", "400", "--seed", "3", "--out", str(target), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    written = pd.read_parquet(target)
    pd.testing.assert_frame_equal(written, builtin(model).generate_cohort(400, seed=3))
    assert out["rows"] == 400 and out["path"] == str(target)
    label = builtin(model).label
    if model == "readmission":
        assert "positive_rate" not in out
        assert out["outcome"]["mean"] == pytest.approx(written[label].mean(), abs=1e-3)
        assert out["outcome"]["median"] == written[label].median()
    else:
        assert out["positive_rate"] == pytest.approx(written[label].mean(), abs=1e-4)


def test_human_output_says_the_rate_or_the_mean_stay(tmp_path) -> None:
    stays = runner.invoke(
        app, ["generate", "readmission", "--rows", "300", "--out", str(tmp_path / "r.csv")]
    )
    assert stays.exit_code == 0, stays.stdout
    assert "length_of_stay_days mean " in stays.stdout and "median " in stays.stdout
    onset = runner.invoke(
        app, ["generate", "diabetes", "--rows", "300", "--out", str(tmp_path / "d.csv")]
    )
    assert onset.exit_code == 0 and "positive rate " in onset.stdout


def test_a_shifted_readmission_batch(tmp_path) -> None:
    target = tmp_path / "batch.parquet"
    args = ["generate", "readmission", "--rows", "500", "--seed", "5", "--start", "2025-08-01"]
    args += ["--days", "10", "--shift", "comorbidity_index=1", "--outcome-scale", "1.5"]
    args += ["--concept", "0.5", "--out", str(target), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["shift"] == {
        "covariate": {"comorbidity_index": 1.0},
        "prevalence": None,
        "outcome_scale": 1.5,
        "concept": 0.5,
    }
    assert out["time_range"][0].startswith("2025-08-01") and out["time_range"][1] < "2025-08-11"
    batch = pd.read_parquet(target)
    assert batch["patient_id"].min() > 1_000_000_000
    plain = builtin("readmission").generate_batch(500, 5, start="2025-08-01", days=10)
    assert batch["comorbidity_index"].mean() > plain["comorbidity_index"].mean()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "readmission", "--prevalence", "0.3"], "use --outcome-scale"),
        (["generate", "diabetes", "--outcome-scale", "1.2"], "use --prevalence"),
        (["generate", "readmission", "--outcome-scale", "5"], "between 0.5 and 2"),
        (["generate", "diabetes", "--shift", "ethnicity=1"], "'ethnicity' is not a numeric"),
        (["generate", "churn"], "the built-in ones are heart_disease, diabetes, readmission"),
    ],
)
def test_options_that_do_not_fit_the_model_are_refused_by_name(
    tmp_path, args: list[str], message: str
) -> None:
    target = tmp_path / "never.parquet"
    result = runner.invoke(app, [*args, "--out", str(target), "--json"])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False and message in out["error"]
    assert not target.exists()

"""Bad input for a regression model, through ``mlsteward ingest``: the contract's refusal in
one message naming the column and rule, exit 1, nothing ingested; in-process for the details and
as the real command for what a person sees (no traceback)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mlsteward.cli.app import app
from mlsteward.config.settings import quarantine_dir
from mlsteward.data.state import current_snapshot
from tests.integration.test_bad_input import assert_one_message, real_cli
from tests.support.attribute_cohort import cohort, config_doc

MODEL = "members"
runner = CliRunner()


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A count model (``count:poisson``) and a Tweedie one, both on ``claims``."""
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    source = tmp_path / "members.csv"
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(config_doc("regression", source)))
    tweedie = config_doc("regression", source, name="members_cost")
    tweedie["tuning"]["objective"] = "reg:tweedie"
    (models / "members_cost.yaml").write_text(yaml.safe_dump(tweedie))
    monkeypatch.setenv("MLSTEWARD_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def ingest(path: Path, model: str = MODEL, human: bool = False) -> tuple[int, str, dict]:
    args = ["ingest", model, "--source", str(path), *([] if human else ["--json"])]
    result = runner.invoke(app, args)
    doc = json.loads(result.stdout) if not human and result.stdout.strip() else {}
    return result.exit_code, result.output, doc


def with_labels(
    values: Callable[[pd.Series], pd.Series], share: float = 0.2
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        rows = df.sample(frac=share, random_state=0).index
        out = df.copy()
        out["claims"] = out["claims"].astype(object)
        out.loc[rows, "claims"] = values(out.loc[rows, "claims"])
        return out

    return mutate


CASES: dict[str, tuple[str, Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "text_label": (
        MODEL,
        with_labels(lambda s: "unknown"),
        "rule label_numeric on column 'claims'",
    ),
    "missing_label": (MODEL, with_labels(lambda s: None), "rule label_numeric on column 'claims'"),
    "fractional_count": (
        MODEL,
        with_labels(lambda s: s.astype(float) + 0.5),
        "rule label_count on column 'claims'",
    ),
    "negative_count": (
        MODEL,
        with_labels(lambda s: -1 - s.astype(int)),
        "rule label_count on column 'claims'",
    ),
    "negative_tweedie": (
        "members_cost",
        with_labels(lambda s: -0.5 - s.astype(float)),
        "rule label_nonnegative on column 'claims'",
    ),
    "constant_label": (
        MODEL,
        lambda df: df.assign(claims=3),
        "label column 'claims' has the same value (3) in every accepted row",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_regression_label_is_refused_naming_column_and_rule(
    case: str, config_dir: Path, tmp_path: Path
) -> None:
    model, mutate, expected = CASES[case]
    path = tmp_path / f"{case}.csv"
    mutate(cohort("regression", n=600)).to_csv(path, index=False)

    code, _, doc = ingest(path, model)
    assert code == 1 and doc["ok"] is False
    assert expected in doc["error"], doc["error"]
    assert current_snapshot(model) is None  # nothing ingested, nothing to train on
    code, output, _ = ingest(path, model, human=True)
    assert code == 1 and expected in output and "Traceback" not in output
    audit = runner.invoke(app, ["audit", "log", "--model", model, "--json"])
    records = json.loads(audit.stdout)["records"]
    assert [r["action"] for r in records] == ["ingestion_rejected"] * 2
    assert expected in records[-1]["reason"]


def test_a_few_bad_labels_are_quarantined_and_the_rest_ingested_as_float64(
    config_dir: Path, tmp_path: Path
) -> None:
    df = cohort("regression", n=600)
    df["claims"] = df["claims"].astype(object)
    df.loc[[4, 9], "claims"] = ["lots", 1.5]
    path = tmp_path / "few.csv"
    df.to_csv(path, index=False)
    code, _, doc = ingest(path)
    assert code == 0, doc
    assert doc["rows"] == 598
    assert {(v["rule"], v["rows"]) for v in doc["contract"]["violations"]} == {
        ("label_numeric", 1),
        ("label_count", 1),
    }
    quarantined = pd.read_csv(next(quarantine_dir(MODEL).iterdir()))
    assert quarantined["_violations"].tolist() == ["label_numeric:claims", "label_count:claims"]
    snapshot = pd.read_parquet(doc["snapshot_path"])
    assert snapshot["claims"].dtype == "float64"
    assert np.array_equal(snapshot["claims"], np.round(snapshot["claims"]))


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("constant_label", "label column 'claims' has the same value (3) in every accepted row"),
        ("text_label", "rule label_numeric on column 'claims'"),
    ],
)
def test_the_command_prints_one_message_for_a_refused_regression_source(
    case: str, detail: str, config_dir: Path, tmp_path: Path
) -> None:
    model, mutate, _ = CASES[case]
    path = tmp_path / f"{case}.csv"
    mutate(cohort("regression", n=600)).to_csv(path, index=False)
    code, output = real_cli(
        "ingest", model, "--source", str(path), MLSTEWARD_CONFIG_DIR=str(config_dir)
    )
    assert_one_message(code, output, f"data contract failed for model '{model}'", detail)

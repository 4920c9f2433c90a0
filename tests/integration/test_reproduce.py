"""`mlsteward reproduce` on the real stack: a version is rebuilt byte for byte from its recipe.

One version is trained for the whole module (training is the slow part); after it, the source
grows and is re-ingested, so the live feature store reads another snapshot than the one the
version was trained on -- reproduction must go back to the recorded one. Tests that damage
state restore it before they end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.ingestion import ingestion_flow
from flows.reproduce import reproduce_flow
from flows.results import TrainingResult
from flows.training import training_flow
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.settings import mlflow_tracking_uri
from mlsteward.data.state import SnapshotInfo, current_snapshot
from mlsteward.data.synthetic import generate_cohort, write_dataset
from mlsteward.training.recipe import recorded_config
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL, write_config

IDENTICAL_STEPS = [
    "recipe",
    "data_digest",
    "feature_service",
    "training_set",
    "split",
    "params",
    "metrics",
    "artifact",
    "stored_artifact",
]


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    return {"tuning": {"max_evals": 4, "num_boost_round": 120}}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained version is shared."""
    return module_home


class Trained(TrainingResult):
    """The trained version, with the snapshot it was trained on (the live one moves on)."""

    snapshot: SnapshotInfo


@pytest.fixture(scope="module")
def trained(mlsteward_home: Path) -> Trained:
    work = mlsteward_home.parent
    first = write_dataset(generate_cohort(n_rows=3_000, seed=11), work / "cohort.parquet")
    ingestion_flow(model=MODEL, source=str(first))
    outcome = training_flow(model=MODEL)
    trained_on = current_snapshot(MODEL)
    # The source grows afterwards: the live store now reads a newer snapshot.
    grown = pd.concat(
        [pd.read_parquet(first), generate_cohort(n_rows=500, seed=12, id_offset=10_000_000)]
    )
    ingestion_flow(model=MODEL, source=str(write_dataset(grown, work / "grown.parquet")))
    assert current_snapshot(MODEL).digest != trained_on.digest
    return Trained(**dict(outcome), snapshot=trained_on)


def client() -> MlflowClient:
    uri = mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def audit_records(action: Action) -> list:
    store = audit_store()
    try:
        return store.query(model=MODEL, action=action)
    finally:
        store.close()


def version_count() -> int:
    return len(client().search_model_versions(f"name = '{MODEL}'"))


def test_default_rebuild_is_identical_and_recorded(trained: Trained) -> None:
    report = reproduce_flow(model=MODEL, version=trained.version)

    assert report.result == "identical", report
    assert [s.name for s in report.steps] == IDENTICAL_STEPS
    assert all(s.status == "same" for s in report.steps), report.steps
    assert report.rebuilt_artifact_sha256 == trained.artifact_sha256
    assert report.metric_deltas == {}
    data = next(s for s in report.steps if s.name == "data_digest")
    assert data.recorded == trained.snapshot.digest  # not the current snapshot
    # the rebuilt model and the report stay for inspection
    assert Path(report.report_path).exists()
    assert (Path(report.report_path).parent / "model.ubj").exists()
    # recorded: a tag on the version and an audit record; nothing registered
    tags = client().get_model_version(MODEL, trained.version).tags
    assert tags["reproduce_result"] == "identical" and tags["reproduce_mode"] == "params"
    assert tags["reproduced_at"].startswith("20")
    last = audit_records(Action.REPRODUCED)[-1]
    assert last.version == trained.version and last.details["result"] == "identical"
    assert version_count() == 1


def test_full_search_finds_the_same_params_and_bytes(trained: Trained) -> None:
    report = reproduce_flow(model=MODEL, version=trained.version, full=True)

    assert report.result == "identical", report
    params = next(s for s in report.steps if s.name == "params")
    assert params.status == "same" and "4 trials" in params.detail
    assert params.rebuilt["best_params"] == trained.best_params
    assert report.rebuilt_artifact_sha256 == trained.artifact_sha256
    assert client().get_model_version(MODEL, trained.version).tags["reproduce_mode"] == "full"


def test_config_changed_after_training_is_information_only(
    trained: dict, mlsteward_home: Path
) -> None:
    config_dir = mlsteward_home.parent / "config"
    original = (config_dir / "models" / f"{MODEL}.yaml").read_text()
    changed = {
        "max_evals": 2,
        "seed": 7,
        "num_boost_round": 50,
        "search_space": {"max_depth": {"dist": "choice", "options": [2]}},
    }
    write_config(config_dir, tuning=changed)
    try:
        report = reproduce_flow(model=MODEL, version=trained.version, full=True)
    finally:
        (config_dir / "models" / f"{MODEL}.yaml").write_text(original)

    assert report.result == "identical", report
    keys = {c["key"] for c in report.config_changes}
    assert {"tuning.seed", "tuning.max_evals", "tuning.num_boost_round"} <= keys
    assert "tuning.search_space.max_depth.options" in keys
    seed = next(c for c in report.config_changes if c["key"] == "tuning.seed")
    assert seed["current"] == 7 and seed["recorded"] != 7


def test_altered_snapshot_is_a_data_digest_mismatch(trained: Trained) -> None:
    path = Path(trained.snapshot.path)
    backup = path.with_suffix(".bak")
    shutil.copy2(path, backup)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    try:
        report = reproduce_flow(model=MODEL, version=trained.version)
    finally:
        shutil.copy2(backup, path)
        backup.unlink()

    assert report.result == "diverged" and report.first_divergence == "data_digest"
    step = next(s for s in report.steps if s.name == "data_digest")
    assert "data digest mismatch" in step.detail and str(path) in step.detail
    assert step.rebuilt != step.recorded == trained.snapshot.digest
    status = {s.name: s.status for s in report.steps}
    assert list(status) == IDENTICAL_STEPS  # every step listed, in training order
    not_run = [name for name, st in status.items() if st == "not_run"]
    # nothing was trained on the altered data; the stored artifact is still checked
    assert not_run == ["feature_service", "training_set", "split", "params", "metrics", "artifact"]
    assert status["stored_artifact"] == "same"
    assert report.rebuilt_artifact_sha256 is None
    assert version_count() == 1
    tags = client().get_model_version(MODEL, trained.version).tags
    assert tags["reproduce_result"] == "diverged at data_digest"


def test_missing_snapshot_is_reported_as_missing(trained: Trained) -> None:
    path = Path(trained.snapshot.path)
    hidden = path.with_suffix(".hidden")
    path.rename(hidden)
    try:
        report = reproduce_flow(model=MODEL, version=trained.version)
    finally:
        hidden.rename(path)
    step = next(s for s in report.steps if s.name == "data_digest")
    assert step.status == "differs" and "is missing" in step.detail
    assert report.first_divergence == "data_digest"


def test_another_lock_file_is_reported_and_strict_refuses(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout whose uv.lock differs (here a copy of the project with one line added)."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "feature_repo").symlink_to(REPO_ROOT / "feature_repo")
    lock = (REPO_ROOT / "uv.lock").read_text() + "\n# another resolution\n"
    (root / "uv.lock").write_text(lock)
    monkeypatch.setenv("MLSTEWARD_PROJECT_ROOT", str(root))
    before = client().get_model_version(MODEL, trained.version).tags["reproduced_at"]

    runner = CliRunner()
    refused = runner.invoke(app, ["reproduce", MODEL, trained.version, "--strict", "--json"])
    assert refused.exit_code == 1, refused.stdout
    doc = json.loads(refused.stdout)
    assert doc["result"] == "refused"
    assert {s["status"] for s in doc["steps"]} == {"not_run"}
    lock_diff = next(e for e in doc["environment"] if e["what"] == "uv.lock sha256")
    assert lock_diff["recorded"] == trained.lineage["lock_sha256"]
    assert lock_diff["current"] != lock_diff["recorded"]
    assert audit_records(Action.REPRODUCTION_REFUSED)[-1].details["result"] == "refused"
    assert client().get_model_version(MODEL, trained.version).tags["reproduced_at"] == before

    # without --strict the difference is reported and the rebuild still goes ahead
    allowed = runner.invoke(app, ["reproduce", MODEL, trained.version, "--json"])
    assert allowed.exit_code == 0, allowed.stdout
    doc = json.loads(allowed.stdout)
    assert doc["result"] == "identical"
    assert any(e["what"] == "uv.lock sha256" for e in doc["environment"])


def test_tampered_recipe_is_refused_before_any_rebuild(trained: Trained) -> None:
    run = client().get_run(trained.run_id)
    recipe = Path(run.info.artifact_uri.removeprefix("file://")) / "lineage" / "recipe.json"
    original = recipe.read_text()
    doc = json.loads(original)
    doc["tuning"]["best_params"]["max_depth"] += 1
    recipe.write_text(json.dumps(doc))
    try:
        report = reproduce_flow(model=MODEL, version=trained.version)
    finally:
        recipe.write_text(original)
    assert report.first_divergence == "recipe"
    assert "changed after registration" in report.steps[0].detail
    assert [s.name for s in report.steps if s.status != "not_run"] == ["recipe"]


def test_cli_prints_each_step(trained: Trained) -> None:
    result = CliRunner().invoke(app, ["reproduce", MODEL])  # the champion by default
    assert result.exit_code == 0, result.output
    assert f"{MODEL} v{trained.version} (params): IDENTICAL" in result.stdout
    for step in IDENTICAL_STEPS:
        assert f"ok   {step}" in result.stdout


def test_lineage_names_the_recipe(trained: Trained) -> None:
    tags = client().get_model_version(MODEL, trained.version).tags
    recipe = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=trained.run_id, artifact_path="lineage/recipe.json"
            )
        ).read_text()
    )
    assert recipe["training_set"]["digest"] == tags["lineage.training_set_digest"]
    assert recipe["tuning"]["best_iteration"] == int(tags["lineage.best_iteration"])
    assert recipe["snapshot"]["digest"] == tags["lineage.data_digest"]
    # the full effective config at training time, valid as a config today
    assert recorded_config(recipe).tuning.max_evals == 4
    assert recorded_config(recipe).tuning.num_boost_round == 120


def test_model_card_shows_the_last_reproduction(trained: Trained) -> None:
    from mlsteward.report import write_report

    reproduce_flow(model=MODEL, version=trained.version)
    markdown = Path(write_report(MODEL)["markdown"]).read_text()
    row = next(line for line in markdown.splitlines() if "Last reproduction" in line)
    assert "identical (params, 20" in row
    assert trained.lineage["training_set_digest"] in markdown
    assert "Reproduced" in markdown  # the audit history lists reproductions

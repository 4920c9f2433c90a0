"""`mlsteward export-dvc` with the real `dvc` command: a model's snapshot and signed artifact
tracked by DVC in a git repository around the home, restored by `dvc checkout` byte for byte,
and the restored files rebuild the version identically.

One small version is trained for the module; its home lives inside a temporary git repository
with DVC initialised. Tests that damage files restore them before they end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows.results import TrainingResult
from mlsteward.cli.app import app
from mlsteward.integrity import sha256_file
from tests.conftest import REPO_ROOT
from tests.support.governance import MODEL

DVC = REPO_ROOT / ".venv" / "bin" / "dvc"
runner = CliRunner()


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """The module's home (overrides the per-test one), inside a git repository with DVC."""
    return module_home


@pytest.fixture(scope="module")
def dvc_env(module_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the `dvc` command runs in: offline, its site cache in a temp dir."""
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path_factory.mktemp("dvc_site_cache")),
    }


def dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(DVC), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def repo(module_home: Path, dvc_env: dict[str, str]) -> Iterator[Path]:
    """``git init && dvc init`` around the home (the home's parent also holds its config)."""
    root = module_home.parent
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    dvc(root, dvc_env, "init", "-q")
    with pytest.MonkeyPatch.context() as mp:  # DVC in this process too
        mp.setenv("DVC_SITE_CACHE_DIR", dvc_env["DVC_SITE_CACHE_DIR"])
        yield root


@pytest.fixture(scope="module")
def trained(repo: Path, module_home: Path) -> TrainingResult:
    # start-up time: only this module's tests train
    from flows.ingestion import ingestion_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = write_dataset(generate_cohort(n_rows=1_500, seed=3), repo / "cohort.parquet")
    ingestion_flow(model=MODEL, source=str(cohort))
    return training_flow(model=MODEL)


def export(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["export-dvc", MODEL, "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str) -> str:
    """The refusal's message (exit 1, one JSON document)."""
    result = runner.invoke(app, ["export-dvc", MODEL, "--json", *args])
    assert result.exit_code == 1, result.output
    return str(json.loads(result.stdout)["error"])


def by_kind(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    (entry,) = [f for f in doc["files"] if f["kind"] == kind]
    return entry


def test_export_tracks_snapshot_and_artifact_and_dvc_restores_them(
    trained: TrainingResult, repo: Path, dvc_env: dict[str, str]
) -> None:
    digest = trained.lineage["data_digest"]
    first = export()

    snapshot, artifact = by_kind(first, "data_snapshot"), by_kind(first, "model_artifact")
    assert (snapshot["status"], artifact["status"]) == ("added", "added")
    snap_path, model_dir = Path(snapshot["path"]), Path(artifact["path"])
    assert snap_path.name == f"{digest}.parquet" and sha256_file(snap_path) == digest
    # DVC's own digest and our SHA-256, side by side in one DVC 3 file
    record = yaml.safe_load(Path(snapshot["dvc_file"]).read_text())
    (out,) = record["outs"]
    assert out["hash"] == "md5" and out["md5"] == hashlib.md5(snap_path.read_bytes()).hexdigest()
    assert out["size"] == snap_path.stat().st_size
    assert record["meta"]["mlsteward"] == {
        "kind": "data_snapshot",
        "what": f"data snapshot of {MODEL}",
        "model": MODEL,
        "data_version": digest,
        "sha256": digest,
    }
    model_meta = yaml.safe_load(Path(artifact["dvc_file"]).read_text())["meta"]["mlsteward"]
    assert model_meta["version"] == trained.version and model_meta["run_id"] == trained.run_id
    assert model_meta["sha256"] == trained.artifact_sha256 == sha256_file(model_dir / "model.ubj")
    assert model_meta["data_version"] == digest
    assert artifact["md5"].endswith(".dir")  # the whole signed directory
    # the .dvc files live apart from the home, and DVC git-ignores what it tracks
    assert Path(snapshot["dvc_file"]).is_relative_to(repo / "dvc" / MODEL)
    assert f"/{snap_path.name}" in (snap_path.parent / ".gitignore").read_text().split()
    assert str(snap_path.parent / ".gitignore") in first["git_add"]

    # idempotent: nothing changes the second time
    before = {p: Path(p).read_bytes() for p in (snapshot["dvc_file"], artifact["dvc_file"])}
    again = export()
    assert {f["status"] for f in again["files"]} == {"unchanged"} and again["git_add"] == []
    assert {p: Path(p).read_bytes() for p in before} == before
    assert "up to date" in dvc(repo, dvc_env, "status")

    # deleted data comes back from DVC's cache, byte for byte
    snap_path.unlink()
    shutil.rmtree(model_dir)
    status = json.loads(dvc(repo, dvc_env, "status", "--json"))
    deleted = {
        p: s for changes in status.values() for c in changes for p, s in c["changed outs"].items()
    }
    assert deleted == {
        os.path.relpath(snap_path, repo): "deleted",
        os.path.relpath(model_dir, repo): "deleted",
    }
    dvc(repo, dvc_env, "checkout")
    assert sha256_file(snap_path) == digest
    assert sha256_file(model_dir / "model.ubj") == trained.artifact_sha256

    # and the version rebuilds identically from the restored snapshot and stored artifact
    rebuilt = runner.invoke(app, ["reproduce", MODEL, trained.version])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"{MODEL} v{trained.version} (params): IDENTICAL" in rebuilt.stdout
    assert "ok   stored_artifact" in rebuilt.stdout


def test_ingest_with_dvc_writes_the_same_record(trained: TrainingResult, repo: Path) -> None:
    """Re-ingesting the same data is the same data version: `ingest --dvc` finds it tracked."""
    export("--no-models")
    result = runner.invoke(
        app, ["ingest", MODEL, "--source", str(repo / "cohort.parquet"), "--dvc", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["data_version"] == trained.lineage["data_digest"]
    (tracked,) = doc["dvc"]["files"]
    assert tracked["status"] == "unchanged" and tracked["sha256"] == doc["data_version"]


def test_a_tampered_snapshot_is_never_tracked(trained: TrainingResult) -> None:
    tracked = by_kind(export("--no-models"), "data_snapshot")
    path, dvc_file = Path(tracked["path"]), Path(tracked["dvc_file"])
    recorded = dvc_file.read_bytes()
    original = path.read_bytes()
    raw = bytearray(original)
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    try:
        message = refused()
    finally:
        path.write_bytes(original)
    assert "data digest mismatch" in message and str(path) in message
    assert dvc_file.read_bytes() == recorded  # DVC still records the genuine bytes


def test_a_missing_file_names_the_dvc_checkout_that_restores_it(trained: TrainingResult) -> None:
    doc = export()
    for entry in doc["files"]:
        path, hidden = Path(entry["path"]), Path(entry["path"] + ".hidden")
        path.rename(hidden)
        try:
            message = refused()
        finally:
            hidden.rename(path)
        assert "is missing" in message and f"`dvc checkout {entry['dvc_file']}`" in message


def test_a_tampered_artifact_is_never_tracked(trained: TrainingResult) -> None:
    model_file = Path(by_kind(export("--no-snapshots"), "model_artifact")["path"]) / "model.ubj"
    original = model_file.read_bytes()
    model_file.write_bytes(original + b"\0")
    try:
        message = refused("--versions", "champion," + trained.version)
    finally:
        model_file.write_bytes(original)
    assert f"{MODEL} v{trained.version}" in message and "does not match the registered" in message


def test_bad_selections_are_refused_by_name(trained: TrainingResult) -> None:
    assert "--versions 'latest'" in refused("--versions", "latest")
    assert "has no registered version 99" in refused("--versions", "99")
    assert "nothing to export" in refused("--no-snapshots", "--no-models")


def test_outside_a_dvc_repository_it_refuses_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One message naming the home and the fix, exit 1, no traceback; nothing is read first."""
    outside = tmp_path / "project" / ".mlsteward"
    monkeypatch.setenv("MLSTEWARD_HOME", str(outside))

    no_git = runner.invoke(app, ["export-dvc", MODEL])
    assert no_git.exit_code == 1 and no_git.stdout == ""
    assert no_git.stderr == (
        f"error: {outside} is not inside a git repository with DVC initialised: run "
        f"`git init && dvc init` in {outside.parent} (or a directory above it), then this "
        "command again\n"
    )

    subprocess.run(["git", "init", "-q", str(tmp_path / "project")], check=True)
    git_only = runner.invoke(app, ["export-dvc", MODEL])
    assert git_only.exit_code == 1 and "Traceback" not in git_only.output
    assert f"run `dvc init` in {tmp_path / 'project'}" in git_only.stderr


def test_without_dvc_installed_it_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "dvc.repo", None)  # as if dvc were not installed
    result = runner.invoke(app, ["export-dvc", MODEL])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (
        "error: tracking with DVC needs the dvc package: install dvc (pip install dvc)\n"
    )


def test_a_git_ignored_home_tracks_from_outside_it(
    trained: TrainingResult, tmp_path: Path, dvc_env: dict[str, str]
) -> None:
    """The default layout: ``.mlsteward/`` git-ignored in the project. The .dvc files go to
    ``dvc/``, which git records, and nothing is written into the home."""
    from mlsteward.data.dvc_tracking import track_snapshot

    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    dvc(project, dvc_env, "init", "-q")
    (project / ".gitignore").write_text(".mlsteward/\n")
    digest = trained.lineage["data_digest"]
    store = project / ".mlsteward" / "snapshots" / MODEL
    store.mkdir(parents=True)
    shutil.copy2(trained.lineage["data_path"], store / f"{digest}.parquet")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(project / ".mlsteward"))
        tracked = track_snapshot(MODEL, digest, project)

    dvc_file = project / "dvc" / MODEL / "snapshots" / f"{digest}.parquet.dvc"
    assert [(f.dvc_file, f.status) for f in tracked.files] == [(str(dvc_file), "added")]
    assert tracked.git_add == [str(dvc_file)]
    assert sorted(p.name for p in store.iterdir()) == [f"{digest}.parquet"]
    assert "up to date" in dvc(project, dvc_env, "status")

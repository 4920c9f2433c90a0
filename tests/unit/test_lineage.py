"""Lineage facts: git state, lock hash, flat tags."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from mlsteward.errors import MlstewardError
from mlsteward.training.lineage import (
    REQUIRED_TAGS,
    UNKNOWN,
    build_lineage,
    git_info,
    require_git_ref,
)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_git_info_reports_commit_and_dirty_flag(tmp_path: Path) -> None:
    assert git_info(tmp_path) == {"commit": UNKNOWN, "dirty": UNKNOWN}
    git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "commit", "-qm", "x")
    info = git_info(tmp_path)
    assert len(info["commit"]) == 40 and info["dirty"] == "false"
    (tmp_path / "f.txt").write_text("b")
    assert git_info(tmp_path)["dirty"] == "true"


def test_lineage_tags_are_flat_strings_and_complete(tmp_path: Path) -> None:
    (tmp_path / "uv.lock").write_text("lock")
    (tmp_path / "m.yaml").write_text("cfg")
    lin = build_lineage(
        model="m",
        data_digest="d" * 64,
        data_path="/s.parquet",
        data_source="/src.csv",
        feature_service="m",
        features=["a", "b"],
        training_rows=10,
        time_range=("2024-01-01", "2024-02-01"),
        split_sizes={"train": 7},
        best_params={"max_depth": 3},
        seed=1,
        max_evals=2,
        project_root=tmp_path,
        config_path=tmp_path / "m.yaml",
        training_set_digest="t" * 64,
        best_iteration=41,
    )
    # the recipe's digest is tagged at registration, next to the artifact's
    tags = lin.to_tags() | {"model_artifact_sha256": "x", "lineage.recipe_sha256": "r"}
    assert all(isinstance(v, str) for v in tags.values())
    assert set(REQUIRED_TAGS) <= set(tags)
    assert tags["lineage.lock_sha256"] == hashlib.sha256(b"lock").hexdigest()
    assert tags["lineage.config_sha256"] == hashlib.sha256(b"cfg").hexdigest()
    assert tags["lineage.features"] == '["a", "b"]'
    assert tags["lineage.training_set_digest"] == "t" * 64
    assert tags["lineage.best_iteration"] == "41"
    assert tags["lineage.lib.xgboost"] == "3.2.0"


def test_a_requested_git_ref_must_be_the_checked_out_commit(tmp_path: Path) -> None:
    with pytest.raises(MlstewardError, match="not a git checkout"):
        require_git_ref(tmp_path, "main")
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "f.txt").write_text("a")
    git(tmp_path, "add", "f.txt")
    git(tmp_path, "commit", "-qm", "first")
    first = git_info(tmp_path)["commit"]
    git(tmp_path, "tag", "v1")
    (tmp_path / "f.txt").write_text("b")
    git(tmp_path, "commit", "-qam", "second")
    head = git_info(tmp_path)["commit"]

    assert require_git_ref(tmp_path, "main") == head
    assert require_git_ref(tmp_path, head[:10]) == head
    with pytest.raises(MlstewardError, match=f"commit {first[:12]}.* is at {head[:12]}"):
        require_git_ref(tmp_path, "v1")
    with pytest.raises(MlstewardError, match="'nope' is unknown to the checkout"):
        require_git_ref(tmp_path, "nope")

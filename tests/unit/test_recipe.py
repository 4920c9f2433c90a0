"""The recipe's building blocks: content digests of frames, config and metric comparisons."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from mlsteward.training.recipe import (
    canonical_json,
    config_differences,
    frame_digest,
    recipe_sha256,
)
from mlsteward.training.reproduce import (
    STEPS,
    ReproductionReport,
    Step,
    environment_differences,
    metric_deltas,
)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.array([1, 2, 3], dtype="Int64"),
            "x": [0.5, float("nan"), 2.0],
            "c": pd.array(["a", None, "b"], dtype="string"),
            "ok": pd.array([True, None, False], dtype="boolean"),
        }
    )


def test_frame_digest_depends_on_content_not_layout() -> None:
    a = frame()
    b = frame().set_axis([10, 11, 12])  # another index, same content
    assert frame_digest(a) == frame_digest(b)
    assert frame_digest(a) == frame_digest(pd.concat([a.iloc[:2], a.iloc[2:]]))


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.assign(x=[0.5, float("nan"), 2.0000000001]),  # one value
        lambda f: f.assign(x=[0.5, 0.0, 2.0]),  # a null became a number
        lambda f: f.iloc[[1, 0, 2]],  # row order
        lambda f: f.rename(columns={"x": "y"}),  # a name
        lambda f: f.astype({"x": "float32"}),  # a dtype
        lambda f: f.iloc[:2],  # a row fewer
        lambda f: f[["x", "id", "c", "ok"]],  # column order
    ],
)
def test_frame_digest_sees_every_kind_of_change(change) -> None:
    assert frame_digest(change(frame())) != frame_digest(frame())


def test_recipe_digest_ignores_formatting_only() -> None:
    doc = {"b": [1, 2], "a": {"y": 1.5, "x": "s"}}
    reordered = {"a": {"x": "s", "y": 1.5}, "b": [1, 2]}
    assert recipe_sha256(doc) == recipe_sha256(reordered)
    assert canonical_json(doc) == b'{"a":{"x":"s","y":1.5},"b":[1,2]}'
    assert recipe_sha256(doc) != recipe_sha256({**doc, "b": [2, 1]})


def test_config_differences_name_dotted_keys_with_both_values() -> None:
    recorded = {"tuning": {"seed": 42, "space": {"depth": [3, 4]}}, "label": "y"}
    current = {"tuning": {"seed": 7, "space": {"depth": [3, 4]}, "new": 1}, "label": "y"}
    assert config_differences(recorded, current) == [
        {"key": "tuning.new", "recorded": None, "current": 1},
        {"key": "tuning.seed", "recorded": 42, "current": 7},
    ]
    assert config_differences(recorded, recorded) == []


def test_metric_deltas_are_exact_and_nan_safe() -> None:
    recorded = {"test_roc_auc": 0.9, "test_f1": float("nan"), "val_brier": 0.1}
    assert metric_deltas(recorded, dict(recorded)) == {}
    deltas = metric_deltas(recorded, {**recorded, "test_roc_auc": 0.9 + 1e-12})
    assert list(deltas) == ["test_roc_auc"] and deltas["test_roc_auc"] == pytest.approx(1e-12)
    missing = metric_deltas(recorded, {"test_roc_auc": 0.9, "test_f1": float("nan")})
    assert list(missing) == ["val_brier"] and math.isnan(missing["val_brier"])


def test_first_divergence_is_the_earliest_differing_step() -> None:
    report = ReproductionReport(model="m", version="1", mode="params")
    report.add(Step("data_digest", "same", ""))
    report.add(Step("training_set", "differs", ""))
    report.add(Step("metrics", "differs", ""))
    assert report.result == "diverged" and report.first_divergence == "training_set"
    assert report.to_dict()["summary"] == "diverged at training_set"


def test_environment_differences_name_lock_and_libraries(tmp_path: Path) -> None:
    (tmp_path / "uv.lock").write_text("now")
    tags = {
        "lineage.git_commit": "unknown",  # tmp_path is not a git checkout: same as now
        "lineage.git_dirty": "unknown",
        "lineage.lock_sha256": "0" * 64,
        "lineage.lib.xgboost": "0.0.1",
    }
    diffs = {d.what: d for d in environment_differences(tags, tmp_path)}
    assert set(diffs) == {"uv.lock sha256", "library xgboost"}
    assert diffs["uv.lock sha256"].recorded == "0" * 64
    assert diffs["library xgboost"].current != "0.0.1"


def test_close_lists_unreached_steps_in_training_order() -> None:
    report = ReproductionReport(model="m", version="1", mode="params")
    report.add(Step("recipe", "same", ""))
    report.add(Step("stored_artifact", "same", ""))
    report.add(Step("data_digest", "differs", "gone"))
    report.close("no data")
    assert [s.name for s in report.steps] == list(STEPS)
    assert [s.name for s in report.steps if s.status == "not_run"] == list(STEPS[2:-1])
    assert report.first_divergence == "data_digest"

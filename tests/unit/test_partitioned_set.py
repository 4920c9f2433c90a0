"""Chunked join and split of a large training set: the same rows and parts as one join."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.training import DistributedTraining
from mlsteward.errors import MlstewardError
from mlsteward.training.fitting import time_split
from mlsteward.training.partitioned_set import build_partitioned_set, chunked_digest, row_parts
from mlsteward.training.recipe import frame_digest

CFG = ModelConfig.model_validate(
    {
        "name": "toy",
        "task": "binary_classification",
        "source": {"path": "toy.parquet", "entity": "id", "timestamp": "ts"},
        "label": "y",
        "features": [
            {"name": "x", "dtype": "float"},
            {"name": "colour", "dtype": "category"},  # categories not declared
        ],
        "distributed": {"above_rows": 10, "chunk_rows": 7},
    }
)


def entities(n: int, ties: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    days = rng.integers(0, 20 if ties else 10_000, n)
    return pd.DataFrame(
        {
            "row_id": np.arange(n, dtype="int64"),
            "id": rng.integers(0, 1_000, n),
            "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(days, "h"),
            "y": rng.integers(0, 2, n),
        }
    )


def join(rows: pd.DataFrame) -> pd.DataFrame:
    """A stand-in point-in-time join: row-wise, as Feast's is."""
    out = rows.copy()
    out["x"] = out["id"] * 0.5
    out["colour"] = np.where(out["id"] % 3 == 0, "red", np.where(out["id"] % 3 == 1, "blue", None))
    return out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("keep_ties", [True, False])
def test_row_parts_match_time_split(ties: bool, keep_ties: bool) -> None:
    ents = entities(101, ties)
    split = time_split(join(ents), "ts", 0.7, 0.15, keep_ties_together=keep_ties)
    parts = row_parts(ents, "ts", 0.7, 0.15, keep_ties)
    for code, part in enumerate((split.train, split.validation, split.test)):
        assert sorted(part.row_id) == sorted(np.flatnonzero(parts == code))


def test_row_parts_need_positional_row_ids() -> None:
    ents = entities(20)
    ents["row_id"] = ents["row_id"][::-1].to_numpy()
    with pytest.raises(MlstewardError, match=r"row ids 0\.\.n-1"):
        row_parts(ents, "ts", 0.7, 0.15, True)


def test_partitioned_set_stages_train_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    ents = entities(50)
    whole = time_split(join(ents), "ts", 0.7, 0.15)
    pset = build_partitioned_set(CFG, ents, join, tmp_path / "p", {"colour": "category"})
    assert len(pset.partitions.paths) == 8  # ceil(50 / 7) chunks, each with training rows
    assert all(Path(p).parent == tmp_path / "p" for p in pset.partitions.paths)
    staged = pd.concat([pd.read_parquet(p) for p in pset.partitions.paths], ignore_index=True)
    assert_frame_equal(staged, whole.train.sort_values("row_id", ignore_index=True))
    assert pset.partitions.rows == len(whole.train)
    assert_frame_equal(pset.validation, whole.validation)
    assert_frame_equal(pset.test, whole.test)
    assert pset.observed_categories == {"colour": sorted(whole.train.colour.dropna().unique())}
    assert list(pset.schema.columns) == list(whole.train.columns) and pset.schema.empty
    assert pset.partitions.first_time == whole.train.ts.min()
    assert pset.partitions.last_time == whole.train.ts.max()


def test_digest_follows_content_and_chunking(tmp_path: Path) -> None:
    ents = entities(50)
    first = build_partitioned_set(CFG, ents, join, tmp_path / "a", {})
    again = build_partitioned_set(CFG, ents, join, tmp_path / "b", {})
    assert first.digest == again.digest
    chunks = [frame_digest(join(ents.iloc[i : i + 7])) for i in range(0, 50, 7)]
    assert first.digest == chunked_digest(chunks, 7)
    other = CFG.model_copy(update={"distributed": DistributedTraining(above_rows=10, chunk_rows=9)})
    assert build_partitioned_set(other, ents, join, tmp_path / "c", {}).digest != first.digest

    def changed(rows: pd.DataFrame) -> pd.DataFrame:
        out = join(rows)
        out.loc[out.row_id == 33, "x"] += 1
        return out

    assert build_partitioned_set(CFG, ents, changed, tmp_path / "d", {}).digest != first.digest


def test_threshold_is_strictly_above() -> None:
    assert not DistributedTraining().applies(10**9)  # unset: never
    assert not DistributedTraining(above_rows=100).applies(100)
    assert DistributedTraining(above_rows=100).applies(101)


def left_by_a_dead_process(root: Path) -> Path:
    """A staging directory whose process ended without cleaning up (its lock went with it)."""
    import subprocess
    import sys

    code = (
        "import sys, pathlib, os; "
        "from mlsteward.training.partitioned_set import staging_directory; "
        "d = staging_directory(pathlib.Path(sys.argv[1])); (d / 'part-00000.parquet')"
        ".write_bytes(b'x' * 10); print(d); os._exit(0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def backdate(path: Path, seconds: float = 7200) -> None:
    import os
    import time

    past = time.time() - seconds
    os.utime(path, (past, past))


def test_only_directories_no_live_process_holds_are_abandoned(tmp_path: Path) -> None:
    from mlsteward.training.partitioned_set import (
        abandoned_directories,
        release_directory,
        staging_directory,
    )

    live = staging_directory(tmp_path)  # this process holds it
    dead = left_by_a_dead_process(tmp_path)
    foreign = tmp_path / "not-ours"
    foreign.mkdir()
    for d in (live, dead, foreign):
        backdate(d)
    assert abandoned_directories(tmp_path, 3600) == [dead]
    assert abandoned_directories(tmp_path, 3 * 3600) == []  # within the grace period
    release_directory(live)
    assert not live.exists()
    assert abandoned_directories(tmp_path, 3600) == [dead]

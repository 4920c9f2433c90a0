"""A training set too large for one process, joined and split chunk by chunk.

The point-in-time join answers each entity row from that row alone, so joining the entity rows
in chunks gives exactly the rows of one join. The time split needs only the event times, which
the entity frame already has, so every row's part is known before any feature is fetched. Each
chunk's training rows become one parquet partition for the Dask workers
(``mlsteward.training.distributed``); validation and test rows are collected here, in the flow
process, with every column of the join (the sensitive columns that are not features too),
because the gates, the fairness checks, SHAP and the model card compute on them in memory.

Nothing here knows about Feast: ``retrieve`` is any function from entity rows to their
point-in-time training rows.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.config.settings import training_sets_dir
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import undeclared_categories
from mlsteward.training.fitting import split_boundaries
from mlsteward.training.recipe import frame_digest

ROW_ID = "row_id"
DIGEST_SCHEME = b"mlsteward.chunked-training-set.v1"

Retrieve = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class TrainPartitions:
    """The training rows of a partitioned training set: parquet files in partition order."""

    paths: list[str]
    rows: int
    directory: str
    first_time: pd.Timestamp
    last_time: pd.Timestamp


@dataclass
class PartitionedSet:
    partitions: TrainPartitions
    schema: pd.DataFrame
    """No rows: the training frame's columns and dtypes."""
    validation: pd.DataFrame
    test: pd.DataFrame
    digest: str
    """SHA-256 over the chunks' ``frame_digest``s in order, with the chunk size (see
    ``chunked_digest``): computable without ever holding the whole frame."""
    observed_categories: dict[str, list[str]] = field(default_factory=dict)
    """Values seen in the training rows of category features the config does not enumerate."""


def chunked_digest(chunk_digests: list[str], chunk_rows: int) -> str:
    """The content digest of a training set retrieved in chunks of ``chunk_rows`` rows.

    Not equal to ``frame_digest`` of the whole frame (that hashes column by column, which needs
    every row at once); the same rows in the same chunking always give the same digest.
    """
    h = hashlib.sha256(DIGEST_SCHEME)
    h.update(chunk_rows.to_bytes(8, "little"))
    for d in chunk_digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def row_parts(
    entities: pd.DataFrame, ts_col: str, train: float, validation: float, keep_ties: bool
) -> np.ndarray:
    """0/1/2 (train/validation/test) per row position, as ``time_split`` assigns the rows."""
    row_ids = entities[ROW_ID].to_numpy()
    if not np.array_equal(row_ids, np.arange(len(entities))):
        raise MlstewardError("partitioned retrieval expects row ids 0..n-1 in order")
    ordered = entities[[ts_col, ROW_ID]].sort_values([ts_col, ROW_ID], kind="mergesort")
    a, b = split_boundaries(ordered[ts_col].to_numpy(), train, validation, keep_ties)
    parts = np.empty(len(entities), dtype=np.int8)
    positions = ordered[ROW_ID].to_numpy()
    parts[positions[:a]] = 0
    parts[positions[a:b]] = 1
    parts[positions[b:]] = 2
    return parts


def build_partitioned_set(
    cfg: ModelConfig,
    entities: pd.DataFrame,
    retrieve: Retrieve,
    directory: Path,
    feature_dtypes: dict[str, str],
    keep_ties_together: bool = True,
) -> PartitionedSet:
    """Join, split and stage ``entities`` chunk by chunk (``cfg.distributed.chunk_rows`` rows).

    Memory holds one chunk, the entity columns, and the validation and test rows.

    Raises:
        MlstewardError: row ids are not 0..n-1, or the training part is empty.
        ValueError: the time split would leave a part empty.
    """
    ts, chunk_rows = cfg.timestamp_column, cfg.distributed.chunk_rows
    parts = row_parts(entities, ts, cfg.split.train, cfg.split.validation, keep_ties_together)
    undeclared = undeclared_categories(cfg, feature_dtypes)
    seen: dict[str, set[str]] = {c: set() for c in undeclared}
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    digests: list[str] = []
    held: dict[int, list[pd.DataFrame]] = {1: [], 2: []}
    schema: pd.DataFrame | None = None
    train_rows = 0
    times: list[pd.Timestamp] = []
    for start in range(0, len(entities), chunk_rows):
        frame = retrieve(entities.iloc[start : start + chunk_rows])
        digests.append(frame_digest(frame))
        part = parts[frame[ROW_ID].to_numpy()]
        if schema is None:
            schema = frame.iloc[:0]
        train = frame[part == 0]
        for col in undeclared:
            seen[col].update(train[col].dropna().astype(str).unique().tolist())
        for p in (1, 2):
            held[p].append(frame[part == p])
        if len(train):
            path = directory / f"part-{len(paths):05d}.parquet"
            train.reset_index(drop=True).to_parquet(path, index=False)
            paths.append(str(path))
            train_rows += len(train)
            times.extend((train[ts].min(), train[ts].max()))
    if schema is None or not train_rows:
        raise MlstewardError(
            f"model {cfg.name!r}: the partitioned training set has no training rows"
        )

    def ordered(frames: list[pd.DataFrame]) -> pd.DataFrame:
        whole = pd.concat(frames, ignore_index=True)
        return whole.sort_values([ts, ROW_ID], kind="mergesort").reset_index(drop=True)

    return PartitionedSet(
        partitions=TrainPartitions(
            paths=paths,
            rows=train_rows,
            directory=str(directory),
            first_time=min(times),
            last_time=max(times),
        ),
        schema=schema,
        validation=ordered(held[1]),
        test=ordered(held[2]),
        digest=chunked_digest(digests, chunk_rows),
        observed_categories={c: sorted(v) for c, v in seen.items()},
    )


LOCK_FILE = ".in-use"
_HELD: dict[str, int] = {}  # staging directory -> descriptor of its held lock


def partition_root(cfg: ModelConfig) -> Path:
    """Where a model's partitioned training sets are staged (``distributed.staging_dir``)."""
    configured = cfg.distributed.staging_dir
    return Path(configured).expanduser() / cfg.name if configured else training_sets_dir(cfg.name)


def staging_directory(root: Path) -> Path:
    """A fresh directory for one run's partitions, locked while this process uses it.

    The lock (``flock`` on a file inside) is what tells ``mlsteward gc`` a directory is still
    in use, however long the training runs: the kernel releases it when the process ends,
    killed or not, so a directory whose lock can be taken was left by a run that is gone.
    """
    directory = root / uuid.uuid4().hex
    directory.mkdir(parents=True)
    fd = os.open(directory / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD[str(directory)] = fd
    return directory


def release_directory(directory: Path | str) -> None:
    """Delete a staging directory and give up its lock."""
    shutil.rmtree(directory, ignore_errors=True)
    fd = _HELD.pop(str(directory), None)
    if fd is not None:
        os.close(fd)


def remove_partitions(partitions: TrainPartitions | None) -> None:
    """Delete a run's staged partitions (they are rebuilt from the snapshot when needed)."""
    if partitions is not None:
        release_directory(partitions.directory)


def abandoned_directories(root: Path, min_age_seconds: float) -> list[Path]:
    """Staging directories under ``root`` no live process holds, older than the grace period
    (the grace covers a directory made but not yet locked). Directories without the lock file
    are not ours and are left alone."""
    found = []
    now = time.time()
    for directory in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        lock = directory / LOCK_FILE
        if not lock.exists() or now - directory.stat().st_mtime < min_age_seconds:
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running training holds it
        finally:
            os.close(fd)
        found.append(directory)
    return found

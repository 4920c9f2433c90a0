"""What a drift check compares the current window with: the champion's holdout, or its training
window when the holdout is too small to be a reference.

The holdout (the newest rows of the training snapshot, with the out-of-sample predictions
recorded at training) is the natural reference: same rows the model was judged on. But a small
data set leaves a small holdout: 532 rows with a 15% test split give 80, and 80 rows measure a
distribution no better than their own noise, whatever the test. Below
``drift.min_reference_rows`` the features and the outcome are therefore compared with the
*training window* instead: the rows of the champion's recorded snapshot that it was fit on (the
training part of the same time split training made), several times more rows. The model's
output and the quality stay compared with the holdout: predictions on the rows a model was fit
on are in-sample, surer of themselves than anything it will see later, and their metrics would
make every current window look worse.

The training window is read from the snapshot the version's recipe names, verified by its
digest (:func:`mlsteward.data.snapshots.locate_snapshot`), without Feast: each training row's
point-in-time join returned that row's own values (same entity, same event time, within any
TTL), so the snapshot's rows are the rows the model saw. Its size is checked against the
training split size recorded at registration. When it cannot be read (no recipe, the snapshot
gone or altered, a different size) the holdout stays the reference and the result says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mlsteward.config.models import ModelConfig
from mlsteward.data.snapshots import locate_snapshot
from mlsteward.data.state import SnapshotInfo
from mlsteward.errors import MlstewardError
from mlsteward.training.fitting import time_split
from mlsteward.training.recorded import RecordedVersion, RegisteredVersion

V = TypeVar("V", bound=RegisteredVersion)

SPLIT_SIZES_TAG = "lineage.split_sizes"
_ROW = "row_id"  # the tie-break training's split uses: the row's place in the snapshot


@dataclass
class DriftReference:
    """The features' and outcome's reference (``frame``), the holdout the model's output and
    the quality are compared with, which of the two ``frame`` is, and why."""

    frame: pd.DataFrame
    holdout: pd.DataFrame
    source: Literal["holdout", "training window"]
    what: str
    why: str

    @property
    def output_reference(self) -> pd.DataFrame | None:
        """The model output's own reference when it is not ``frame`` (for ``compute_drift``)."""
        return None if self.source == "holdout" else self.holdout

    def info(self) -> dict:
        """The result's ``reference`` record; ``drift_sampling.reference_lines`` says it."""
        return {
            "source": self.source,
            "rows": len(self.frame),
            "holdout_rows": len(self.holdout),
            "what": self.what,
            "why": self.why,
        }


def choose_reference(
    holdout: pd.DataFrame,
    training_window: Callable[[], pd.DataFrame],
    min_rows: int,
    *,
    version: str,
) -> DriftReference:
    """The holdout when it has at least ``min_rows`` rows, else the training window (read only
    then), unless that cannot be read or is no larger.

    Args:
        holdout: The champion's holdout, with its recorded predictions.
        training_window: Reads the rows the champion was fit on; may raise
            :class:`MlstewardError` (or ``OSError``) saying why it cannot.
        min_rows: ``drift.min_reference_rows``.
        version: The champion's version, for the sentences.
    """
    n = len(holdout)
    held = f"v{version}'s holdout"
    if n >= min_rows:
        return DriftReference(
            holdout, holdout, "holdout", held, f"{n:,} rows >= drift.min_reference_rows"
        )
    small = f"the holdout has {n:,} rows, fewer than drift.min_reference_rows ({min_rows:,})"
    try:
        window = training_window()
    except (MlstewardError, OSError) as exc:
        why = f"{small}, but the training window cannot be read: {exc}"
        return DriftReference(holdout, holdout, "holdout", held, why)
    if len(window) <= n:
        why = f"{small}, and the training window is no larger ({len(window):,} rows)"
        return DriftReference(holdout, holdout, "holdout", held, why)
    what = f"v{version}'s training window (the rows of its recorded snapshot it was fit on)"
    return DriftReference(window, holdout, "training window", what, small)


def training_window(cfg: ModelConfig, snapshot: SnapshotInfo) -> pd.DataFrame:
    """The training part of ``snapshot`` under ``cfg``'s time split, as training cut it
    (``prepare``: rows ordered by event time, then by their place in the snapshot; ties kept
    together unless ingestion assigned the timestamps): entity, time, label, the features and
    the sensitive columns, as the snapshot holds them.

    Raises:
        SnapshotMissingError, SnapshotAlteredError: the snapshot is gone or was changed.
        MlstewardError: the snapshot lacks a column the config names.
    """
    path = locate_snapshot(snapshot.model, snapshot.digest, snapshot.path)
    wanted = [
        cfg.source.entity,
        cfg.timestamp_column,
        cfg.label,
        *cfg.data_column_names,
    ]
    wanted = list(dict.fromkeys(wanted))
    present = set(pq.read_schema(path).names)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise MlstewardError(
            f"snapshot {snapshot.digest[:12]} of model {cfg.name!r} has no column(s) {missing}"
        )
    frame = pd.read_parquet(path, columns=wanted)
    frame.insert(0, _ROW, np.arange(len(frame), dtype="int64"))
    split = time_split(
        frame,
        cfg.timestamp_column,
        cfg.split.train,
        cfg.split.validation,
        tie_col=_ROW,
        keep_ties_together=not snapshot.timestamp_assigned,
    )
    return split.train.drop(columns=[_ROW])


def recorded_training_window(recorded: RecordedVersion[V]) -> pd.DataFrame:
    """:func:`training_window` of a registered version, from its recipe (config and snapshot
    as it trained), checked against the training rows its lineage recorded.

    Raises:
        MlstewardError: the recipe cannot be trusted, the snapshot is gone or was changed, or
            the rows found are not as many as the version was fit on.
    """
    if recorded.recipe_problem is not None:
        raise MlstewardError(recorded.recipe_problem)
    frame = training_window(recorded.config, recorded.snapshot)
    expected = _recorded_train_rows(recorded.info.tags)
    if expected is not None and expected != len(frame):
        raise MlstewardError(
            f"the snapshot's training split has {len(frame):,} rows, but "
            f"v{recorded.info.version} was fit on {expected:,}"
        )
    return frame


def _recorded_train_rows(tags: Mapping[str, str]) -> int | None:
    try:
        return int(json.loads(tags[SPLIT_SIZES_TAG])["train"])
    except (KeyError, TypeError, ValueError):
        return None

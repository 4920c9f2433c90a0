"""The prepared training set: the time split and the encoded parts every later step reads.

Training and reproduction prepare a set the same way (``prepare``), so a rebuilt version sees
the same rows in the same parts. Above ``distributed.above_rows`` the training rows stay in
parquet partitions for ``xgboost.dask`` (``prepare_partitioned``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.data.state import SnapshotInfo
from mlsteward.features.encoding import FeatureEncoding, encode, make_encoding
from mlsteward.training.fitting import Split, XGBModel, time_split
from mlsteward.training.partitioned_set import Retrieve, TrainPartitions, build_partitioned_set
from mlsteward.training.recipe import frame_digest


@dataclass
class PreparedData:
    split: Split
    encoding: FeatureEncoding
    label: str
    x_train: pd.DataFrame
    x_val: pd.DataFrame
    x_test: pd.DataFrame
    training_set_digest: str = ""
    """SHA-256 of the point-in-time training set's content (``recipe.frame_digest``, or
    ``partitioned_set.chunked_digest`` for a partitioned set)."""
    train_partitions: TrainPartitions | None = None
    """Set when the training rows are parquet partitions for ``xgboost.dask`` (the set is above
    ``distributed.above_rows``); ``split.train`` and ``x_train`` then hold no rows."""

    @classmethod
    def encoded(
        cls,
        split: Split,
        enc: FeatureEncoding,
        label: str,
        digest: str,
        partitions: TrainPartitions | None = None,
    ) -> PreparedData:
        return cls(
            split=split,
            encoding=enc,
            label=label,
            x_train=encode(split.train, enc),
            x_val=encode(split.validation, enc),
            x_test=encode(split.test, enc),
            training_set_digest=digest,
            train_partitions=partitions,
        )

    def y(self, part: str) -> pd.Series:
        label: pd.Series = getattr(self.split, part)[self.label]
        return label

    def example_rows(self) -> pd.DataFrame:
        """A few encoded rows for the model's signature and input example."""
        return (self.x_val if self.train_partitions else self.x_train).head(5)

    def time_range(self, ts: str) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last event time over all three parts."""
        parts = [p[ts] for p in (self.split.train, self.split.validation, self.split.test)]
        if self.train_partitions:
            tp = self.train_partitions
            parts.append(pd.Series([tp.first_time, tp.last_time]))
        return min(p.min() for p in parts if len(p)), max(p.max() for p in parts if len(p))


@dataclass
class FittedModel:
    model: XGBModel
    threshold: float | None
    """The label cut-off chosen on validation; None for a regression model (no labels)."""
    test_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    test_prediction: pd.Series
    """Per test row: the positive class's probability, or the predicted number."""


def prepare(cfg: ModelConfig, frame: pd.DataFrame, snapshot: SnapshotInfo) -> PreparedData:
    return prepare_frame(
        cfg, frame, snapshot.feature_dtypes, keep_ties_together=not snapshot.timestamp_assigned
    )


def prepare_frame(
    cfg: ModelConfig,
    frame: pd.DataFrame,
    feature_dtypes: dict[str, str],
    keep_ties_together: bool = True,
) -> PreparedData:
    """The time split and encoding of a training frame (also for frames with no snapshot, such
    as the scale benchmark's cohort)."""
    s = cfg.split
    split = time_split(
        frame,
        cfg.timestamp_column,
        s.train,
        s.validation,
        keep_ties_together=keep_ties_together,
    )
    enc = make_encoding(cfg, feature_dtypes, split.train)
    return PreparedData.encoded(split, enc, cfg.label, frame_digest(frame))


def prepare_partitioned(
    cfg: ModelConfig,
    entities: pd.DataFrame,
    retrieve: Retrieve,
    snapshot: SnapshotInfo,
    directory: Path,
) -> PreparedData:
    """The same split and encoding as ``prepare``, with the training rows left in parquet
    partitions under ``directory`` for ``xgboost.dask``
    (``mlsteward.training.partitioned_set``)."""
    pset = build_partitioned_set(
        cfg,
        entities,
        retrieve,
        directory,
        snapshot.feature_dtypes,
        keep_ties_together=not snapshot.timestamp_assigned,
    )
    observed = pd.DataFrame(
        {c: pd.Series(v, dtype=object) for c, v in pset.observed_categories.items()}
    )
    enc = make_encoding(cfg, snapshot.feature_dtypes, observed)
    split = Split(pset.schema, pset.validation, pset.test, train_rows=pset.partitions.rows)
    return PreparedData.encoded(split, enc, cfg.label, pset.digest, pset.partitions)

"""What a trial evaluated on a task runner needs, and the per-process matrix cache it reads.

A parallel search ships one ``TrialData`` to the workers (threads, Dask or Ray); each worker
process builds the search's DMatrix pair once and shares it between the trials it runs.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xgboost as xgb

from mlsteward.features.encoding import FeatureEncoding
from mlsteward.training.fitting import make_dmatrix
from mlsteward.training.prepared import PreparedData


@dataclass(frozen=True)
class TrialData:
    """What a trial needs from the training set, as plain picklable frames and arrays.

    ``key`` names one search's data, so a worker builds its DMatrix pair once per search and
    not once per trial (see ``trial_matrices``).
    """

    key: str
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_val: pd.DataFrame
    y_val: np.ndarray
    encoding: FeatureEncoding

    @classmethod
    def from_prepared(cls, data: PreparedData) -> TrialData:
        return cls(
            key=uuid.uuid4().hex,
            x_train=data.x_train,
            y_train=data.y("train").to_numpy(),
            x_val=data.x_val,
            y_val=data.y("validation").to_numpy(),
            encoding=data.encoding,
        )


_MATRICES: dict[str, tuple[xgb.DMatrix, xgb.DMatrix]] = {}
_MATRICES_LOCK = threading.Lock()


def trial_matrices(data: TrialData) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """The search's DMatrix pair, built once per worker process and shared by its trials.

    Only the latest search's pair is kept: long-lived workers (a production Dask or Ray
    cluster) would otherwise hold every past training set in memory. Two searches alternating
    on one worker just rebuild (correct, slower).
    """
    with _MATRICES_LOCK:
        if data.key not in _MATRICES:
            _MATRICES.clear()
            _MATRICES[data.key] = (
                make_dmatrix(data.x_train, data.y_train, data.encoding),
                make_dmatrix(data.x_val, data.y_val, data.encoding),
            )
        return _MATRICES[data.key]


def release_trial_matrices(key: str) -> None:
    with _MATRICES_LOCK:
        _MATRICES.pop(key, None)

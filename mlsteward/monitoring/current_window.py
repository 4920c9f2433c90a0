"""The current window drift compares with the champion's reference: recent prediction-log rows.

The drift flow's task and the drift benchmark read it the same way: only the columns drift
compares, memory bounded by ``drift.max_rows`` (``window_sample``), outcomes joined under the
model's label column.
"""

from __future__ import annotations

from datetime import datetime

from mlsteward.config.models import ModelConfig
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.columns import drift_prediction_column
from mlsteward.monitoring.window_sample import WindowSample, sample_window


def drift_log_columns(cfg: ModelConfig) -> list[str]:
    """The logged columns drift compares: the features and the model's output (a classifier's
    probability, a regression model's predicted value). The label's key columns (entity, event
    time) are added by the reader only to join outcomes; explanation, version, request and
    batch columns are never decoded."""
    return [*(f.name for f in cfg.features), drift_prediction_column(cfg)]


def read_current_window(cfg: ModelConfig, since: datetime, *, seed: int = 0) -> WindowSample:
    """The prediction-log window from ``since``, read in memory bounded by
    ``cfg.drift.max_rows`` (a seeded pre-sample above twice that, recorded), outcomes joined
    and renamed to the model's label column."""
    window = sample_window(
        cfg.name,
        since=since,
        columns=drift_log_columns(cfg),
        max_rows=cfg.drift.max_rows,
        seed=seed,
    )
    rename = {prediction_log.LABEL: cfg.label}
    window.frame = window.frame.rename(columns=rename)
    if window.labelled is not None:
        window.labelled = window.labelled.rename(columns=rename)
    return window

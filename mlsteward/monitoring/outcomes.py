"""Outcomes that arrive after scoring (``mlsteward labels``): checked, then joined to the
prediction log so drift can measure quality on recent data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mlsteward.audit import Action, AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.data.contract import read_source
from mlsteward.errors import ContractViolation
from mlsteward.monitoring import prediction_log

MAX_LISTED_ROWS = 10


def ingest_labels(cfg: ModelConfig, path: Path, *, actor: str, audit: AuditStore) -> dict[str, Any]:
    """Validate an outcomes file (entity, event time, label) and attach it to the log.

    Raises:
        ContractViolation: a column is missing, or rows carry an unparsable time or a label
            outside ``label_values`` (the rows are named); nothing is attached then.
    """
    frame = read_source(path, cfg)
    entity, ts, label = cfg.source.entity, cfg.timestamp_column, cfg.label
    missing = [c for c in (entity, ts, label) if c not in frame.columns]
    if missing:
        raise ContractViolation(f"{path}: missing column(s) {missing}; need {[entity, ts, label]}")
    times = pd.to_datetime(frame[ts], utc=True, errors="coerce")
    values = pd.to_numeric(frame[label], errors="coerce")
    bad_time = frame.index[times.isna()].tolist()
    bad_label = frame.index[~values.isin(cfg.label_values)].tolist()
    problems = []
    if bad_time:
        problems.append(f"unparsable {ts!r} in row(s) {_rows(bad_time)}")
    if bad_label:
        problems.append(f"{label!r} not one of {cfg.label_values} in row(s) {_rows(bad_label)}")
    if problems:
        raise ContractViolation(f"{path}: " + "; ".join(problems) + "; nothing was attached")
    labels = pd.DataFrame({entity: frame[entity], ts: times, label: values.astype("int64")})
    counts = prediction_log.attach_labels(
        cfg.name, labels, entity=entity, timestamp=ts, label=label
    )
    result = {"model": cfg.name, "source": str(path), "rows": len(labels), **counts}
    audit.append(
        Action.LABELS_INGESTED,
        model=cfg.name,
        actor=actor,
        reason=f"{counts.get('matched', 0)} of {len(labels)} outcomes matched logged predictions",
        details={k: v for k, v in result.items() if k != "unmatched_examples"},
    )
    return result


def _rows(index: list[int]) -> str:
    """1-based row numbers as a person counts them in the file."""
    shown = ", ".join(str(i + 1) for i in index[:MAX_LISTED_ROWS])
    more = len(index) - MAX_LISTED_ROWS
    return shown + (f" and {more} more" if more > 0 else "")

"""Which data snapshot is current for each model.

A snapshot is immutable and content-addressed; this small JSON pointer says which one the
Feast source reads and the next training uses. Written atomically so a crash never leaves a
half-written pointer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

from mlsteward.config.names import check_model_name
from mlsteward.config.settings import state_dir


class SnapshotInfo(BaseModel):
    model: str
    digest: str
    path: str
    rows: int
    min_timestamp: str
    max_timestamp: str
    ingested_at: str
    source_path: str
    timestamp_assigned: bool = False
    feature_dtypes: dict[str, str] = {}
    """The type of every data column of the feature view, as configured or inferred at
    ingestion: the features and the sensitive columns that are not features."""


def _pointer(model: str) -> Path:
    return state_dir() / f"{check_model_name(model)}.snapshot.json"


def current_snapshot(model: str) -> SnapshotInfo | None:
    p = _pointer(model)
    if not p.exists():
        return None
    return SnapshotInfo.model_validate_json(p.read_text())


def set_current_snapshot(info: SnapshotInfo) -> None:
    p = _pointer(info.model)
    tmp = p.with_name(f".{p.name}.tmp")  # hidden until it replaces the pointer
    tmp.write_text(json.dumps(info.model_dump(), indent=2, sort_keys=True))
    os.replace(tmp, p)

"""Outcomes that arrive after scoring (``mlsteward labels``): checked, then joined to the
prediction log so drift can measure quality on recent data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlsteward.audit import Action, AuditStore
from mlsteward.config.models import ModelConfig
from mlsteward.data.contract import (
    RULE_LABEL_COUNT,
    RULE_LABEL_NONNEGATIVE,
    RULE_LABEL_NUMERIC,
    check_regression_label,
    entity_ids,
    parse_event_times,
    read_source,
)
from mlsteward.errors import ContractViolation
from mlsteward.monitoring import prediction_log

MAX_LISTED_ROWS = 10


def ingest_labels(cfg: ModelConfig, path: Path, *, actor: str, audit: AuditStore) -> dict[str, Any]:
    """Validate an outcomes file (entity, event time, label) and attach it to the log.

    A classification outcome is one of ``label_values``; a regression outcome is a finite
    number, and under ``count:poisson`` a whole number >= 0, under ``reg:tweedie`` a number
    >= 0 (what those objectives can predict), so quality on recent data is never measured
    against an outcome the model could not have been trained on.

    Raises:
        ContractViolation: a column is missing, or rows carry an unparsable time or a label
            that breaks the rule above (the rows are named); nothing is attached then.
    """
    frame = read_source(path, cfg)
    entity, ts, label = cfg.source.entity, cfg.timestamp_column, cfg.label
    missing = [c for c in (entity, ts, label) if c not in frame.columns]
    if missing:
        raise ContractViolation(f"{path}: missing column(s) {missing}; need {[entity, ts, label]}")
    frame = frame.reset_index(drop=True)
    ids = entity_ids(frame[entity])
    times = parse_event_times(frame[ts])
    values = pd.to_numeric(frame[label], errors="coerce")
    no_id = ids.isna() | ids.astype("string").str.strip().eq("").fillna(False)
    bad_time = frame.index[times.isna()].tolist()
    problems = []
    if no_id.any():
        problems.append(f"missing {entity!r} in row(s) {_rows(frame.index[no_id].tolist())}")
    if bad_time:
        problems.append(f"unparsable {ts!r} (ISO 8601 wanted) in row(s) {_rows(bad_time)}")
    for rule, bad in outcome_problems(cfg, values):
        problems.append(f"{label!r} {rule} in row(s) {_rows(bad)}")
    if problems:
        raise ContractViolation(f"{path}: " + "; ".join(problems) + "; nothing was attached")
    outcome = values.astype("float64" if cfg.is_regression else "int64")
    labels = pd.DataFrame({entity: stored_ids(cfg, ids, path), ts: times, label: outcome})
    try:
        counts = prediction_log.attach_labels(
            cfg.name, labels, entity=entity, timestamp=ts, label=label
        )
    except ValueError as exc:  # ids of another type than the logged ones: named, not a bug
        raise ContractViolation(f"{path}: {exc}; nothing was attached") from None
    result = {"model": cfg.name, "source": str(path), "rows": len(labels), **counts}
    audit.append(
        Action.LABELS_INGESTED,
        model=cfg.name,
        actor=actor,
        reason=f"{counts.get('matched', 0)} of {len(labels)} outcomes matched logged predictions",
        details={k: v for k, v in result.items() if k != "unmatched_examples"},
    )
    return result


def stored_ids(cfg: ModelConfig, ids: pd.Series, path: Path) -> pd.Series:
    """The ids in the type the model's outcomes are stored with: the stored outcomes are read
    as one dataset, which an integer id in one file and a text id in another would break.
    Integers join text ids as their digits; text cannot join integer ids.

    Raises:
        ContractViolation: text ids where earlier outcomes have integer ones.
    """
    whole = isinstance(ids.dtype, pd.Int64Dtype)
    ids = ids.astype("int64") if whole else ids
    files = prediction_log.label_files(cfg.name)
    entity = cfg.source.entity
    stored = pq.read_schema(files[0]).field(entity).type if files else None
    if stored is None or pa.types.is_integer(stored) == whole:
        return ids
    if whole:
        return ids.astype("string")
    raise ContractViolation(
        f"{path}: column {entity!r} holds text ids, but the outcomes stored before have whole "
        "numbers; nothing was attached"
    )


# The contract's label rules, worded for a file of outcomes.
_OUTCOME_RULES = {
    RULE_LABEL_NUMERIC: "not a finite number",
    RULE_LABEL_COUNT: "not a whole number >= 0 ({objective})",
    RULE_LABEL_NONNEGATIVE: "not a number >= 0 ({objective})",
}


def outcome_problems(cfg: ModelConfig, values: pd.Series) -> list[tuple[str, list[int]]]:
    """Each rule the outcomes break, with the positions (0-based) of the rows that break it.

    ``values`` are the outcomes as numbers (NaN where the text was no number). A row is named
    under the first rule it breaks only, so one bad value reads as one problem.
    """
    if not cfg.is_regression:
        bad = ~values.isin(cfg.label_values)
        return [(f"not one of {cfg.label_values}", values.index[bad].tolist())] if bad.any() else []
    objective = cfg.tuning.objective
    _, masks = check_regression_label(values, objective)
    return [
        (_OUTCOME_RULES[rule].format(objective=objective), values.index[mask.to_numpy()].tolist())
        for rule, mask in masks.items()
        if mask.any()
    ]


def _rows(index: list[int]) -> str:
    """1-based row numbers as a person counts them in the file."""
    shown = ", ".join(str(i + 1) for i in index[:MAX_LISTED_ROWS])
    more = len(index) - MAX_LISTED_ROWS
    return shown + (f" and {more} more" if more > 0 else "")

"""Scoring-stage tasks: the verified champion, contract-checked input, scores with SHAP, the
prediction log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig
from mlsteward.config.settings import scored_dir
from mlsteward.data.contract import check_contract, enforce, read_source
from mlsteward.data.ingestion import write_quarantine
from mlsteward.data.state import SnapshotInfo, current_snapshot
from mlsteward.errors import (
    AliasMismatchError,
    ContractViolation,
    MlstewardError,
    NotFoundError,
    PromotionError,
)
from mlsteward.features.online import online_features
from mlsteward.features.repo import snapshot_entity_dtype
from mlsteward.features.retrieval import ROW_ID, get_training_frame
from mlsteward.governance import promotion as governance
from mlsteward.governance.registry import VerifiedModel
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.published import write_whole
from mlsteward.monitoring.scoring import (
    PREDICTION_COLUMN,
    PROBA_COLUMN,
    ScoredBatch,
    score_frame,
)
from mlsteward.monitoring.specs import ScoringWindow
from tasks.common import artifact_key, run_logger

MAX_LISTED_ROWS = 10


@task(name="load-champion", cache_policy=NO_CACHE)
def load_champion(cfg: ModelConfig, actor: str) -> VerifiedModel:
    """The champion from bytes whose SHA-256 matched (a mismatch is audited and refused)."""
    try:
        verified = governance.load_version(cfg.name, "champion", actor=actor)
    except AliasMismatchError:
        raise  # the registry disagrees with the record: say so, not "no champion"
    except PromotionError as exc:
        raise NotFoundError(
            f"{cfg.name} has no champion yet: train and promote a version first"
        ) from exc
    run_logger().info(
        "scoring with %s v%s (sha256 %s… verified)", cfg.name, verified.info.version,
        verified.sha256[:12],
    )  # fmt: skip
    return verified


def contract_checked(
    cfg: ModelConfig, frame: pd.DataFrame, source: str, *, require_label: bool = False
) -> pd.DataFrame:
    """Scoring and drift input passes the training contract (the label may be absent); bad
    rows are quarantined as at ingestion."""
    if not cfg.source.timestamp and cfg.timestamp_column not in frame.columns:
        frame = frame.assign(**{cfg.timestamp_column: pd.Timestamp(datetime.now(UTC))})
    result = check_contract(frame, cfg, source=source, require_label=require_label)
    write_quarantine(cfg, result.quarantined, Path(source))
    good = enforce(result).good
    log = run_logger()
    if result.report.bad_rows:
        log.warning("%s of %s input rows quarantined", result.report.bad_rows, len(frame))
    return good


@task(name="read-scoring-input", cache_policy=NO_CACHE)
def read_scoring_input(cfg: ModelConfig, source: str) -> pd.DataFrame:
    path = Path(source).expanduser().resolve()
    return contract_checked(cfg, read_source(path, cfg), str(path))


@task(name="online-scoring-input", cache_policy=NO_CACHE)
def online_scoring_input(cfg: ModelConfig) -> pd.DataFrame:
    """Latest online feature values of every entity in the current snapshot."""
    snap = current_snapshot(cfg.name)
    if snap is None:
        raise MlstewardError(f"{cfg.name} has no ingested data: nothing to score online")
    ids = pd.read_parquet(snap.path, columns=[cfg.source.entity])[cfg.source.entity].unique()
    frame = online_features(cfg, ids.tolist())
    frame[cfg.timestamp_column] = pd.Timestamp(datetime.now(UTC))
    run_logger().info("online features for %d entities", len(frame))
    return contract_checked(cfg, frame, f"online-store:{cfg.feature_service_name}")


def _row_numbers(index: list[int]) -> str:
    """1-based row numbers as a person counts them in the file."""
    shown = ", ".join(str(i + 1) for i in index[:MAX_LISTED_ROWS])
    more = len(index) - MAX_LISTED_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


def _scored_snapshot(cfg: ModelConfig) -> SnapshotInfo:
    snap = current_snapshot(cfg.name)
    if snap is None:
        raise MlstewardError(f"{cfg.name} has no ingested data: nothing to score offline")
    return snap


def _offline_features(cfg: ModelConfig, entities: pd.Series, times: pd.Series) -> pd.DataFrame:
    """Point-in-time features as of each row's own time, rows in input order.

    Rows Feast cannot fill (the entity has no feature row at or before that time) come back
    with null features, so the data contract, not the join, decides what happens to them.
    """
    query = pd.DataFrame(
        {
            ROW_ID: np.arange(len(entities), dtype="int64"),
            cfg.source.entity: entities.to_numpy(),
            cfg.timestamp_column: times.astype("datetime64[us, UTC]").array,
        }
    )
    frame = get_training_frame(cfg, query, with_label=False)
    filled = frame[cfg.feature_names].notna().any(axis=1)
    run_logger().info(
        "offline features for %d rows (%d with no feature values at their time)",
        len(frame), int((~filled).sum()),
    )  # fmt: skip
    return frame.drop(columns=ROW_ID)


def _entity_ids(
    cfg: ModelConfig, snap: SnapshotInfo, raw: pd.Series
) -> tuple[pd.Series, list[int]]:
    """Ids typed like the snapshot's entity column (CSV gives text), and rows that are not."""
    if snapshot_entity_dtype(cfg, Path(snap.path)) == "int64":
        numeric = pd.to_numeric(raw, errors="coerce")
        bad = numeric.isna() | (np.mod(numeric.fillna(0), 1) != 0)
        return numeric.where(~bad, 0).astype("int64"), raw.index[bad].tolist()
    text = raw.astype("string").str.strip()
    bad = (text.isna() | text.eq("")).fillna(True).astype(bool)
    return text.where(~bad, ""), raw.index[bad].tolist()


def _event_times(raw: pd.Series) -> pd.Series:
    """Event times in UTC (naive taken as UTC), parsed as the data contract parses them."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
    return pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")


@task(name="entity-scoring-input", cache_policy=NO_CACHE)
def entity_scoring_input(cfg: ModelConfig, entities: str) -> tuple[pd.DataFrame, str]:
    """Offline features point-in-time as of each listed (entity, event time), contract-checked.

    Returns:
        The checked frame and the source to record (feature service and entity file).

    Raises:
        ContractViolation: the file lacks the entity or event-time column, or rows carry an
            unparsable id or time (named by 1-based row number); nothing is scored then.
    """
    path = Path(entities).expanduser().resolve()
    snap = _scored_snapshot(cfg)
    raw = read_source(path, cfg).reset_index(drop=True)
    entity, ts = cfg.source.entity, cfg.timestamp_column
    missing = [c for c in (entity, ts) if c not in raw.columns]
    if missing:
        raise ContractViolation(
            f"{path}: missing column(s) {missing}; an entity file needs {[entity, ts]}"
        )
    ids, bad_ids = _entity_ids(cfg, snap, raw[entity])
    times = _event_times(raw[ts])
    bad_times = raw.index[times.isna()].tolist()
    problems = []
    if bad_ids:
        problems.append(f"missing or malformed {entity!r} in row(s) {_row_numbers(bad_ids)}")
    if bad_times:
        problems.append(f"unparsable {ts!r} in row(s) {_row_numbers(bad_times)}")
    if problems:
        raise ContractViolation(f"{path}: " + "; ".join(problems) + "; nothing was scored")
    source = f"offline-store:{cfg.feature_service_name} entities={path}"
    frame = _offline_features(cfg, ids, times)
    return contract_checked(cfg, frame, source), source


@task(name="window-scoring-input", cache_policy=NO_CACHE)
def window_scoring_input(cfg: ModelConfig, window: ScoringWindow) -> tuple[pd.DataFrame, str]:
    """The current snapshot's entity rows inside ``window``, with offline features as of each
    row's time: re-scores a past period as the model would have seen it.

    Returns:
        The checked frame and the source to record (feature service and window).

    Raises:
        MlstewardError: no snapshot, or no snapshot row falls inside the window (the message
            names the window and the snapshot's time range).
    """
    snap = _scored_snapshot(cfg)
    entity, ts = cfg.source.entity, cfg.timestamp_column
    rows = pd.read_parquet(snap.path, columns=[entity, ts])
    times = _event_times(rows[ts])
    inside = window.contains(times)
    if not inside.any():
        raise MlstewardError(
            f"no {cfg.name} entity rows in the scoring window {window.label} (start "
            f"inclusive, end exclusive): data version {snap.digest[:12]} spans "
            f"{snap.min_timestamp} .. {snap.max_timestamp}"
        )
    source = f"offline-store:{cfg.feature_service_name} {window.label}"
    frame = _offline_features(cfg, rows.loc[inside, entity], times[inside])
    return contract_checked(cfg, frame, source), source


@task(name="score-batch", cache_policy=NO_CACHE)
def score_batch(cfg: ModelConfig, verified: VerifiedModel, frame: pd.DataFrame) -> ScoredBatch:
    return score_frame(cfg, verified, frame)


def _rounded(value: float) -> float:
    return round(float(value), 6)


def prediction_summary(scored: ScoredBatch) -> dict[str, Any]:
    """The batch's predictions in a few numbers: a classifier's mean probability and positive
    rate at its threshold; a regression model's mean, median and 95th percentile prediction
    (in the label's units). None where the batch has no rows."""
    frame = scored.frame
    if scored.threshold is None:
        values = frame[PREDICTION_COLUMN].to_numpy(dtype=np.float64)
        some = len(values) > 0
        return {
            "mean_prediction": _rounded(values.mean()) if some else None,
            "median_prediction": _rounded(np.median(values)) if some else None,
            "p95_prediction": _rounded(np.quantile(values, 0.95)) if some else None,
        }
    proba = frame[PROBA_COLUMN]
    return {
        "mean_probability": _rounded(proba.mean()) if len(proba) else None,
        "positive_rate": _rounded((proba >= scored.threshold).mean()) if len(proba) else None,
        "threshold": scored.threshold,
    }


@task(name="record-scores", cache_policy=NO_CACHE)
def record_scores(cfg: ModelConfig, scored: ScoredBatch, source: str, actor: str) -> dict[str, Any]:
    """The scored parquet, the prediction-log batch, the audit record, a Prefect artifact."""
    batch_id = prediction_log.new_id()
    # published whole: a run killed mid-write leaves no torn file under a finished one's name
    out = write_whole(
        scored_dir(cfg.name) / f"scored-{batch_id}.parquet",
        lambda tmp: scored.frame.to_parquet(tmp, index=False),
    )
    log_path = prediction_log.append(cfg.name, scored.frame, batch_id=batch_id)
    summary = {
        "model": cfg.name,
        "version": scored.version,
        "batch_id": batch_id,
        "rows": len(scored.frame),
        "source": source,
        "scored_path": str(out),
        "prediction_log_path": str(log_path),
        **prediction_summary(scored),
        "top_k": scored.top_k,
    }
    with governance.open_audit() as audit:
        audit.append(
            Action.BATCH_SCORED, model=cfg.name, version=scored.version, actor=actor,
            reason=f"{summary['rows']} rows from {source}", details=summary,
        )  # fmt: skip
    create_markdown_artifact(
        key=artifact_key(cfg.name, "scores"),
        markdown="\n".join(
            [f"# {cfg.name} v{scored.version}: batch {batch_id}", "", "| | |", "|---|---|"]
            + [f"| {k} | {v} |" for k, v in summary.items()]
        ),
        description=f"Scored {summary['rows']} rows with {cfg.name} v{scored.version}",
    )
    run_logger().info("scored %d rows -> %s", summary["rows"], out)
    return summary

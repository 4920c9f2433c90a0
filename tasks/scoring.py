"""Scoring-stage tasks: the verified champion, contract-checked input, scores with SHAP, the
prediction log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward import feast_adapter, governance, prediction_log
from mlsteward.audit import Action
from mlsteward.config import ModelConfig
from mlsteward.contract import check_contract, enforce, read_source
from mlsteward.errors import MlstewardError, NotFoundError, PromotionError
from mlsteward.ingestion import write_quarantine
from mlsteward.registry import VerifiedModel
from mlsteward.scoring import ScoredBatch, score_frame
from mlsteward.settings import scored_dir
from mlsteward.state import current_snapshot
from tasks.common import artifact_key, run_logger


@task(name="load-champion", cache_policy=NO_CACHE)
def load_champion(cfg: ModelConfig, actor: str) -> VerifiedModel:
    """The champion from bytes whose SHA-256 matched (a mismatch is audited and refused)."""
    try:
        verified = governance.load_version(cfg.name, "champion", actor=actor)
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
    frame = feast_adapter.online_features(cfg, ids.tolist())
    frame[cfg.timestamp_column] = pd.Timestamp(datetime.now(UTC))
    run_logger().info("online features for %d entities", len(frame))
    return contract_checked(cfg, frame, f"online-store:{cfg.feature_service_name}")


@task(name="score-batch", cache_policy=NO_CACHE)
def score_batch(cfg: ModelConfig, verified: VerifiedModel, frame: pd.DataFrame) -> ScoredBatch:
    return score_frame(cfg, verified, frame)


@task(name="record-scores", cache_policy=NO_CACHE)
def record_scores(cfg: ModelConfig, scored: ScoredBatch, source: str, actor: str) -> dict[str, Any]:
    """The scored parquet, the prediction-log batch, the audit record, a Prefect artifact."""
    batch_id = prediction_log.new_id()
    out = scored_dir(cfg.name) / f"scored-{batch_id}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    scored.frame.to_parquet(out, index=False)
    log_path = prediction_log.append(cfg.name, scored.frame, batch_id=batch_id)
    proba = scored.frame["prediction_proba"]
    summary = {
        "model": cfg.name,
        "version": scored.version,
        "batch_id": batch_id,
        "rows": len(scored.frame),
        "source": source,
        "scored_path": str(out),
        "prediction_log_path": str(log_path),
        "mean_probability": round(float(proba.mean()), 6) if len(proba) else None,
        "positive_rate": round(float((proba >= scored.threshold).mean()), 6)
        if len(proba)
        else None,
        "threshold": scored.threshold,
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

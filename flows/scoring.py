"""Batch scoring: the verified champion scores contract-checked input, with SHAP
explanations, into a scored parquet and the prediction log that drift detection reads."""

from __future__ import annotations

from prefect import flow

from flows.governance import run_actor
from mlsteward.config import get_model_config
from tasks.scoring import (
    load_champion,
    online_scoring_input,
    read_scoring_input,
    record_scores,
    score_batch,
)


@flow(name="score-model", log_prints=True)
def scoring_flow(model: str = "heart_disease", source: str | None = None) -> dict:
    """Score MODEL's champion on SOURCE, or on the latest online features of every entity.

    Args:
        model: name of a model config in config/models.
        source: CSV or parquet in the model's source format (label optional); default: the
            online store's latest values for the entities of the current snapshot.
    """
    cfg = get_model_config(model)
    actor = run_actor()

    # 1. The champion, from verified bytes
    verified = load_champion(cfg, actor)
    # 2. Input through the same data contract as training
    frame = read_scoring_input(cfg, source) if source else online_scoring_input(cfg)
    # 3. Scores, labels, top-k SHAP; then the scored file, the prediction log, the audit trail
    scored = score_batch(cfg, verified, frame)
    return record_scores(cfg, scored, source or "online store", actor)

"""Batch scoring: the verified champion scores contract-checked input, with SHAP
explanations, into a scored parquet and the prediction log that drift detection reads."""

from __future__ import annotations

from prefect import flow

from flows.results import ScoringResult
from mlsteward.monitoring.specs import ScoringSpec
from tasks.common import run_actor
from tasks.lineage import lineage_hooks
from tasks.scoring import (
    entity_scoring_input,
    load_champion,
    online_scoring_input,
    read_scoring_input,
    record_scores,
    score_batch,
    window_scoring_input,
)


@flow(name="score-model", log_prints=True, **lineage_hooks("scoring"))
def scoring_flow(
    model: str = "heart_disease",
    source: str | None = None,
    entities: str | None = None,
    start: str | None = None,
    end: str | None = None,
    requested_by: str | None = None,
) -> ScoringResult:
    """Score MODEL's champion on one input: a file, an entity list or a time frame from the
    offline store, or (none given) the latest online features of every entity.

    Args:
        model: name of a model config in config/models.
        source: CSV or parquet in the model's source format (label optional).
        entities: CSV or parquet with the entity and event-time columns; features come from
            the offline store as of each row's time.
        start: ISO-8601 start (inclusive; UTC if naive) of a frame of the current snapshot's
            entity rows, scored with offline features as of their times.
        end: ISO-8601 end (exclusive) of that frame.
        requested_by: the principal this run acts for (``user:alice``).

    Raises:
        MlstewardError: more than one input was given, or the window does not parse; checked
            before anything is loaded, so nothing is scored or logged.
    """
    # 0. The run's settings: one input, checked before anything is loaded
    spec = ScoringSpec.resolve(
        model, actor=run_actor(requested_by), source=source, entities=entities, start=start, end=end
    )
    cfg = spec.cfg

    # 1. The champion, from verified bytes
    verified = load_champion(cfg, spec.actor)
    # 2. Input through the same data contract as training
    if spec.source:
        frame, label = read_scoring_input(cfg, spec.source), spec.source
    elif spec.entities:
        frame, label = entity_scoring_input(cfg, spec.entities)
    elif spec.window is not None:
        frame, label = window_scoring_input(cfg, spec.window)
    else:
        frame, label = online_scoring_input(cfg), "online store"
    # 3. Scores, labels, top-k SHAP; then the scored file, the prediction log, the audit trail
    scored = score_batch(cfg, verified, frame)
    return ScoringResult.model_validate(record_scores(cfg, scored, label, spec.actor))

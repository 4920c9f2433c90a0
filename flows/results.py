"""What the flows return: typed results the CLI formats and tests read.

Each result dumps (``model_dump()``) to the document the flow's ``--json`` output has always
shown: the same keys, a key that does not apply absent rather than null. The results of the
ingestion, materialize, governance, rollout and reproduction flows are their rooms' own types
(``mlsteward.data.ingestion.IngestionResult``, ``mlsteward.features.materialize.
MaterializeResult``, ``mlsteward.governance.policy.GovernanceOutcome``,
``mlsteward.governance.promotion.PromotionResult``, ``mlsteward.rollout.machine.RolloutResult``,
``mlsteward.training.reproduce.ReproductionResult``): the ingestion flows import nothing of
governance or training, so ``mlsteward ingest`` starts without MLflow or XGBoost.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.governance.registry import TrainedVersion


class TrainingResult(TrainedVersion):
    """A registered version with its lineage, and what governance decided about it."""

    governance: GovernanceOutcome


_CLASSIFICATION_SCORES = ("mean_probability", "positive_rate", "threshold")
_REGRESSION_SCORES = ("mean_prediction", "median_prediction", "p95_prediction")


class ScoringResult(BaseModel):
    """One scored batch: where its rows went and their numbers.

    A classifier's batch has ``mean_probability``, ``positive_rate`` and ``threshold``; a
    regression model's has ``mean_prediction``, ``median_prediction`` and ``p95_prediction`` (in
    the label's units) instead. The other kind's keys are absent from the dump.
    """

    model: str
    version: str
    batch_id: str
    rows: int
    source: str
    scored_path: str
    prediction_log_path: str
    mean_probability: float | None = None
    positive_rate: float | None = None
    threshold: float | None = None
    mean_prediction: float | None = None
    median_prediction: float | None = None
    p95_prediction: float | None = None
    top_k: int

    @property
    def is_regression(self) -> bool:
        return self.threshold is None

    @model_serializer(mode="wrap")
    def _task_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the numbers of the model's own task, in the order the document has always had."""
        data: dict[str, Any] = handler(self)
        absent = _CLASSIFICATION_SCORES if self.is_regression else _REGRESSION_SCORES
        return {k: v for k, v in data.items() if k not in absent}


class DriftDecisionRecord(BaseModel):
    retrain: bool
    reasons: list[str]


class RetrainOutcome(BaseModel):
    """Whether drift started a retraining run, and how."""

    triggered: bool
    reason: str
    mode: str | None = None
    """``deployment`` (an event the training deployment's trigger answers) or ``subflow``."""
    event_id: str | None = None
    training: GovernanceOutcome | None = None
    """The retraining subflow's governance decision."""

    @model_serializer(mode="wrap")
    def _present_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``mode`` once a retrain started, ``event_id`` with an event, ``training`` with a
        subflow; otherwise absent."""
        data: dict[str, Any] = handler(self)
        keep = {"triggered", "reason"}
        keep |= {"mode"} if self.mode is not None else set()
        keep |= {"event_id"} if self.mode == "deployment" else set()
        keep |= {"training"} if self.training is not None else set()
        return {k: v for k, v in data.items() if k in keep}


class DriftRunResult(BaseModel):
    """The drift report's numbers, the policy's decision and what followed.

    The report's keys are ``DriftResult.to_dict``'s; a key the report gains later is kept as it
    comes (``extra="allow"``) until it is declared here.
    """

    model_config = ConfigDict(extra="allow")

    columns: dict[str, Any]
    """Per compared column: method, score, threshold, verdict."""
    drifted_columns: list[str]
    dataset_drift_share: float | None
    prediction_drift: dict[str, Any] | None
    target_drift: dict[str, Any] | None
    performance: dict[str, Any] | None
    """Quality on the labelled rows of both windows, when there are labels."""
    rows: dict[str, Any]
    sampling: Any
    report_path: str | None
    report_uri: str | None
    notes: list[str]
    decision: DriftDecisionRecord
    retrain: RetrainOutcome | None = None
    alerts: list[dict[str, Any]] = []
    """The standing rules this run judged (drift, PSI, output, quality) and what each did."""

"""Scoring a registered version on a holdout, the input every validation gate reads.

The challenger and the champion are scored on the *same* rows (the challenger's holdout: the
most recent data), each with its own recorded feature encoding and (classification) decision
threshold, from artifacts whose SHA-256 was verified first. Comparing each model's own test
score would compare different data. A regression model predicts numbers and has no threshold.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import encode
from mlsteward.governance import registry
from mlsteward.governance.evaluation import evaluate_holdout
from mlsteward.governance.evaluation_format import attach
from mlsteward.governance.fairness import AttributeFairness, assess_fairness, fairness_values
from mlsteward.governance.gates import GateResult
from mlsteward.governance.registry import VerifiedModel, VersionInfo
from mlsteward.governance.threshold_gate import metric_threshold_gate
from mlsteward.training.metrics import evaluate_for

HOLDOUT_ARTIFACT = "holdout/test_predictions.parquet"


@dataclass
class HoldoutScore:
    """One model's numbers on one holdout."""

    version: str
    threshold: float | None
    """The classification cut-off the metrics and fairness used; None for regression."""
    metrics: dict[str, float]
    fairness: dict[str, AttributeFairness]
    evaluation: dict[str, Any] | None = field(default=None, repr=False)
    """The curves, bins and samples behind the metrics (:mod:`~mlsteward.governance.evaluation`)."""

    def gated_fairness(self, cfg: ModelConfig) -> dict[str, dict[str, float]]:
        """Only the metrics the config gates: reported-only ones swing with the cut-off alone
        (e.g. across age groups), so comparing them would reject good challengers on noise."""
        return fairness_values(self.fairness, cfg)


def load_holdout(info: VersionInfo) -> pd.DataFrame:
    """The test split recorded with a version (raw features, label, entity and time)."""
    with tempfile.TemporaryDirectory(prefix="mlsteward-holdout-") as d:
        path = registry.download_run_file(info.run_id, HOLDOUT_ARTIFACT, Path(d))
        return pd.read_parquet(path)


def score_holdout(
    cfg: ModelConfig, verified: VerifiedModel, holdout: pd.DataFrame, *, explain: bool = True
) -> HoldoutScore:
    """Predict with a verified model (at its own threshold, for classification); metrics,
    fairness and the evaluation behind them on the rows (``explain``: with a SHAP sample, which
    only the version being validated needs).

    Raises:
        MlstewardError: the model's task is not the config's, or the holdout lacks a feature
            the model needs (e.g. the champion was trained on a feature the current config
            dropped) or a sensitive column the fairness gate groups by: the versions are not
            comparable, or not judged.
    """
    label = f"{cfg.name} v{verified.info.version}"
    if verified.is_regression != cfg.is_regression:
        kind = "regression" if verified.is_regression else "classification"
        raise MlstewardError(
            f"{label} is a {kind} model ({verified.objective}) but the config's task is "
            f"{cfg.task}: it cannot be judged by this config's gates"
        )
    enc = verified.info.encoding
    missing = [c for c in enc.columns if c not in holdout.columns]
    if missing:
        raise MlstewardError(
            f"{label} needs feature(s) {missing} that the holdout "
            "does not have; it cannot be scored on the same rows"
        )
    absent = [a.column for a in cfg.sensitive_attributes if a.column not in holdout.columns]
    if absent:
        raise MlstewardError(
            f"{label}: the holdout has no sensitive column(s) {absent}, so fairness across them "
            "cannot be assessed; a version trained before the column was configured (or "
            "carried beside the features) must be retrained to be validated"
        )
    x = encode(holdout, enc)
    threshold: float | None
    prediction = verified.predict(x)
    if cfg.is_regression:
        y = holdout[cfg.label].to_numpy().astype("float64")
        threshold = None  # the decision_threshold tag is classification's only
    else:
        y = holdout[cfg.label].to_numpy().astype(int)
        threshold = verified.info.decision_threshold
    metrics = evaluate_for(cfg, y, prediction, threshold)
    fairness = assess_fairness(holdout, y, prediction, threshold, cfg)
    evaluation = evaluate_holdout(
        cfg, verified, x, y, prediction, threshold, metrics, fairness, holdout, explain=explain
    )
    return HoldoutScore(verified.info.version, threshold, metrics, fairness, evaluation)


def holdout_metrics_gate(cfg: ModelConfig, score: HoldoutScore) -> GateResult:
    """The metric-threshold gate on a score, carrying the evaluation its metrics came from,
    so the stored report can be drawn (``mlsteward.report.charts``)."""
    return attach(metric_threshold_gate(score.metrics, cfg.thresholds), score.evaluation)

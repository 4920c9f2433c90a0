"""Scoring a registered version on a holdout, the input every validation gate reads.

The challenger and the champion are scored on the *same* rows (the challenger's holdout: the
most recent data), each with its own recorded feature encoding and decision threshold, from
artifacts whose SHA-256 was verified first. Comparing each model's own test score would compare
different data.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import encode
from mlsteward.governance import registry
from mlsteward.governance.fairness import AttributeFairness, assess_fairness, fairness_values
from mlsteward.governance.registry import VerifiedModel, VersionInfo
from mlsteward.training.metrics import evaluate

HOLDOUT_ARTIFACT = "holdout/test_predictions.parquet"


@dataclass
class HoldoutScore:
    """One model's numbers on one holdout."""

    version: str
    threshold: float
    metrics: dict[str, float]
    fairness: dict[str, AttributeFairness]

    def gated_fairness(self, cfg: ModelConfig) -> dict[str, dict[str, float]]:
        """Only the metrics the config gates: reported-only ones swing with the cut-off alone
        (e.g. across age groups), so comparing them would reject good challengers on noise."""
        return fairness_values(self.fairness, cfg)


def load_holdout(info: VersionInfo) -> pd.DataFrame:
    """The test split recorded with a version (raw features, label, entity and time)."""
    with tempfile.TemporaryDirectory(prefix="mlsteward-holdout-") as d:
        path = registry.download_run_file(info.run_id, HOLDOUT_ARTIFACT, Path(d))
        return pd.read_parquet(path)


def score_holdout(cfg: ModelConfig, verified: VerifiedModel, holdout: pd.DataFrame) -> HoldoutScore:
    """Predict with a verified model at its own threshold; metrics and fairness on the rows.

    Raises:
        MlstewardError: the holdout lacks a feature the model needs (e.g. the champion was
            trained on a feature the current config dropped): the versions are not comparable.
    """
    enc = verified.info.encoding
    missing = [c for c in enc.columns if c not in holdout.columns]
    if missing:
        raise MlstewardError(
            f"{cfg.name} v{verified.info.version} needs feature(s) {missing} that the holdout "
            "does not have; it cannot be scored on the same rows"
        )
    proba = verified.model.predict_proba(encode(holdout, enc))[:, 1]
    y = holdout[cfg.label].to_numpy().astype(int)
    threshold = verified.info.decision_threshold
    metrics = evaluate(y, proba, threshold)
    fairness = assess_fairness(holdout, y, proba, threshold, cfg)
    return HoldoutScore(verified.info.version, threshold, metrics, fairness)

"""A verified model version, ready to score rows of plain Python values with no pandas.

Batch scoring (``mlsteward.monitoring.scoring``) goes through pandas and ``shap.TreeExplainer``;
that is
right for thousands of rows and costs about five times the latency of a one-row request. Here
the same recorded encoding is applied value by value into a float32 matrix, predictions come
from ``Booster.inplace_predict`` (what ``XGBClassifier.predict_proba`` and
``XGBRegressor.predict`` call, so the numbers are identical to batch scoring) and explanations
from one ``pred_contribs`` pass, XGBoost's exact TreeSHAP, the same values
``shap.TreeExplainer`` returns for XGBoost models.

A classifier's prediction is the probability of the positive label, explained in log-odds; a
regression model's is the predicted value, explained in the label's units (a log-link model's
contributions restated by ``monitoring.contributions.in_target_units``, so that they add up to
the prediction as an identity link's do).

Probabilities run single-threaded: requests are already scored in batches by one event loop,
and XGBoost's thread pool costs more than it saves on a few rows (0.7 ms vs 0.2 ms a row).
Explanations run on a copy of the booster with ``serving.shap_threads`` threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from mlsteward.config.models import ModelConfig
from mlsteward.errors import ConfigError
from mlsteward.governance.registry import VerifiedModel
from mlsteward.monitoring.contributions import in_target_units


@dataclass(frozen=True)
class Explanation:
    """Per row: contributions (feature order of the model) and the base value they add to; in
    log-odds for a classifier, in the label's units for a regression model."""

    contributions: np.ndarray
    base_values: np.ndarray


@dataclass(frozen=True)
class ServedModel:
    model: str
    version: str
    sha256: str
    threshold: float | None  # None for a regression model: it has no labels
    negative: int
    positive: int
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    codes: Mapping[str, Mapping[str, int]]
    booster: xgb.Booster
    explainer: xgb.Booster
    regression: bool = False
    objective: str = "binary:logistic"

    @classmethod
    def from_verified(cls, cfg: ModelConfig, verified: VerifiedModel) -> ServedModel:
        """The version ready to serve; a version of the other task than the config's is
        refused (its answers and log rows would not be the ones clients and monitoring read).
        """
        regression = verified.is_regression
        if regression != cfg.is_regression:
            kind = "regression" if regression else "binary_classification"
            raise ConfigError(
                f"{cfg.name} v{verified.info.version} is a {kind} model ({verified.objective}), "
                f"but the config's task is {cfg.task}: it is not served"
            )
        enc = verified.info.encoding
        booster = verified.model.get_booster()
        booster.set_param({"nthread": 1})
        # Exact SHAP is the one cost that grows with the batch (0.6 ms a row on the demo
        # model): it gets the cores, split over rows, while probabilities stay on one thread.
        explainer = booster.copy()
        explainer.set_param({"nthread": cfg.serving.shap_threads or os.cpu_count() or 1})
        negative, positive = cfg.label_values
        return cls(
            model=cfg.name,
            version=str(verified.info.version),
            sha256=verified.sha256,
            threshold=None if regression else verified.info.decision_threshold,
            negative=int(negative),
            positive=int(positive),
            columns=tuple(enc.columns),
            kinds=tuple(enc.dtypes[c] for c in enc.columns),
            codes={c: {v: i for i, v in enumerate(cats)} for c, cats in enc.categories.items()},
            booster=booster,
            explainer=explainer,
            regression=regression,
            objective=verified.objective,
        )

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows of raw values to the model's matrix, as ``training.encode`` would: categories
        by their recorded code (unknown or missing: NaN), booleans as 0/1, numbers as float32.
        """
        out = np.empty((len(rows), len(self.columns)), dtype=np.float32)
        for j, (col, kind) in enumerate(zip(self.columns, self.kinds, strict=True)):
            if kind == "category":
                codes = self.codes[col]
                for i, row in enumerate(rows):
                    v = row.get(col)
                    out[i, j] = math.nan if v is None else codes.get(str(v), math.nan)
            else:
                for i, row in enumerate(rows):
                    v = row.get(col)
                    out[i, j] = math.nan if v is None else float(v)
        return out

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Per row: the probability of the positive label, or the predicted value."""
        if not len(matrix):
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64).reshape(-1)

    def _dmatrix(self, matrix: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(
            matrix,
            feature_names=list(self.columns),
            feature_types=self._feature_types,
            enable_categorical=True,
            nthread=1,
        )

    def explain(self, matrix: np.ndarray) -> Explanation:
        """Exact TreeSHAP: contributions plus base value equal each row's margin."""
        return self._contributions(self._dmatrix(matrix))

    def predict_explained(self, matrix: np.ndarray) -> tuple[np.ndarray, Explanation]:
        """Predictions and explanations from one DMatrix: when every row is explained this
        saves ``inplace_predict``'s fixed cost (~0.35 ms a call on the demo model); the
        predictions are the same numbers (a test compares them with batch scoring's)."""
        dm = self._dmatrix(matrix)
        predicted = np.asarray(self.booster.predict(dm), dtype=np.float64).reshape(-1)
        return predicted, self._contributions(dm)

    def _contributions(self, dm: xgb.DMatrix) -> Explanation:
        raw = np.asarray(self.explainer.predict(dm, pred_contribs=True), dtype=np.float64)
        contributions, base_values = raw[:, :-1], raw[:, -1]
        if self.regression:  # a log link's margin is not in the label's units
            contributions, base_values = in_target_units(contributions, base_values, self.objective)
        return Explanation(contributions=contributions, base_values=base_values)

    @property
    def _feature_types(self) -> list[str]:
        return ["c" if k == "category" else "q" for k in self.kinds]

    def label(self, proba: float) -> int:
        """A classifier's label for a probability (never called for a regression model)."""
        assert self.threshold is not None
        return self.positive if proba >= self.threshold else self.negative


def top_contributions(
    columns: Sequence[str], values: np.ndarray, k: int
) -> list[tuple[str, float]]:
    """The ``k`` largest contributions by absolute value, largest first (ties: column order)."""
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return [(columns[i], float(values[i])) for i in order]

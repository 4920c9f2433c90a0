"""A built-in dataset's ground truth: a known linear predictor over its features, and the
concept shift that moves it.

Why one shape for all of them: the tests and the docs read the planted effects straight from
these numbers (a fitted model should recover their signs and rough sizes), and a concept shift
means the same thing for every dataset: the coefficients slide linearly from the reference
values to the shifted ones while the features stay as they are.

Numeric terms enter as ``value - centre`` (so the intercept describes a reference entity),
booleans as 0/1 and ``column=value`` terms as one-hot indicators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LinearTerms:
    """``intercept + sum(coefficient * term)``, at concept 0 and at full concept shift.

    Attributes:
        intercept: At concept 0.
        coefficients: Term -> coefficient at concept 0; ``col`` or ``col=level``.
        centers: Numeric column -> the value it is measured from (0 when absent).
        shifted_intercept: At concept 1.
        shifted_coefficients: Term -> coefficient at concept 1 (same terms).
    """

    intercept: float
    coefficients: Mapping[str, float]
    centers: Mapping[str, float]
    shifted_intercept: float
    shifted_coefficients: Mapping[str, float]

    def at(self, concept: float = 0.0) -> tuple[float, dict[str, float]]:
        """Intercept and coefficients at a concept-shift strength (0 reference, 1 shifted)."""
        c = float(concept)
        intercept = (1 - c) * self.intercept + c * self.shifted_intercept
        coefs = {
            t: (1 - c) * b + c * self.shifted_coefficients[t] for t, b in self.coefficients.items()
        }
        return intercept, coefs

    def evaluate(self, data: Mapping[str, Any] | pd.DataFrame, concept: float = 0.0) -> np.ndarray:
        """The noise-free linear predictor for every row of ``data`` (float64)."""
        intercept, coefs = self.at(concept)
        out: np.ndarray | None = None
        for term, beta in coefs.items():
            col, _, level = term.partition("=")
            values = np.asarray(data[col])
            if level:
                x = (values == level).astype(np.float64)
            else:
                x = values.astype(np.float64) - self.centers.get(col, 0.0)
            out = beta * x if out is None else out + beta * x
        assert out is not None
        return out + intercept

    def columns(self) -> set[str]:
        """The columns the predictor reads."""
        return {t.partition("=")[0] for t in self.coefficients}

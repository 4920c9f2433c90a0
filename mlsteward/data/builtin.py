"""The built-in datasets by model name: what ``mlsteward generate MODEL`` can write.

Why a registry: the command line, the demo and the tests ask for "the data of this model"
without knowing which module draws it, what its label is or whether a label shift is a positive
rate or a scaled mean; each entry answers those questions once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from mlsteward.data import synthetic
from mlsteward.data.synthetic_diabetes import DIABETES
from mlsteward.data.synthetic_engine import SyntheticDataset
from mlsteward.data.synthetic_readmission import READMISSION
from mlsteward.data.synthetic_shift import BaseShift


@dataclass(frozen=True)
class BuiltinData:
    """One model's built-in dataset.

    Attributes:
        model: The model name (``config/models/<model>.yaml``).
        task: ``binary_classification`` or ``regression``, as the config says.
        what: What the label means, in one line.
        dataset: How it is drawn (entity, timestamp, label and columns included); its
            ``generate_cohort`` and ``generate_batch`` are the ways to draw it.
    """

    model: str
    task: Literal["binary_classification", "regression"]
    what: str
    dataset: SyntheticDataset

    @property
    def generate_cohort(self) -> Callable[..., pd.DataFrame]:
        """``(n_rows, seed, start, months, shift, id_offset)`` -> the reference cohort."""
        return self.dataset.generate_cohort

    @property
    def generate_batch(self) -> Callable[..., pd.DataFrame]:
        """``(n_rows, seed, start, days, shift, id_offset)`` -> a later batch of new entities."""
        return self.dataset.generate_batch

    @property
    def label(self) -> str:
        return self.dataset.label

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def shift(
        self, covariate: dict[str, float], label_shift: float | None, concept: float
    ) -> BaseShift:
        """The dataset's shift; ``label_shift`` is the target positive rate of a binary label
        or the factor on a count outcome's mean. Raises ValueError naming what is wrong."""
        if self.regression:
            return self.dataset.shift_type(
                covariate=covariate, concept=concept, outcome_scale=label_shift
            )
        return self.dataset.shift_type(covariate=covariate, concept=concept, prevalence=label_shift)

    def summary(self, frame: pd.DataFrame) -> dict[str, Any]:
        """The label at a glance: ``positive_rate`` for a binary label, ``outcome`` (mean,
        median, p95) for a count."""
        y = frame[self.label]
        if not self.regression:
            return {"positive_rate": round(float(y.mean()), 4)}
        return {
            "outcome": {
                "column": self.label,
                "mean": round(float(y.mean()), 3),
                "median": float(y.median()),
                "p95": float(y.quantile(0.95)),
            }
        }


def describe_summary(summary: dict[str, Any]) -> str:
    """:meth:`BuiltinData.summary` in words, e.g. ``positive rate 17.4%`` or
    ``length_of_stay_days mean 4.36, median 3, p95 13``."""
    if "positive_rate" in summary:
        return f"positive rate {summary['positive_rate']:.1%}"
    o = summary["outcome"]
    return f"{o['column']} mean {o['mean']:.2f}, median {o['median']:g}, p95 {o['p95']:g}"


BUILTINS: dict[str, BuiltinData] = {
    data.model: data
    for data in (
        BuiltinData(
            "heart_disease",
            "binary_classification",
            "heart disease diagnosed at the visit (0/1)",
            synthetic.HEART_DISEASE,
        ),
        BuiltinData(
            "diabetes",
            "binary_classification",
            "type-2 diabetes starts within a year of the visit (0/1)",
            DIABETES,
        ),
        BuiltinData(
            "readmission",
            "regression",
            "length of stay of the next admission, in days",
            READMISSION,
        ),
    )
}


def builtin(model: str) -> BuiltinData:
    """The model's built-in dataset; a model without one is refused with the list of those
    that have one."""
    try:
        return BUILTINS[model]
    except KeyError:
        raise ValueError(
            f"{model!r} has no built-in dataset; the built-in ones are {', '.join(BUILTINS)}"
        ) from None

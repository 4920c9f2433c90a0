"""Controlled shifts of a built-in dataset, for drift and fairness monitoring.

Why here and not per dataset: a covariate, label or concept shift must mean the same thing for
every built-in dataset, so a drift test written against one reads the same against another.
Each dataset binds :class:`BaseShift` to its own columns (:class:`ShiftRules`), so a shift that
names a column the dataset does not have is refused when it is made, by name.

Label shift keeps P(x | y) and changes P(y) by **resampling rows** of a larger pool drawn with
the same seed: for a binary label exactly ``round(prevalence * n)`` positives
(:func:`pick_prevalence`); for a count outcome rows are drawn with weights ``exp(theta * y)``
(exponential tilting, :func:`pick_mean`), ``theta`` chosen so the sample mean is
``outcome_scale`` times the pool's. Either way the features move with the outcome mix, as they
do when a sicker (or healthier) population arrives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

#: How far a count outcome's mean may be scaled: beyond this the resampling pool would have to
#: be many times the batch, and a doubled or halved stay is already a drastic label shift.
OUTCOME_SCALE_RANGE = (0.5, 2.0)
#: The resampled mean is within this relative distance of the target, or the pool is redrawn.
MEAN_TOLERANCE = 0.005

_FLIP_KEYS = frozenset({"column", "value", "flip_positive_rate"})
_COUNT_KEYS = frozenset({"column", "value", "scale", "noise_sd"})


@dataclass(frozen=True)
class ShiftRules:
    """What a dataset's shifts may name.

    Attributes:
        numeric: Columns a covariate shift may move.
        groups: Columns a label distortion may select a group by (features and sensitive
            columns that are not features), with their categories (None: not categorical).
        regression: True for a numeric outcome (``outcome_scale``), False for a binary label
            (``prevalence``).
    """

    numeric: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...] | None]
    regression: bool = False

    @classmethod
    def of(
        cls,
        numeric: Mapping[str, object],
        categories: Mapping[str, tuple[str, ...]],
        columns: tuple[str, ...],
        regression: bool = False,
    ) -> ShiftRules:
        """Rules from a dataset's tables: its numeric columns, its categories and the columns
        a group may be chosen by (features, then sensitive columns)."""
        return cls(tuple(numeric), {col: categories.get(col) for col in columns}, regression)


@dataclass(frozen=True)
class BaseShift:
    """A controlled departure from a built-in dataset; each dataset's ``Shift`` sets ``rules``.

    Attributes:
        covariate: Numeric column -> additive shift in units of that column's standard deviation
            in the same (unshifted) sample. Only the named column moves (derived columns keep
            their values); shifted values are rounded and clipped into the config range again.
            The outcome is drawn from the shifted features: P(y | x) stays the same.
        prevalence: Binary label only: the target positive rate in (0, 1), hit exactly up to
            rounding by resampling (a label shift, see the module doc).
        concept: 0 = the reference ground truth, 1 = the dataset's concept-shifted one; values
            in between interpolate. Features are unchanged, only how outcomes follow from them.
        label_distortion: A systematically wrong label for one group. Binary:
            ``{"column": "sex", "value": "F", "flip_positive_rate": 0.5}`` turns half of the
            group's positives into 0 (under-diagnosis). Count outcome:
            ``{"column": "race", "value": "black", "scale": 0.6, "noise_sd": 3.0}`` records the
            group's outcomes as ``round(scale * y + N(0, noise_sd))``, at least 0 (biased and
            noisier records). Every other row is left alone.
        outcome_scale: Count outcome only: the mean outcome becomes this multiple of what it
            would have been, in [0.5, 2], by resampling (a label shift, see the module doc).
    """

    covariate: dict[str, float] = field(default_factory=dict)
    prevalence: float | None = None
    concept: float = 0.0
    label_distortion: dict[str, Any] | None = None
    outcome_scale: float | None = None

    rules: ClassVar[ShiftRules]

    def __post_init__(self) -> None:
        rules = self.rules
        for col, k in self.covariate.items():
            if col not in rules.numeric:
                raise ValueError(
                    f"covariate shift: {col!r} is not a numeric feature "
                    f"(numeric features: {sorted(rules.numeric)})"
                )
            if not math.isfinite(float(k)):
                raise ValueError(f"covariate shift for {col!r} must be finite, got {k!r}")
        self._check_label_shift(rules.regression)
        if not 0.0 <= float(self.concept) <= 1.0:
            raise ValueError(f"concept must be between 0 and 1, got {self.concept}")
        if self.label_distortion is not None:
            _check_distortion(self.label_distortion, rules)

    def _check_label_shift(self, regression: bool) -> None:
        if regression and self.prevalence is not None:
            raise ValueError(
                "prevalence is a positive rate of a binary label; this outcome is a count: "
                "shift its mean with outcome_scale"
            )
        if not regression and self.outcome_scale is not None:
            raise ValueError(
                "outcome_scale scales a count outcome; this label is binary: use prevalence"
            )
        if self.prevalence is not None and not 0.0 < float(self.prevalence) < 1.0:
            raise ValueError(f"prevalence must be strictly between 0 and 1, got {self.prevalence}")
        lo, hi = OUTCOME_SCALE_RANGE
        if self.outcome_scale is not None and not lo <= float(self.outcome_scale) <= hi:
            raise ValueError(
                f"outcome_scale must be between {lo} and {hi}, got {self.outcome_scale}"
            )

    @property
    def label_shift(self) -> float | None:
        """The prevalence or outcome scale asked for, whichever the task has."""
        return self.outcome_scale if self.rules.regression else self.prevalence


def _check_distortion(d: Mapping[str, Any], rules: ShiftRules) -> None:
    expected = _COUNT_KEYS if rules.regression else _FLIP_KEYS
    if set(d) != expected:
        raise ValueError(
            f"label_distortion needs exactly the keys {sorted(expected)}, got {sorted(d)}"
        )
    if d["column"] not in rules.groups:
        raise ValueError(
            f"label_distortion: {d['column']!r} is not a feature or sensitive column "
            f"({sorted(rules.groups)})"
        )
    cats = rules.groups[d["column"]]
    if cats is not None and d["value"] not in cats:
        raise ValueError(
            f"label_distortion: {d['value']!r} is not a category of {d['column']!r} ({list(cats)})"
        )
    if rules.regression:
        if not (math.isfinite(float(d["scale"])) and float(d["scale"]) > 0.0):
            raise ValueError("label_distortion: scale must be a positive number")
        if not (math.isfinite(float(d["noise_sd"])) and float(d["noise_sd"]) >= 0.0):
            raise ValueError("label_distortion: noise_sd must be 0 or more")
    elif not 0.0 <= float(d["flip_positive_rate"]) <= 1.0:
        raise ValueError("label_distortion: flip_positive_rate must be between 0 and 1")


def distort_label(
    y: np.ndarray, cols: Mapping[str, np.ndarray], d: Mapping[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Apply a label distortion (see :class:`BaseShift`) to one group's rows."""
    n = len(y)
    group = np.asarray(cols[d["column"]]) == d["value"]
    if "flip_positive_rate" in d:
        u = rng.random(n)
        flip = group & (y == 1) & (u < float(d["flip_positive_rate"]))
        y[flip] = 0
        return y
    noisy = float(d["scale"]) * y + rng.normal(0.0, float(d["noise_sd"]), n)
    return np.where(group, np.maximum(np.rint(noisy), 0.0), y).astype(y.dtype)


def pick_prevalence(
    y: np.ndarray, n_rows: int, target: float, rng: np.random.Generator
) -> np.ndarray | None:
    """Exactly ``round(target * n_rows)`` positives and the rest negatives from the pool ``y``,
    without replacement; None when the pool has too few of either."""
    k = round(target * n_rows)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    if len(pos) < k or len(neg) < n_rows - k:
        return None
    return np.concatenate(
        [rng.choice(pos, k, replace=False), rng.choice(neg, n_rows - k, replace=False)]
    )


def pick_mean(
    y: np.ndarray, n_rows: int, scale: float, rng: np.random.Generator
) -> np.ndarray | None:
    """``n_rows`` rows of the pool whose mean outcome is ``scale`` times the pool's; None when
    the pool cannot reach it.

    Weighted sampling without replacement (Efraimidis-Spirakis keys ``u ** (1 / w)``) with
    weights ``exp(theta * z)``, ``z`` the standardised outcome. For fixed ``u`` a larger theta
    only ever swaps a lower outcome for a higher one, so the sample mean rises with theta and a
    bisection finds it.
    """
    y = y.astype(np.float64)
    target = float(scale) * float(y.mean())
    z = (y - y.mean()) / max(float(y.std()), 1e-12)
    log_u = np.log(rng.random(len(y)))

    def chosen(theta: float) -> np.ndarray:
        keys = log_u * np.exp(-theta * z)
        return np.argpartition(-keys, n_rows - 1)[:n_rows]

    lo, hi = -8.0, 8.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if y[chosen(mid)].mean() < target:
            lo = mid
        else:
            hi = mid
    keep = min((chosen(lo), chosen(hi)), key=lambda k: abs(y[k].mean() - target))
    if abs(y[keep].mean() - target) > MEAN_TOLERANCE * target:
        return None
    return np.sort(keep)

"""Fairness across sensitive groups: the one module that talks to fairlearn.

:func:`assess_fairness` turns a holdout (raw sensitive columns, outcomes, predictions) into our
own typed :class:`AttributeFairness` per configured attribute; :func:`fairness_gate` holds those
numbers against the configured limits and returns a :class:`~mlsteward.governance.gates.GateResult`.
fairlearn types never leave this module (design rule 7).

Classification and regression share the groups, the ``missing`` group and the
``min_group_size`` rule; they differ in what is compared across groups:

- Classification: labels are ``proba >= threshold`` (the model's chosen cut-off), as at serving
  time, and the groups' selection rates and error rates are compared (parity, equal
  opportunity, equalized odds).
- Regression: the groups' errors in the label's units are compared (mean absolute error, root
  mean squared error, mean residual = prediction - outcome, positive for over-prediction), and
  the worst group's MAE is fairlearn's bounded group loss. A model that is accurate on average
  can still be far worse for one group, which the overall RMSE hides.

Classification conventions:
- Groups smaller than ``fairness.min_group_size`` are reported with their numbers but left out
  of the group-level metrics: a rate measured on a handful of patients is noise, and gating on
  it would reject good models at random.
- A rate with no denominator is undefined, not zero: a group without positives has no true
  positive rate (fairlearn would report 0, which looks like the worst possible TPR). Such
  groups are left out of the metric that needs the rate; a metric with fewer than two groups
  to compare is ``None`` ("not assessable") and is reported, not gated, with a note.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import mean_absolute_error, roc_auc_score, root_mean_squared_error

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.governance import REGRESSION_FAIRNESS_METRICS, SensitiveAttribute
from mlsteward.governance.gates import (
    FAIRNESS,
    GateResult,
    Violation,
    as_number,
    fmt,
    fmt_pair,
    plain,
)
from mlsteward.governance.threshold_gate import bound_violation

MISSING = "missing"
FAIRNESS_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equalized_odds_difference",
)
# Which per-group numbers explain each metric (shown in violation messages).
_EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    "demographic_parity_difference": ("selection_rate",),
    "demographic_parity_ratio": ("selection_rate",),
    "equal_opportunity_difference": ("tpr",),
    "equalized_odds_difference": ("tpr", "fpr"),
    "mae_difference": ("mae",),
    "mae_ratio": ("mae",),
    "rmse_difference": ("rmse",),
    "rmse_ratio": ("rmse",),
    "mean_residual_difference": ("mean_residual",),
    "bounded_group_loss": ("mae",),
}
_SHORT = {
    "selection_rate": "selection rate",
    "tpr": "tpr",
    "fpr": "fpr",
    "mae": "mae",
    "rmse": "rmse",
    "mean_residual": "mean residual",
}
# The per-group numbers a violation carries, by task.
_CLASSIFICATION_GROUP_KEYS = ("size", "positives", "selection_rate", "tpr", "fpr", "roc_auc")
REGRESSION_GROUP_KEYS = ("size", "mae", "rmse", "mean_residual", "mean_prediction", "mean_outcome")


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


def _edge(x: float) -> str:
    return f"{x:g}"


def bucket_labels(attribute: SensitiveAttribute) -> list[str]:
    """Labels of a bucketed attribute, in bucket order: configured, or ``<45, 45-65, >=65``."""
    edges = attribute.buckets or []
    if attribute.labels is not None:
        return list(attribute.labels)
    if not edges:
        return []
    inner = [f"{_edge(a)}-{_edge(b)}" for a, b in itertools.pairwise(edges)]
    return [f"<{_edge(edges[0])}", *inner, f">={_edge(edges[-1])}"]


def group_labels(values: pd.Series, attribute: SensitiveAttribute) -> pd.Series:
    """The group of every row, as strings; missing values form the group ``"missing"``.

    Categorical (or un-bucketed) columns keep their values as text. A bucketed numeric column
    is cut at the configured inner edges, left-closed: with edges ``[45, 65]`` the age 45
    falls in ``45-65`` and 65 in ``>=65``.

    Args:
        values: The raw column.
        attribute: Its sensitive-attribute config (buckets, labels).

    Returns:
        A string Series with the same index.
    """
    if attribute.buckets is None:
        out = values.astype(object).where(values.notna(), MISSING)
        return out.map(lambda v: v if isinstance(v, str) else str(v)).astype(object)
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    labels = np.asarray(bucket_labels(attribute), dtype=object)
    codes = np.searchsorted(np.asarray(attribute.buckets, dtype=float), numeric.to_numpy(), "right")
    bucketed = labels[np.minimum(codes, len(labels) - 1)]
    bucketed = np.where(numeric.isna().to_numpy(), MISSING, bucketed)
    return pd.Series(bucketed, index=values.index, dtype=object, name=values.name)


def _group_order(labels: pd.Series, attribute: SensitiveAttribute) -> list[str]:
    present = set(labels.unique())
    if attribute.buckets is not None:
        ordered = [g for g in bucket_labels(attribute) if g in present]
    else:
        ordered = sorted(g for g in present if g != MISSING)
    return ordered + ([MISSING] if MISSING in present else [])


# --------------------------------------------------------------------------------------------
# Assessment
# --------------------------------------------------------------------------------------------


@dataclass
class AttributeFairness:
    """Fairness numbers of one sensitive attribute.

    Attributes:
        attribute: The column.
        metrics: The task's fairness metrics over the gated groups (``None`` = not assessable).
        groups: Per group: group, size, then for classification positives, selection_rate,
            tpr, fpr, roc_auc (``None`` where undefined), for regression mae, rmse,
            mean_residual (prediction - outcome), mean_prediction, mean_outcome; and gated
            (whether it counts towards ``metrics``).
        small_groups: Groups below ``min_group_size``: reported, not gated.
        note: Why a metric is not assessable, if one is not.
    """

    attribute: str
    metrics: dict[str, float | None]
    groups: list[dict[str, Any]]
    small_groups: list[str] = field(default_factory=list)
    note: str = ""

    def group(self, name: str) -> dict[str, Any]:
        for g in self.groups:
            if g["group"] == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "attribute": self.attribute,
                "metrics": self.metrics,
                "groups": self.groups,
                "small_groups": self.small_groups,
                "note": self.note,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttributeFairness:
        return cls(
            attribute=d["attribute"],
            metrics=dict(d["metrics"]),
            groups=[dict(g) for g in d["groups"]],
            small_groups=list(d.get("small_groups", [])),
            note=d.get("note", ""),
        )


def _positives(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sum(y_true))


def _safe_roc_auc(y_true: np.ndarray, y_pred: np.ndarray, *, y_score: np.ndarray) -> float:
    """ROC-AUC within a group; NaN when the group holds a single class (AUC undefined)."""
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(roc_auc_score(y_true, y_score))


def _finite(x: Any) -> float | None:
    return as_number(x)


def _group_table(
    labels: np.ndarray, y: np.ndarray, pred: np.ndarray, proba: np.ndarray
) -> pd.DataFrame:
    mf = MetricFrame(
        metrics={
            "size": count,
            "positives": _positives,
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "roc_auc": _safe_roc_auc,
        },
        y_true=y,
        y_pred=pred,
        sensitive_features=pd.Series(labels, name="group"),
        sample_params={"roc_auc": {"y_score": proba}},
    )
    return mf.by_group


def _spread(groups: list[dict[str, Any]], key: str, *, ratio: bool = False) -> float | None:
    """Largest minus smallest group rate (or smallest over largest), as fairlearn's
    ``between_groups`` aggregation computes it, read from the per-group table: the four
    classification metrics need no further passes over the holdout (each fairlearn call
    would rebuild a ``MetricFrame``, most of the gate's time on a large holdout)."""
    if len(groups) < 2:
        return None
    rates = [float(g[key]) for g in groups]
    low, high = min(rates), max(rates)
    if not ratio:
        return _finite(high - low)
    return _finite(low / high) if high > 0 else None


def _worst_spread(groups: list[dict[str, Any]], keys: tuple[str, ...]) -> float | None:
    """Equalized odds: the larger of the TPR and FPR spreads (fairlearn's ``worst_case``)."""
    spreads = [_spread(groups, k) for k in keys]
    defined = [x for x in spreads if x is not None]
    return max(defined) if len(defined) == len(keys) else None


def assess_attribute(
    values: pd.Series,
    y_true: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray,
    attribute: SensitiveAttribute,
    min_group_size: int,
) -> AttributeFairness:
    """Per-group numbers for one attribute, and the four metrics over its gated groups."""
    labels = group_labels(values.reset_index(drop=True), attribute)
    table = _group_table(labels.to_numpy(), y_true, pred, proba)
    groups: list[dict[str, Any]] = []
    for name in _group_order(labels, attribute):
        row = table.loc[name]
        size, positives = int(row["size"]), int(row["positives"])
        negatives = size - positives
        groups.append(
            {
                "group": name,
                "size": size,
                "positives": positives,
                "selection_rate": _finite(row["selection_rate"]),
                # fairlearn reports 0 for a rate with no denominator; it is undefined
                "tpr": _finite(row["tpr"]) if positives else None,
                "fpr": _finite(row["fpr"]) if negatives else None,
                "roc_auc": _finite(row["roc_auc"]),
                "gated": size >= min_group_size,
            }
        )
    gated = [g for g in groups if g["gated"]]
    small = [g["group"] for g in groups if not g["gated"]]
    with_pos = [g for g in gated if g["tpr"] is not None]
    with_both = [g for g in with_pos if g["fpr"] is not None]
    metrics: dict[str, float | None] = {
        "demographic_parity_difference": _spread(gated, "selection_rate"),
        "demographic_parity_ratio": _spread(gated, "selection_rate", ratio=True),
        "equal_opportunity_difference": _spread(with_pos, "tpr"),
        "equalized_odds_difference": _worst_spread(with_both, ("tpr", "fpr")),
    }
    notes = []
    if len(gated) < 2:
        notes.append(
            f"fewer than 2 groups with at least {min_group_size} rows "
            f"({len(gated)} of {len(groups)}): fairness across {attribute.column!r} "
            "cannot be assessed"
        )
    else:
        if len(with_pos) < len(gated):
            no_pos = [g["group"] for g in gated if g["tpr"] is None]
            notes.append(f"group(s) {no_pos} have no positives: their TPR is undefined")
        if len(with_both) < len(with_pos):
            no_neg = [g["group"] for g in with_pos if g["fpr"] is None]
            notes.append(f"group(s) {no_neg} have no negatives: their FPR is undefined")
        undefined = [m for m, v in metrics.items() if v is None]
        if undefined:
            notes.append(f"not assessable: {', '.join(undefined)}")
    return AttributeFairness(
        attribute=attribute.column,
        metrics=metrics,
        groups=groups,
        small_groups=small,
        note="; ".join(notes),
    )


def _mean_residual(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Prediction minus outcome, averaged: positive when the group is over-predicted."""
    return float(np.mean(y_pred - y_true))


def _mean_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred))


def _mean_outcome(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


_REGRESSION_ERRORS = {
    "mae": mean_absolute_error,
    "rmse": root_mean_squared_error,
    "mean_residual": _mean_residual,
}


def _error_ratio(smallest_over_largest: Any) -> float | None:
    """Largest over smallest group error from fairlearn's ``ratio`` (smallest over largest):
    undefined when the smallest error is 0 (a group predicted exactly)."""
    r = _finite(smallest_over_largest)
    return 1.0 / r if r is not None and r > 0 else None


def _regression_metrics(
    labels: np.ndarray, y: np.ndarray, pred: np.ndarray, gated: list[dict[str, Any]]
) -> dict[str, float | None]:
    """The six regression fairness metrics over the gated groups, from one ``MetricFrame``."""
    if len(gated) < 2:
        return dict.fromkeys(REGRESSION_FAIRNESS_METRICS)
    keep = np.isin(labels, [g["group"] for g in gated])
    mf = MetricFrame(
        metrics=_REGRESSION_ERRORS,
        y_true=y[keep],
        y_pred=pred[keep],
        sensitive_features=pd.Series(labels[keep], name="group"),
    )
    gap = mf.difference(method="between_groups")  # largest - smallest group value
    smallest_over_largest = mf.ratio(method="between_groups")
    worst = mf.group_max()
    return {
        "mae_difference": _finite(gap["mae"]),
        "mae_ratio": _error_ratio(smallest_over_largest["mae"]),
        "rmse_difference": _finite(gap["rmse"]),
        "rmse_ratio": _error_ratio(smallest_over_largest["rmse"]),
        "mean_residual_difference": _finite(gap["mean_residual"]),
        "bounded_group_loss": _finite(worst["mae"]),
    }


def assess_regression_attribute(
    values: pd.Series,
    y_true: np.ndarray,
    prediction: np.ndarray,
    attribute: SensitiveAttribute,
    min_group_size: int,
) -> AttributeFairness:
    """Per-group errors for one attribute, and the regression metrics over its gated groups."""
    labels = group_labels(values.reset_index(drop=True), attribute)
    lab = labels.to_numpy()
    table = MetricFrame(
        metrics={
            "size": count,
            **_REGRESSION_ERRORS,
            "mean_prediction": _mean_prediction,
            "mean_outcome": _mean_outcome,
        },
        y_true=y_true,
        y_pred=prediction,
        sensitive_features=pd.Series(lab, name="group"),
    ).by_group
    groups: list[dict[str, Any]] = []
    for name in _group_order(labels, attribute):
        row = table.loc[name]
        size = int(row["size"])
        groups.append(
            {
                "group": name,
                "size": size,
                **{k: _finite(row[k]) for k in REGRESSION_GROUP_KEYS[1:]},
                "gated": size >= min_group_size,
            }
        )
    gated = [g for g in groups if g["gated"]]
    metrics = _regression_metrics(lab, y_true, prediction, gated)
    notes = []
    if len(gated) < 2:
        notes.append(
            f"fewer than 2 groups with at least {min_group_size} rows "
            f"({len(gated)} of {len(groups)}): fairness across {attribute.column!r} "
            "cannot be assessed"
        )
    else:
        exact = [g["group"] for g in gated if g["mae"] == 0]
        if exact:
            notes.append(f"group(s) {exact} are predicted exactly: an error ratio is undefined")
        undefined = [m for m, v in metrics.items() if v is None]
        if undefined:
            notes.append(f"not assessable: {', '.join(undefined)}")
    return AttributeFairness(
        attribute=attribute.column,
        metrics=metrics,
        groups=groups,
        small_groups=[g["group"] for g in groups if not g["gated"]],
        note="; ".join(notes),
    )


def assess_fairness(
    frame: pd.DataFrame,
    y_true: Any,
    prediction: Any,
    threshold: float | None,
    cfg: ModelConfig,
) -> dict[str, AttributeFairness]:
    """Fairness numbers for every configured sensitive attribute.

    Args:
        frame: Holds the raw sensitive columns, one row per prediction (aligned by position);
            a sensitive column need not be a feature.
        y_true: True labels (0/1), or a regression model's outcomes.
        prediction: Predicted probabilities of the positive class, or a regression model's
            predicted values.
        threshold: Label cut-off: ``label = proba >= threshold``; ``None`` for a regression
            model, which has none.
        cfg: The model config (task, sensitive attributes, ``fairness.min_group_size``).

    Returns:
        Attribute (column) -> :class:`AttributeFairness`, in config order.

    Raises:
        ValueError: Lengths differ, a sensitive column is missing from ``frame``, a cut-off is
            missing (classification) or given (regression), or a regression outcome or
            prediction is missing or not finite.
    """
    kind = "predicted values" if cfg.is_regression else "probabilities"
    if cfg.is_regression:  # a nullable column's missing values become NaN, refused below
        y = pd.Series(y_true).to_numpy(dtype=np.float64, na_value=np.nan)
        scores = pd.Series(prediction).to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        y = np.asarray(y_true).astype(np.int64)
        scores = np.asarray(prediction, dtype=np.float64)
    if not len(y) == len(scores) == len(frame):
        raise ValueError(
            f"assess_fairness: {len(frame)} frame rows, {len(y)} labels and {len(scores)} "
            f"{kind} must be aligned one to one"
        )
    missing = [a.column for a in cfg.sensitive_attributes if a.column not in frame.columns]
    if missing:
        raise ValueError(f"assess_fairness: sensitive column(s) {missing} not in the frame")
    if cfg.is_regression:
        if threshold is not None:
            raise ValueError(
                f"assess_fairness: {cfg.name} is a regression model; it has no cut-off "
                f"(got threshold {threshold!r})"
            )
        for what, values in (("outcome", y), ("prediction", scores)):
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                raise ValueError(
                    f"assess_fairness: {len(bad)} {what}(s) missing or not finite (first rows "
                    f"{bad[:5].tolist()}); every row's error is needed"
                )
        return {
            a.column: assess_regression_attribute(
                frame[a.column], y, scores, a, cfg.fairness.min_group_size
            )
            for a in cfg.sensitive_attributes
        }
    if threshold is None:
        raise ValueError(
            f"assess_fairness: {cfg.name} is a classification model; labels need its cut-off"
        )
    pred = (scores >= threshold).astype(np.int64)
    return {
        a.column: assess_attribute(frame[a.column], y, pred, scores, a, cfg.fairness.min_group_size)
        for a in cfg.sensitive_attributes
    }


def fairness_values(
    assessments: dict[str, AttributeFairness], cfg: ModelConfig | None = None
) -> dict[str, dict[str, float]]:
    """Attribute -> metric -> value: the shape the champion comparison takes.

    Undefined metrics (``None``) are left out, so the comparison skips them.

    Args:
        assessments: From :func:`assess_fairness`.
        cfg: When given, keep only the metrics the config *gates* for each attribute. Metrics
            that are reported only (e.g. age parity in the demo) move with the chosen cut-off:
            between equally good models on the same holdout the demo measured swings of
            0.05 (age equal opportunity) to 0.15 (age equalized odds), which would block
            promotions on noise. Without ``cfg`` every defined metric is returned.
    """
    by_column = {a.column: a for a in cfg.sensitive_attributes} if cfg is not None else {}
    out: dict[str, dict[str, float]] = {}
    for attr, a in assessments.items():
        numbers = {m: as_number(v) for m, v in a.metrics.items()}
        values = {m: x for m, x in numbers.items() if x is not None}
        if cfg is not None:
            spec = by_column.get(attr)
            limits = cfg.fairness.limits_for(spec) if spec is not None else {}
            values = {m: v for m, v in values.items() if m in limits and limits[m].gated}
        out[attr] = values
    return out


# --------------------------------------------------------------------------------------------
# Gate
# --------------------------------------------------------------------------------------------


def _group_numbers(a: AttributeFairness) -> dict[str, dict[str, float]]:
    regression = any("mae" in g for g in a.groups)
    keys = REGRESSION_GROUP_KEYS if regression else _CLASSIFICATION_GROUP_KEYS
    return {g["group"]: {k: g[k] for k in keys} for g in a.groups if g["gated"]}


def _explain(a: AttributeFairness, metric: str) -> str:
    parts = []
    for g in a.groups:
        if not g["gated"]:
            continue
        rates = " ".join(f"{_SHORT[k]} {fmt(g[k], 2)}" for k in _EXPLAINED_BY[metric])
        parts.append(f"{g['group']}: {rates} n={g['size']}")
    return "; ".join(parts)


def fairness_gate(assessments: dict[str, AttributeFairness], cfg: ModelConfig) -> GateResult:
    """Hold each attribute's fairness metrics against its limits; collect every violation.

    Limits come from ``cfg.fairness.limits_for(attribute)``: the model-wide limits with the
    attribute's overrides on top. An empty bound (``{}``) reports the metric without gating
    it. A metric that is not assessable (``None``, e.g. fewer than two groups large enough) is
    reported and noted, not failed: ``min_group_size`` exists precisely so that too little
    data does not decide. Each violation carries the gated groups' numbers and says them.

    Args:
        assessments: From :func:`assess_fairness`.
        cfg: The model config.

    Returns:
        The gate result; ``details["attributes"]`` has, per attribute, the metrics, limits,
        pass/fail per gated metric (``None`` = reported only), and the per-group table.
    """
    violations: list[Violation] = []
    attrs: dict[str, Any] = {}
    notes: list[str] = []
    for attribute in cfg.sensitive_attributes:
        a = assessments.get(attribute.column)
        if a is None:
            notes.append(f"{attribute.column}: not assessed")
            continue
        limits = cfg.fairness.limits_for(attribute)
        checks: dict[str, bool | None] = {}
        for metric, bound in limits.items():
            value = as_number(a.metrics.get(metric))
            if not bound.gated or value is None:
                checks[metric] = None
                continue
            broken = bound_violation(value, bound)
            checks[metric] = broken is None
            if broken is None:
                continue
            op, lim = broken
            sv, sl = fmt_pair(value, lim)
            cmp = "<" if op == ">=" else ">"
            violations.append(
                Violation(
                    gate=FAIRNESS,
                    rule=f"{a.attribute}: {metric} {op} {fmt(lim, 12)}",
                    metric=metric,
                    value=value,
                    limit=lim,
                    message=f"{a.attribute}: {metric} {sv} {cmp} {sl} ({_explain(a, metric)})",
                    attribute=a.attribute,
                    groups=_group_numbers(a),
                )
            )
        ungated = [m for m, b in limits.items() if checks[m] is None and b.gated]
        if ungated:
            notes.append(f"{a.attribute}: {', '.join(ungated)} not assessable ({a.note})")
        attrs[a.attribute] = {
            **a.to_dict(),
            "limits": {m: {"min": b.min, "max": b.max} for m, b in limits.items()},
            "checks": checks,
        }
    if not cfg.sensitive_attributes:
        notes.append("no sensitive attributes configured: the gate passes")
    return GateResult(
        name=FAIRNESS,
        passed=not violations,
        violations=violations,
        details={"min_group_size": cfg.fairness.min_group_size, "attributes": attrs},
        note="; ".join(notes),
    )

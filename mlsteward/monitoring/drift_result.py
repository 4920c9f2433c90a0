"""What a drift run measured, in our own terms: per-column verdicts and the whole result.

Everything else in mlsteward (tasks, the retrain decision, the model card) reads these types,
never Evidently's output; they round-trip through JSON (``to_dict`` / ``from_dict``) so the
result can be stored with the audit record and the run's artifacts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ColumnDriftResult:
    """Evidently's verdict on one column: the method, its score and threshold, drifted or not;
    what the test could see at these sizes, and PSI beside it (``drift_power``)."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    kind: str  # "numeric" | "categorical"
    # the smallest shift the test flags at least half the time at these row counts: reference
    # SDs (numeric) or one category's share (categorical); None: none, or not computed
    min_detectable_shift: float | None = None
    psi: float | None = None  # recorded beside the verdict, never part of it
    reference_rows: int | None = None  # non-null rows compared, per side
    current_rows: int | None = None


@dataclass
class DriftResult:
    """Everything a drift run measured, in our own terms (JSON round-trips via to/from_dict)."""

    columns: dict[str, ColumnDriftResult]  # every feature, in config order
    drifted_columns: list[str]  # features only, in config order
    dataset_drift_share: float  # drifted features / features
    # when both sides have the model's output: a classifier's probability, a regression
    # model's predicted value (both numeric)
    prediction_drift: ColumnDriftResult | None = None
    # when both sides have the label: categorical for a classifier, numeric for regression
    target_drift: ColumnDriftResult | None = None
    # {"reference": {metric: v}, "current": {...}, "change": {metric: current - reference}}
    #  with the model's own metrics, plus "decision_threshold": t for a classifier, when both
    #  sides have label and output and the current side has enough labelled rows; "current"
    #  is measured on those rows only
    performance: dict | None = None
    # rows given, before any sampling; "current_labelled": current rows with an outcome, when
    # the current side has a label column
    rows: dict[str, int] = field(default_factory=dict)
    # per sampled side: {"rows_before", "rows_after", "method", "seed"}; {} when none. A side
    # pre-sampled from the prediction log also has "rows_in_window" and "presample" (rows, rate,
    # seed, key, method), "rows_before" then being the pre-sample's rows
    sampling: dict = field(default_factory=dict)
    report_path: str | None = None  # the HTML written, if html_path was given
    report_uri: str | None = None  # where the HTML was logged in MLflow, when it was
    notes: list[str] = field(default_factory=list)  # why something expected was not computed
    # what the features and the outcome were compared with, and why (``drift_reference``):
    # {"source": "holdout" | "training window", "rows", "holdout_rows", "why", ...}; {} when
    # the caller gave a frame without saying
    reference: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable (``allow_nan=False`` safe): NaN and infinities become None."""
        return _clean(
            {
                "columns": {c: asdict(r) for c, r in self.columns.items()},
                "drifted_columns": list(self.drifted_columns),
                "dataset_drift_share": self.dataset_drift_share,
                "prediction_drift": asdict(self.prediction_drift)
                if self.prediction_drift
                else None,
                "target_drift": asdict(self.target_drift) if self.target_drift else None,
                "performance": self.performance,
                "rows": dict(self.rows),
                "sampling": self.sampling,
                "report_path": self.report_path,
                "report_uri": self.report_uri,
                "notes": list(self.notes),
                "reference": self.reference,
            }
        )

    @classmethod
    def from_dict(cls, d: dict) -> DriftResult:
        def col(x: dict | None) -> ColumnDriftResult | None:
            if x is None:
                return None
            return ColumnDriftResult(
                column=x["column"],
                method=x["method"],
                score=_float(x["score"]),
                threshold=_float(x["threshold"]),
                drifted=bool(x["drifted"]),
                kind=x["kind"],
                min_detectable_shift=_optional(x.get("min_detectable_shift")),
                psi=_optional(x.get("psi")),
                reference_rows=_optional_int(x.get("reference_rows")),
                current_rows=_optional_int(x.get("current_rows")),
            )

        return cls(
            columns={c: col(r) for c, r in d["columns"].items()},  # type: ignore[misc]
            drifted_columns=list(d["drifted_columns"]),
            dataset_drift_share=float(d["dataset_drift_share"]),
            prediction_drift=col(d.get("prediction_drift")),
            target_drift=col(d.get("target_drift")),
            performance=d.get("performance"),
            rows={k: int(v) for k, v in (d.get("rows") or {}).items()},
            sampling=d.get("sampling") or {},
            report_path=d.get("report_path"),
            report_uri=d.get("report_uri"),
            notes=list(d.get("notes") or []),
            reference=d.get("reference") or {},
        )


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _optional(v: Any) -> float | None:
    return None if v is None else float(v)


def _optional_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _clean(obj: Any) -> Any:
    """Recursively turn numpy scalars into Python ones and non-finite floats into None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj

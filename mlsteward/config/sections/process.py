"""Config section for process control: the targets a model's delivery is held to, and how its
control charts are drawn and read.

The targets are upper specification limits in hours; process capability (Cpk) is measured
against them. A chart's control limits come from a baseline (its first points, or the points
before a date), so a process that drifts later is judged against how it used to behave, not
against itself.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from mlsteward.config.base import StrictModel


class ProcessTargets(StrictModel):
    """Upper specification limits (hours); null: no capability for that metric."""

    lead_time_to_decision_hours: float | None = Field(
        default=24.0,
        gt=0,
        description="From a data version's ingestion to a decision on a version trained on it.",
    )
    lead_time_to_champion_hours: float | None = Field(
        default=72.0,
        gt=0,
        description="From a data version's ingestion to a version trained on it becoming "
        "champion (an approval wait included).",
    )
    approval_wait_hours: float | None = Field(
        default=24.0, gt=0, description="From an approval request to its answer."
    )
    drift_to_recovery_hours: float | None = Field(
        default=72.0,
        gt=0,
        description="From drift detected to a decision on a version trained after it.",
    )


class ProcessConfig(StrictModel):
    """How the delivery of this model is measured and controlled (``mlsteward process``)."""

    targets: ProcessTargets = Field(default_factory=ProcessTargets)
    rules: Literal["western_electric", "nelson"] = Field(
        default="western_electric",
        description="Which run rules flag a special cause: Western Electric's four (a stable "
        "process breaks one about once in 92 points) or Nelson's eight (more sensitive to "
        "trends and stratification, about once in 73).",
    )
    baseline_points: int = Field(
        default=20,
        ge=8,
        description="Control limits come from a chart's first this many points (or fewer, "
        "when baseline_until says so).",
    )
    baseline_until: date | None = Field(
        default=None,
        description="Control limits come from the points before this date (at most "
        "baseline_points of them); null: the first baseline_points.",
    )
    min_points: int = Field(
        default=8,
        ge=2,
        description="Fewer points in a baseline: the chart is drawn without control limits "
        "and judges nothing.",
    )
    subgroup: Literal["day", "week"] = Field(
        default="week", description="The period of a p-chart's subgroups (failure rates)."
    )
    alert_window_days: float = Field(
        default=7.0,
        gt=0,
        description="A special cause alerts when one of its points is this recent (the "
        "review's cadence); older ones stay in the report.",
    )

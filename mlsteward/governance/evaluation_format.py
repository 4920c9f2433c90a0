"""Where the holdout evaluation sits in a stored validation report, and reading it back.

Apart from :mod:`mlsteward.governance.evaluation` (which computes it with scikit-learn and
XGBoost) so that the pictures and the read-only commands that draw them (``mlsteward report``)
read a report without loading the scoring stack.
"""

from __future__ import annotations

from typing import Any

from mlsteward.governance.gates import METRIC_THRESHOLDS, GateResult

SCHEMA = 1
EVALUATION_KEY = "evaluation"
"""Where the payload sits in the ``metric_thresholds`` gate's details."""


def attach(result: GateResult, evaluation: dict[str, Any] | None) -> GateResult:
    """The ``metric_thresholds`` gate's result with the evaluation its metrics came from.

    The report is built from gate results wherever it is built (the flow, ``run_gates``), so
    the evaluation travels with the gate that judged the metrics it explains; the markdown
    report and the card's tables ignore the key.
    """
    if evaluation is not None and result.name == METRIC_THRESHOLDS:
        result.details[EVALUATION_KEY] = evaluation
    return result


def from_report(report: dict[str, Any]) -> dict[str, Any] | None:
    """The stored payload of a ``ValidationReport.to_dict()``; None for a report written
    before it was recorded (or not a payload this code can read)."""
    for gate in report.get("gates") or []:
        if isinstance(gate, dict) and gate.get("name") == METRIC_THRESHOLDS:
            found = (gate.get("details") or {}).get(EVALUATION_KEY)
            if isinstance(found, dict) and found.get("schema") == SCHEMA:
                return found
    return None

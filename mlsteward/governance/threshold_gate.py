"""The metric-threshold gate: absolute floors and ceilings on a version's holdout metrics.

``bound_violation`` is the one reading of a ``MetricBound`` (inclusive limits), shared with the
fairness gate. Like every gate this one collects all violations with their numbers before it
decides, and returns a :class:`~mlsteward.governance.gates.GateResult`.
"""

from __future__ import annotations

from typing import Any

from mlsteward.config.sections.governance import MetricBound
from mlsteward.governance.gates import (
    METRIC_THRESHOLDS,
    GateResult,
    Violation,
    as_number,
    fmt,
    fmt_pair,
)


def bound_violation(value: float, bound: MetricBound) -> tuple[str, float] | None:
    """Which side of ``bound`` a finite value breaks: ``(">=", min)`` / ``("<=", max)`` or None.

    Limits are inclusive: a value equal to its floor or ceiling passes.
    """
    if bound.min is not None and value < bound.min:
        return ">=", float(bound.min)
    if bound.max is not None and value > bound.max:
        return "<=", float(bound.max)
    return None


def bound_rules(metric: str, bound: MetricBound) -> list[str]:
    rules = []
    if bound.min is not None:
        rules.append(f"{metric} >= {fmt(bound.min, 12)}")
    if bound.max is not None:
        rules.append(f"{metric} <= {fmt(bound.max, 12)}")
    return rules


def metric_threshold_gate(
    metrics: dict[str, float], thresholds: dict[str, MetricBound]
) -> GateResult:
    """Absolute floors and ceilings on the holdout metrics (limits are inclusive).

    A metric named in ``thresholds`` that is missing from ``metrics`` or is NaN (e.g. ROC-AUC on
    a holdout with a single class) is a violation: a number that cannot be checked cannot pass.

    Args:
        metrics: Evaluated metrics, e.g. :func:`mlsteward.training.fitting.evaluate`'s output.
        thresholds: Metric -> bound, from the model config.

    Returns:
        The gate result; ``details["checks"]`` has value, min, max and pass per gated metric,
        ``details["metrics"]`` every metric that was passed in.
    """
    violations: list[Violation] = []
    checks: dict[str, dict[str, Any]] = {}
    for name, bound in thresholds.items():
        rules = bound_rules(name, bound)
        if not rules:
            continue
        rule = " and ".join(rules)
        limit = bound.min if bound.min is not None else bound.max
        raw = metrics.get(name)
        value = as_number(raw)
        check: dict[str, Any] = {"value": value, "min": bound.min, "max": bound.max}
        if value is None:
            why = "is missing from the evaluated metrics" if raw is None else f"is {raw!r}"
            violations.append(
                Violation(
                    gate=METRIC_THRESHOLDS,
                    rule=rule,
                    metric=name,
                    value=None,
                    limit=limit,
                    message=f"{name} {why}: it cannot be checked against {rule}",
                )
            )
            check["passed"] = False
        else:
            broken = bound_violation(value, bound)
            check["passed"] = broken is None
            if broken is not None:
                op, lim = broken
                sv, sl = fmt_pair(value, lim)
                word = "below the floor" if op == ">=" else "above the ceiling"
                violations.append(
                    Violation(
                        gate=METRIC_THRESHOLDS,
                        rule=f"{name} {op} {fmt(lim, 12)}",
                        metric=name,
                        value=value,
                        limit=lim,
                        message=f"{name} {sv} is {word} {sl} ({name} {op} {sl} required)",
                    )
                )
        checks[name] = check
    return GateResult(
        name=METRIC_THRESHOLDS,
        passed=not violations,
        violations=violations,
        details={"checks": checks, "metrics": dict(metrics)},
        note="" if checks else "no thresholds configured: the gate passes",
    )

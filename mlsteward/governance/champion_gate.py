"""The challenger-vs-champion gate: beat the champion on the primary metric, stay as fair.

Like every gate it collects all violations with their numbers before it decides, and returns a
:class:`~mlsteward.governance.gates.GateResult`; nothing here knows about Prefect or MLflow.
"""

from __future__ import annotations

import math
from typing import Any

from mlsteward.config.sections.governance import (
    FAIRNESS_HIGHER_IS_WORSE,
    LOWER_IS_BETTER,
    PromotionConfig,
)
from mlsteward.governance.gates import (
    CHAMPION_COMPARISON,
    GateResult,
    Violation,
    as_number,
    fmt,
    fmt_pair,
)

# Float noise allowance when comparing a measured delta with a configured one: 0.30 - 0.28 is
# 0.01999999999999999 in binary floating point and must count as an improvement of 0.02.
_EPS = 1e-12


def champion_comparison_gate(
    challenger_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    challenger_fairness: dict[str, dict[str, float]] | None,
    champion_fairness: dict[str, dict[str, float]] | None,
    promotion: PromotionConfig,
    champion_version: str | None = None,
) -> GateResult:
    """The challenger must beat the champion on the primary metric without getting less fair.

    Both sides must be evaluated on the same holdout, or the comparison means nothing.

    Primary metric: the *improvement* is ``challenger - champion`` (``champion - challenger``
    for metrics in :data:`LOWER_IS_BETTER`, such as ``brier``, ``rmse`` or ``mae``; ``r2`` and
    ``roc_auc`` are higher-is-better); in ``relative`` mode it is
    divided by ``|champion|``. With ``min_delta == 0`` the challenger must be **strictly**
    better: a version that merely ties the champion (e.g. a retrain on identical data) gives
    no reason to swap and would only churn the alias. With ``min_delta > 0`` the improvement
    must be at least ``min_delta`` (inclusive, up to float noise of 1e-12). A primary metric
    that is missing or NaN on either side is a violation.

    Fairness: every metric of :data:`FAIRNESS_HIGHER_IS_WORSE` that both sides report for the
    same attribute may worsen by at most ``promotion.fairness_tolerance`` (absolute; a
    difference going up, a parity ratio going down, a regression error ratio or the worst
    group's error going up). A regression metric that is a difference or a loss is in the
    label's units, so the same tolerance is read in those units. Metrics undefined on either
    side are listed but not compared. (The absolute fairness limits are the fairness gate's
    job.)

    No champion (``champion_metrics is None``): the gate passes, with a note saying so.

    Args:
        challenger_metrics: The challenger's holdout metrics.
        champion_metrics: The champion's metrics on the same holdout, or None.
        challenger_fairness: Attribute -> fairness metric -> value (see
            :func:`mlsteward.governance.fairness.fairness_values`).
        champion_fairness: The same for the champion.
        promotion: Primary metric, min_delta, delta_mode and fairness tolerance.
        champion_version: Shown in messages.

    Returns:
        The gate result; details carry both sides, deltas and the decision per rule.
    """
    primary = promotion.primary_metric
    champ_name = f"champion v{champion_version}" if champion_version else "the champion"
    if champion_metrics is None:
        return GateResult(
            name=CHAMPION_COMPARISON,
            passed=True,
            violations=[],
            details={
                "champion_version": None,
                "primary": {"metric": primary, "challenger": challenger_metrics.get(primary)},
            },
            note="no champion yet: the gate passes (nothing to compare with)",
        )

    violations: list[Violation] = []
    primary_details = _compare_primary(
        challenger_metrics, champion_metrics, promotion, champ_name, violations
    )
    tol = float(promotion.fairness_tolerance)
    fair_details = _compare_fairness(
        challenger_fairness or {}, champion_fairness or {}, tol, champ_name, violations
    )
    return GateResult(
        name=CHAMPION_COMPARISON,
        passed=not violations,
        violations=violations,
        details={
            "champion_version": champion_version,
            "primary": primary_details,
            "metrics": _shared_metrics(challenger_metrics, champion_metrics),
            "fairness_tolerance": tol,
            "fairness": fair_details,
        },
    )


def _primary_rule(promotion: PromotionConfig) -> tuple[str, str]:
    """(the rule as text, what the challenger needs, in words) for the primary metric."""
    primary = promotion.primary_metric
    lower = primary in LOWER_IS_BETTER
    relative = promotion.delta_mode == "relative"
    min_delta = float(promotion.min_delta)
    if min_delta == 0.0:
        return (
            f"{primary} {'<' if lower else '>'} champion",
            "strictly better (min_delta is 0: a tie does not replace the champion)",
        )
    need = f"an improvement of at least {fmt(min_delta)}" + (
        f" ({fmt(100 * min_delta)}% of the champion's value)" if relative else ""
    )
    return f"{primary} improves by >= {fmt(min_delta, 12)} ({promotion.delta_mode})", need


def _improvement(challenger: float, champion: float, lower: bool, relative: bool) -> float:
    """How much better the challenger is: a difference, or relative to ``|champion|``."""
    absolute = (champion - challenger) if lower else (challenger - champion)
    if not relative:
        return absolute
    if champion != 0:
        return absolute / abs(champion)
    return math.copysign(math.inf, absolute) if absolute else 0.0


def _compare_primary(
    challenger_metrics: dict[str, float],
    champion_metrics: dict[str, float],
    promotion: PromotionConfig,
    champ_name: str,
    violations: list[Violation],
) -> dict[str, Any]:
    """The primary metric's decision (details for the report); a failure joins ``violations``."""
    primary = promotion.primary_metric
    lower = primary in LOWER_IS_BETTER
    relative = promotion.delta_mode == "relative"
    min_delta = float(promotion.min_delta)
    rule, need = _primary_rule(promotion)
    c = as_number(challenger_metrics.get(primary))
    k = as_number(champion_metrics.get(primary))
    details: dict[str, Any] = {
        "metric": primary,
        "direction": "lower is better" if lower else "higher is better",
        "challenger": c,
        "champion": k,
        "delta_mode": promotion.delta_mode,
        "min_delta": min_delta,
        "improvement": None,
        "passed": False,
    }
    if c is None or k is None:
        side = "challenger" if c is None else "champion"
        violations.append(
            Violation(
                gate=CHAMPION_COMPARISON,
                rule=rule,
                metric=primary,
                value=c,
                limit=k,
                message=f"{primary} is missing or undefined for the {side} "
                f"(challenger {fmt(c)}, {champ_name} {fmt(k)}): no improvement can be shown",
            )
        )
        return details
    absolute = (k - c) if lower else (c - k)
    improvement = _improvement(c, k, lower, relative)
    ok = improvement > 0 if min_delta == 0.0 else improvement >= min_delta - _EPS
    details.update(improvement=improvement, absolute_improvement=absolute, passed=ok)
    if not ok:
        sc, sk = fmt_pair(c, k)
        how = (
            f"{fmt(100 * improvement)}% relative"
            if relative and math.isfinite(improvement)
            else f"{absolute:+.4g}"
        )
        violations.append(
            Violation(
                gate=CHAMPION_COMPARISON,
                rule=rule,
                metric=primary,
                value=c,
                limit=k,
                message=f"{primary} {sc} vs {champ_name} {sk} "
                f"({'lower' if lower else 'higher'} is better): improvement {how}, "
                f"needs {need}",
            )
        )
    return details


def _shared_metrics(
    challenger_metrics: dict[str, float], champion_metrics: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Every metric both sides have, with the difference, for the report."""
    compared: dict[str, dict[str, Any]] = {}
    for m in challenger_metrics:
        if m in champion_metrics:
            a, b = as_number(challenger_metrics[m]), as_number(champion_metrics[m])
            compared[m] = {
                "challenger": a,
                "champion": b,
                "delta": None if a is None or b is None else a - b,
            }
    return compared


def _compare_fairness(
    challenger_fairness: dict[str, dict[str, float]],
    champion_fairness: dict[str, dict[str, float]],
    tol: float,
    champ_name: str,
    violations: list[Violation],
) -> dict[str, dict[str, Any]]:
    """Per attribute and metric, how much fairness worsened; beyond ``tol`` is a violation."""
    fair_details: dict[str, dict[str, Any]] = {}
    for attr, ch_vals in challenger_fairness.items():
        champ_vals = champion_fairness.get(attr)
        if champ_vals is None:
            continue
        for metric, higher_worse in FAIRNESS_HIGHER_IS_WORSE.items():
            if metric not in ch_vals or metric not in champ_vals:
                continue
            a, b = as_number(ch_vals[metric]), as_number(champ_vals[metric])
            entry: dict[str, Any] = {
                "challenger": a,
                "champion": b,
                "delta": None,
                "worsening": None,
                "passed": None,
            }
            if a is not None and b is not None:
                worsening = (a - b) if higher_worse else (b - a)
                ok = worsening <= tol + _EPS
                entry.update(delta=a - b, worsening=worsening, passed=ok)
                if not ok:
                    sa, sb = fmt_pair(a, b)
                    direction = "higher" if higher_worse else "lower"
                    violations.append(
                        Violation(
                            gate=CHAMPION_COMPARISON,
                            rule=f"{attr}: {metric} worsens by <= {fmt(tol, 12)} vs champion",
                            metric=metric,
                            value=a,
                            limit=b,
                            attribute=attr,
                            message=f"{attr}: {metric} worsened from {sb} ({champ_name}) to "
                            f"{sa} ({direction} is worse): {worsening:+.4g} exceeds the "
                            f"tolerance {fmt(tol)}",
                        )
                    )
            fair_details.setdefault(attr, {})[metric] = entry
    return fair_details

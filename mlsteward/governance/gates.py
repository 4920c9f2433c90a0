"""Validation gates as plain typed functions: metric thresholds and challenger-vs-champion.

Every gate looks at *all* of its rules, collects every violation with the numbers behind it and
only then decides (design rule 5), so a rejected version comes with the complete list of
reasons instead of the first one found. Nothing here knows about Prefect or MLflow: the flow
passes numbers in, records the :class:`ValidationReport` it gets back and decides once.

The fairness gate lives in :mod:`mlsteward.governance.fairness` (the one module that talks to
fairlearn)
and returns the same :class:`GateResult`.

Everything that may be serialised (``details``, violations, reports) holds plain ``float``,
``int``, ``str``, ``bool`` or ``None`` only: numpy scalars are converted and NaN / infinity
become ``None``, so ``json.dumps(report.to_dict(), allow_nan=False)`` always works.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlsteward.config.models import (
    FAIRNESS_HIGHER_IS_WORSE,
    LOWER_IS_BETTER,
    MetricBound,
    PromotionConfig,
)

METRIC_THRESHOLDS = "metric_thresholds"
FAIRNESS = "fairness"
CHAMPION_COMPARISON = "champion_comparison"

# Float noise allowance when comparing a measured delta with a configured one: 0.30 - 0.28 is
# 0.01999999999999999 in binary floating point and must count as an improvement of 0.02.
_EPS = 1e-12
SUMMARY_MAX_CHARS = 2000


# --------------------------------------------------------------------------------------------
# Plain values and number formatting
# --------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars/arrays become Python values, NaN and infinities ``None``.

    Args:
        value: Any nesting of dicts, lists, tuples and scalars.

    Returns:
        The same structure with dict keys as strings and only JSON-representable leaves.
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def as_number(value: Any) -> float | None:
    """A finite float, or ``None`` for missing, NaN, infinite or non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt(x: float | None, digits: int = 4) -> str:
    """A short human rendering of a number (``None`` -> ``n/a``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{float(x):.{digits}g}"


def fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Format two numbers with just enough digits that distinct values read as distinct.

    A message must never say ``0.75 < 0.75``: when 4 significant digits make the value and its
    limit look equal, more digits are used.
    """
    for digits in (4, 6, 8, 12, 17):
        sa, sb = fmt(a, digits), fmt(b, digits)
        if sa != sb or a == b:
            return sa, sb
    return fmt(a, 17), fmt(b, 17)


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken rule, with the numbers that broke it.

    Attributes:
        gate: Gate that found it (``metric_thresholds``, ``fairness``, ``champion_comparison``).
        rule: The rule as text, e.g. ``"roc_auc >= 0.75"``.
        metric: The metric the rule is about.
        value: Measured value (``None`` when missing or undefined).
        limit: The limit it was held against.
        message: One human line that includes the numbers.
        attribute: Sensitive attribute, for fairness rules.
        groups: Group -> its numbers (size, selection rate, TPR, FPR ...), when relevant.
    """

    gate: str
    rule: str
    metric: str
    value: float | None
    limit: float | None
    message: str
    attribute: str | None = None
    groups: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "gate": self.gate,
                "rule": self.rule,
                "metric": self.metric,
                "value": self.value,
                "limit": self.limit,
                "message": self.message,
                "attribute": self.attribute,
                "groups": self.groups,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Violation:
        groups = d.get("groups")
        return cls(
            gate=d["gate"],
            rule=d["rule"],
            metric=d["metric"],
            value=d.get("value"),
            limit=d.get("limit"),
            message=d["message"],
            attribute=d.get("attribute"),
            groups=None if groups is None else {str(k): dict(v) for k, v in groups.items()},
        )


@dataclass
class GateResult:
    """The outcome of one gate: pass/fail, every violation, and all numbers it looked at."""

    name: str
    passed: bool
    violations: list[Violation]
    details: dict[str, Any]
    note: str = ""

    def __post_init__(self) -> None:
        self.details = plain(self.details)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": bool(self.passed),
            "violations": [v.to_dict() for v in self.violations],
            "details": plain(self.details),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateResult:
        return cls(
            name=d["name"],
            passed=bool(d["passed"]),
            violations=[Violation.from_dict(v) for v in d.get("violations", [])],
            details=dict(d.get("details") or {}),
            note=d.get("note", ""),
        )


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ValidationReport:
    """All gates' results for one model version; the version passes only if every gate does."""

    model: str
    version: str
    gates: list[GateResult]
    created_at: str = field(default_factory=utc_now_iso)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def violations(self) -> list[Violation]:
        return [v for g in self.gates for v in g.violations]

    def reasons(self) -> list[str]:
        """One line per violation, in gate order."""
        return [v.message for v in self.violations]

    def _verdict(self) -> str:
        failed = [g.name for g in self.gates if not g.passed]
        if not failed:
            return f"PASSED: {self.model} v{self.version} passed all {len(self.gates)} gate(s)"
        return (
            f"REJECTED: {self.model} v{self.version} failed {len(failed)} of {len(self.gates)} "
            f"gate(s) ({', '.join(failed)}) with {len(self.violations)} violation(s)"
        )

    def summary(self) -> str:
        """A few lines for an approval form or a registry tag (always under 2000 characters)."""
        lines = [self._verdict()]
        for g in self.gates:
            status = "passed" if g.passed else f"FAILED ({len(g.violations)} violation(s))"
            lines.append(f"- {g.name}: {status}" + (f"; {g.note}" if g.note else ""))
        reasons = self.reasons()
        if reasons:
            lines.append("Reasons:")
        head = "\n".join(lines)
        out = head
        for i, r in enumerate(reasons):
            line = f"  * {r}"
            rest = len(reasons) - i - 1
            tail = f"\n  ... and {rest} more (see the full report)" if rest else ""
            if len(out) + 1 + len(line) + len(tail) > SUMMARY_MAX_CHARS - 80:
                out += f"\n  ... and {len(reasons) - i} more (see the full report)"
                break
            out += "\n" + line
        if len(out) >= SUMMARY_MAX_CHARS:  # a single enormous note or verdict
            out = out[: SUMMARY_MAX_CHARS - 4] + " ..."
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": str(self.version),
            "passed": self.passed,
            "created_at": self.created_at,
            "gates": [g.to_dict() for g in self.gates],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationReport:
        return cls(
            model=d["model"],
            version=str(d["version"]),
            gates=[GateResult.from_dict(g) for g in d.get("gates", [])],
            created_at=d["created_at"],
        )

    def to_markdown(self) -> str:
        """The full report: verdict, violations, then each gate with the numbers it used."""
        out = [
            f"# Validation report: {self.model} v{self.version}",
            "",
            f"**{self._verdict()}**",
            "",
            f"Created at {self.created_at} (UTC).",
            "",
            "| gate | result | violations |",
            "| --- | --- | --- |",
        ]
        for g in self.gates:
            out.append(
                f"| {g.name} | {'passed' if g.passed else '**FAILED**'} | {len(g.violations)} |"
            )
        out += ["", "## Violations", ""]
        out += [f"- **{v.gate}** `{v.rule}`: {_md(v.message)}" for v in self.violations] or [
            "None."
        ]
        for g in self.gates:
            out += ["", f"## Gate `{g.name}`: {'passed' if g.passed else 'FAILED'}", ""]
            if g.note:
                out += [f"_{_md(g.note)}_", ""]
            renderer = _RENDERERS.get(g.name, _render_generic)
            out += renderer(g.details)
        return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Markdown rendering of gate details
# --------------------------------------------------------------------------------------------


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return fmt(x)
    return _md(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _status(passed: Any) -> str:
    if passed is None:
        return "reported"
    return "ok" if passed else "**FAIL**"


def _render_thresholds(d: dict[str, Any]) -> list[str]:
    checks = d.get("checks") or {}
    out: list[str] = []
    if checks:
        out += _table(
            ["metric", "value", "min", "max", "result"],
            [
                [m, c.get("value"), c.get("min"), c.get("max"), _status(c.get("passed"))]
                for m, c in checks.items()
            ],
        )
    else:
        out += ["No thresholds configured.", ""]
    others = {k: v for k, v in (d.get("metrics") or {}).items() if k not in checks}
    if others:
        out += ["Other evaluated metrics (not gated):", ""]
        out += _table(["metric", "value"], [[k, v] for k, v in others.items()])
    return out


def _render_comparison(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    p = d.get("primary") or {}
    if "improvement" not in p:
        out += [f"Challenger `{p.get('metric')}`: {fmt(p.get('challenger'))}.", ""]
    else:
        out += [
            f"Primary metric `{p.get('metric')}` ({p.get('direction')}), "
            f"{p.get('delta_mode')} min_delta {fmt(p.get('min_delta'))}: "
            f"improvement {fmt(p.get('improvement'))} -> {_status(p.get('passed'))}",
            "",
        ]
    metrics = d.get("metrics") or {}
    if metrics:
        out += _table(
            ["metric", "challenger", f"champion {d.get('champion_version') or ''}".strip(), "Δ"],
            [
                [m, v.get("challenger"), v.get("champion"), v.get("delta")]
                for m, v in metrics.items()
            ],
        )
    fair = d.get("fairness") or {}
    rows = [
        [attr, m, v.get("challenger"), v.get("champion"), v.get("worsening"), _status(v["passed"])]
        for attr, per in fair.items()
        for m, v in per.items()
    ]
    if rows:
        out += [f"Fairness vs champion (tolerance {fmt(d.get('fairness_tolerance'))}):", ""]
        out += _table(
            ["attribute", "metric", "challenger", "champion", "worsening", "result"], rows
        )
    return out


def _render_fairness(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if d.get("min_group_size") is not None:
        out += [f"Groups smaller than {d['min_group_size']} rows are reported, not gated.", ""]
    for attr, a in (d.get("attributes") or {}).items():
        out += [f"### `{attr}`", ""]
        if a.get("note"):
            out += [f"_{_md(a['note'])}_", ""]
        limits = a.get("limits") or {}
        checks = a.get("checks") or {}
        out += _table(
            ["metric", "value", "min", "max", "result"],
            [
                [
                    m,
                    v,
                    (limits.get(m) or {}).get("min"),
                    (limits.get(m) or {}).get("max"),
                    _status(checks.get(m)),
                ]
                for m, v in (a.get("metrics") or {}).items()
            ],
        )
        groups = a.get("groups") or []
        if groups:
            out += _table(
                ["group", "n", "positives", "selection rate", "TPR", "FPR", "ROC-AUC", "gated"],
                [
                    [
                        g.get("group"),
                        g.get("size"),
                        g.get("positives"),
                        g.get("selection_rate"),
                        g.get("tpr"),
                        g.get("fpr"),
                        g.get("roc_auc"),
                        g.get("gated"),
                    ]
                    for g in groups
                ],
            )
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    rows: list[list[Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, key + ".")
        elif isinstance(v, list):
            rows.append([key, ", ".join(_cell(x) for x in v) if v else "[]"])
        else:
            rows.append([key, v])
    return rows


def _render_generic(d: dict[str, Any]) -> list[str]:
    rows = _flatten(d)
    return _table(["key", "value"], rows) if rows else ["No details.", ""]


_RENDERERS = {
    METRIC_THRESHOLDS: _render_thresholds,
    CHAMPION_COMPARISON: _render_comparison,
    FAIRNESS: _render_fairness,
}


# --------------------------------------------------------------------------------------------
# Gate: absolute metric thresholds
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Gate: challenger vs champion
# --------------------------------------------------------------------------------------------


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
    for metrics in :data:`LOWER_IS_BETTER`, such as ``brier``); in ``relative`` mode it is
    divided by ``|champion|``. With ``min_delta == 0`` the challenger must be **strictly**
    better: a version that merely ties the champion (e.g. a retrain on identical data) gives
    no reason to swap and would only churn the alias. With ``min_delta > 0`` the improvement
    must be at least ``min_delta`` (inclusive, up to float noise of 1e-12). A primary metric
    that is missing or NaN on either side is a violation.

    Fairness: every metric of :data:`FAIRNESS_HIGHER_IS_WORSE` that both sides report for the
    same attribute may worsen by at most ``promotion.fairness_tolerance`` (absolute; a
    difference going up, a ratio going down). Metrics undefined on either side are listed but
    not compared. (The absolute fairness limits are the fairness gate's job.)

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
    lower = primary in LOWER_IS_BETTER
    relative = promotion.delta_mode == "relative"
    min_delta = float(promotion.min_delta)
    strict = min_delta == 0.0
    need = (
        "strictly better (min_delta is 0: a tie does not replace the champion)"
        if strict
        else f"an improvement of at least {fmt(min_delta)}"
        + (f" ({fmt(100 * min_delta)}% of the champion's value)" if relative else "")
    )
    rule = (
        f"{primary} {'<' if lower else '>'} champion"
        if strict
        else (f"{primary} improves by >= {fmt(min_delta, 12)} ({promotion.delta_mode})")
    )

    c = as_number(challenger_metrics.get(primary))
    k = as_number(champion_metrics.get(primary))
    primary_details: dict[str, Any] = {
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
    else:
        absolute = (k - c) if lower else (c - k)
        if relative:
            if k != 0:
                improvement = absolute / abs(k)
            else:
                improvement = math.copysign(math.inf, absolute) if absolute else 0.0
        else:
            improvement = absolute
        ok = improvement > 0 if strict else improvement >= min_delta - _EPS
        primary_details.update(improvement=improvement, absolute_improvement=absolute, passed=ok)
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

    # every shared metric, for the report
    compared: dict[str, dict[str, Any]] = {}
    for m in challenger_metrics:
        if m in champion_metrics:
            a, b = as_number(challenger_metrics[m]), as_number(champion_metrics[m])
            compared[m] = {
                "challenger": a,
                "champion": b,
                "delta": None if a is None or b is None else a - b,
            }

    tol = float(promotion.fairness_tolerance)
    fair_details: dict[str, dict[str, Any]] = {}
    for attr, ch_vals in (challenger_fairness or {}).items():
        champ_vals = (champion_fairness or {}).get(attr)
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

    return GateResult(
        name=CHAMPION_COMPARISON,
        passed=not violations,
        violations=violations,
        details={
            "champion_version": champion_version,
            "primary": primary_details,
            "metrics": compared,
            "fairness_tolerance": tol,
            "fairness": fair_details,
        },
    )

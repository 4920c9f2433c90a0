"""What every validation gate returns, and the report that collects them for one version.

Every gate looks at *all* of its rules, collects every violation with the numbers behind it and
only then decides (design rule 5), so a rejected version comes with the complete list of
reasons instead of the first one found. Nothing here knows about Prefect or MLflow: the flow
passes numbers in, records the :class:`ValidationReport` it gets back and decides once.

The gates themselves each live in their own module and return a :class:`GateResult`:
:mod:`~mlsteward.governance.threshold_gate` (absolute metric floors and ceilings),
:mod:`~mlsteward.governance.champion_gate` (challenger vs champion) and
:mod:`~mlsteward.governance.fairness` (the one module that talks to fairlearn). This module
holds their names, the result types, the report with its summary and markdown, and the number
formatting their messages share.

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

METRIC_THRESHOLDS = "metric_thresholds"
FAIRNESS = "fairness"
CHAMPION_COMPARISON = "champion_comparison"

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
            regression = _is_regression(groups)
            columns = _REGRESSION_GROUP_COLUMNS if regression else _GROUP_COLUMNS
            out += _table(
                [label for label, _ in columns],
                [[g.get(key) for _, key in columns] for g in groups],
            )
            if regression:
                out += ["Mean residual is prediction - outcome: positive is over-prediction.", ""]
    return out


# (header, key in the group dict) of the per-group fairness table, by task
_GROUP_COLUMNS = [
    ("group", "group"),
    ("n", "size"),
    ("positives", "positives"),
    ("selection rate", "selection_rate"),
    ("TPR", "tpr"),
    ("FPR", "fpr"),
    ("ROC-AUC", "roc_auc"),
    ("gated", "gated"),
]
_REGRESSION_GROUP_COLUMNS = [
    ("group", "group"),
    ("n", "size"),
    ("MAE", "mae"),
    ("RMSE", "rmse"),
    ("mean residual", "mean_residual"),
    ("mean prediction", "mean_prediction"),
    ("mean outcome", "mean_outcome"),
    ("gated", "gated"),
]


def _is_regression(groups: list[dict[str, Any]]) -> bool:
    """A stored report says its task only through what its groups hold: errors, not rates."""
    return any("mae" in g for g in groups)


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

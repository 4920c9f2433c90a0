"""A stored validation report as the card shows it: a verdict, one row per gate, and each
gate's numbers as tables.

The report is the ``ValidationReport.to_dict()`` JSON stored on the version's run. It is read
as plain data, leniently (a report written before a key existed still shows), and each known
gate gets its own tables; an unknown gate is shown as key/value pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mlsteward.config.sections.governance import REGRESSION_FAIRNESS_METRICS
from mlsteward.report.format import MINUS, fmt_delta, fmt_num, fmt_ts, fmt_value
from mlsteward.report.table import Cell, Table, status_cell

GATE_TITLES = {
    "metric_thresholds": "Metric thresholds",
    "fairness": "Fairness",
    "champion_comparison": "Champion comparison",
}
GROUP_HEADER = [
    "group",
    "n",
    "positives",
    "selection rate",
    "TPR",
    "FPR",
    "ROC-AUC",
    "in metrics",
]
REGRESSION_GROUP_HEADER = [
    "group",
    "n",
    "MAE",
    "RMSE",
    "mean residual",
    "mean prediction",
    "mean outcome",
    "in metrics",
]
# A group that carries any of these was assessed as a regression model's group.
_REGRESSION_GROUP_KEYS = ("mae", "rmse", "mean_residual")
MEASURED_ONLY = "measured, not a model input"


@dataclass
class GateView:
    """One gate: its verdict, violations and the tables of the numbers it looked at."""

    name: str
    title: str
    passed: bool
    note: str
    violations: list[dict[str, Any]]
    tables: list[Table]


@dataclass
class ReportView:
    """A validation report: the verdict, one overview row per gate, then each gate."""

    verdict: str
    passed: bool
    created_at: str
    overview: Table
    gates: list[GateView]


def report_view(report: dict[str, Any], measured_only: Iterable[str] = ()) -> ReportView:
    """A stored ``ValidationReport.to_dict()`` as tables; ``measured_only`` names the
    sensitive columns that were never model inputs, so the fairness tables can say so."""
    gates = report.get("gates") or []
    passed = bool(report.get("passed", all(g.get("passed") for g in gates)))
    failed = [g["name"] for g in gates if not g.get("passed")]
    n_viol = sum(len(g.get("violations") or []) for g in gates)
    verdict = (
        f"Passed all {len(gates)} gate(s)"
        if passed
        else f"Rejected: failed {len(failed)} of {len(gates)} gate(s) "
        f"({', '.join(failed)}) with {n_viol} violation(s)"
    )
    overview = Table(
        ["gate", "result", "violations", "note"],
        [
            [
                Cell(GATE_TITLES.get(g["name"], g["name"]), "key"),
                status_cell(bool(g.get("passed"))),
                Cell(fmt_num(len(g.get("violations") or [])), "num"),
                Cell(g.get("note") or "—", "muted" if not g.get("note") else ""),
            ]
            for g in gates
        ],
        ["" if g.get("passed") else "fail" for g in gates],
    )
    return ReportView(
        verdict=verdict,
        passed=passed,
        created_at=fmt_ts(report.get("created_at")),
        overview=overview,
        gates=[gate_view(g, measured_only) for g in gates],
    )


def gate_view(g: dict[str, Any], measured_only: Iterable[str] = ()) -> GateView:
    """One gate's result with its tables (key/value pairs for a gate without its own)."""
    details = g.get("details") or {}
    if g["name"] == "fairness":
        tables = _fairness_tables(details, frozenset(measured_only))
    else:
        tables = _GATE_TABLES.get(g["name"], _generic_tables)(details)
    return GateView(
        name=g["name"],
        title=GATE_TITLES.get(g["name"], g["name"]),
        passed=bool(g.get("passed")),
        note=g.get("note") or "",
        violations=list(g.get("violations") or []),
        tables=tables,
    )


# -- metric thresholds --------------------------------------------------------------------


def _threshold_tables(details: dict[str, Any]) -> list[Table]:
    checks = details.get("checks") or {}
    tables = []
    if checks:
        rows, styles = [], []
        for m, c in checks.items():
            rows.append(
                [
                    Cell(m, "key"),
                    Cell(fmt_num(c.get("value")), "num"),
                    Cell(fmt_num(c.get("min")), "num muted"),
                    Cell(fmt_num(c.get("max")), "num muted"),
                    status_cell(c.get("passed")),
                ]
            )
            styles.append("fail" if c.get("passed") is False else "")
        tables.append(Table(["metric", "value", "min", "max", "result"], rows, styles))
    return tables


# -- fairness -----------------------------------------------------------------------------


def _fairness_tables(details: dict[str, Any], measured_only: frozenset[str]) -> list[Table]:
    """Per sensitive attribute: its metrics against their limits, then its groups."""
    tables = []
    min_size = details.get("min_group_size")
    for attr, a in (details.get("attributes") or {}).items():
        tables.append(_attribute_table(attr, a, attr in measured_only))
        groups = _groups_table(attr, a, min_size)
        if groups is not None:
            tables.append(groups)
    return tables


def _attribute_note(attr: str, a: dict[str, Any], measured: bool) -> str:
    """The gate's own note, then what a reader of the numbers needs: that the column never
    reached the model, and for errors across groups, which way is worse."""
    parts = [a.get("note") or ""]
    if measured:
        parts.append(
            f"{attr} is {MEASURED_ONLY}: kept beside the features only to measure fairness."
        )
    if any(m in REGRESSION_FAIRNESS_METRICS for m in a.get("metrics") or {}):
        parts.append(
            "Errors in the label's units; for every metric here higher is worse (ratios: the "
            "worst group's error over the best group's; bounded_group_loss: the worst group's "
            "MAE)."
        )
    return " ".join(p for p in parts if p)


def _attribute_table(attr: str, a: dict[str, Any], measured: bool = False) -> Table:
    limits = a.get("limits") or {}
    checks = a.get("checks") or {}
    metric_rows, metric_styles = [], []
    for m, v in (a.get("metrics") or {}).items():
        passed = checks.get(m)
        metric_rows.append(
            [
                Cell(m, "key"),
                Cell(fmt_num(v), "num"),
                Cell(fmt_num((limits.get(m) or {}).get("min")), "num muted"),
                Cell(fmt_num((limits.get(m) or {}).get("max")), "num muted"),
                status_cell(passed),
            ]
        )
        metric_styles.append("fail" if passed is False else "")
    return Table(
        ["metric", "value", "min", "max", "result"],
        metric_rows,
        metric_styles,
        title=f"Attribute: {attr}" + (f" ({MEASURED_ONLY})" if measured else ""),
        note=_attribute_note(attr, a, measured),
    )


def _is_regression_group(g: dict[str, Any]) -> bool:
    return any(k in g for k in _REGRESSION_GROUP_KEYS)


def _group_cells(g: dict[str, Any]) -> list[Cell]:
    """A group's numbers: errors and means for a regression model, rates for a classifier."""
    if _is_regression_group(g):
        return [
            Cell(fmt_num(g.get("mae")), "num"),
            Cell(fmt_num(g.get("rmse")), "num"),
            Cell(fmt_delta(g.get("mean_residual")), "num"),
            Cell(fmt_num(g.get("mean_prediction")), "num"),
            Cell(fmt_num(g.get("mean_outcome")), "num"),
        ]
    return [
        Cell(fmt_num(g.get("positives")), "num"),
        Cell(fmt_num(g.get("selection_rate")), "num"),
        Cell(fmt_num(g.get("tpr")), "num"),
        Cell(fmt_num(g.get("fpr")), "num"),
        Cell(fmt_num(g.get("roc_auc")), "num"),
    ]


def _groups_table(attr: str, a: dict[str, Any], min_size: Any) -> Table | None:
    """The attribute's groups; a group too small to gate is marked (row style ``small``)."""
    groups = [g for g in a.get("groups") or [] if isinstance(g, dict)]
    if not groups:
        return None
    regression = any(_is_regression_group(g) for g in groups)
    group_rows, group_styles = [], []
    for g in groups:
        gated = g.get("gated", True)
        group_rows.append(
            [
                Cell(str(g.get("group")), "key"),
                Cell(fmt_num(g.get("size")), "num"),
                *_group_cells(g),
                Cell("yes", "ok") if gated else Cell("no: small group", "warn"),
            ]
        )
        group_styles.append("" if gated else "small")
    notes = []
    if min_size is not None:
        notes.append(
            f"In metrics: groups of at least {fmt_num(min_size)} rows enter the "
            "fairness metrics; smaller ones are only reported."
        )
    if regression:
        notes.append(
            f"Mean residual: prediction {MINUS} outcome, positive where the model predicts too "
            "much for the group."
        )
    return Table(
        list(REGRESSION_GROUP_HEADER if regression else GROUP_HEADER),
        group_rows,
        group_styles,
        title=f"Groups of {attr}",
        note=" ".join(notes),
    )


# -- champion comparison ------------------------------------------------------------------


def _comparison_tables(details: dict[str, Any]) -> list[Table]:
    """The primary metric against the champion's, then each fairness metric's worsening."""
    tables = []
    p = details.get("primary") or {}
    champ = details.get("champion_version")
    if p and champ is not None:
        tables.append(_primary_table(p, champ))
    fairness = _fairness_comparison_table(details)
    if fairness is not None:
        tables.append(fairness)
    return tables


def _primary_table(p: dict[str, Any], champ: Any) -> Table:
    needed = "> 0" if not p.get("min_delta") else "≥ " + fmt_num(p["min_delta"])
    lower = p.get("direction") == "lower is better"
    note = (
        f"Improvement: how much lower the challenger's {p.get('metric')} is than the "
        "champion's (lower is better), so a positive number is a gain."
        if lower
        else ""
    )
    return Table(
        ["primary metric", "challenger", f"champion v{champ}", "improvement", "needed"],
        [
            [
                Cell(str(p.get("metric")), "key"),
                Cell(fmt_num(p.get("challenger")), "num"),
                Cell(fmt_num(p.get("champion")), "num"),
                Cell(fmt_delta(p.get("improvement")), "num"),
                Cell(f"{needed} ({p.get('delta_mode', 'absolute')}, {p.get('direction', '')})"),
            ]
        ],
        ["fail" if p.get("passed") is False else ""],
        note=note,
    )


def _fairness_comparison_table(details: dict[str, Any]) -> Table | None:
    fair = details.get("fairness") or {}
    rows, styles = [], []
    for attr, per in fair.items():
        for m, v in per.items():
            rows.append(
                [
                    Cell(attr, "key"),
                    Cell(m),
                    Cell(fmt_num(v.get("challenger")), "num"),
                    Cell(fmt_num(v.get("champion")), "num"),
                    Cell(fmt_delta(v.get("worsening")), "num"),
                    status_cell(v.get("passed")),
                ]
            )
            styles.append("fail" if v.get("passed") is False else "")
    if not rows:
        return None
    tol = details.get("fairness_tolerance")
    return Table(
        ["attribute", "metric", "challenger", "champion", "worsening", "result"],
        rows,
        styles,
        title="Fairness vs champion",
        note=f"Tolerance {fmt_num(tol)}." if tol is not None else "",
    )


# -- any other gate -----------------------------------------------------------------------


def _generic_tables(details: dict[str, Any]) -> list[Table]:
    rows = [[Cell(k, "key"), Cell(fmt_value(v), "code")] for k, v in details.items()]
    return [Table(["", ""], rows, kind="kv")] if rows else []


_GATE_TABLES: dict[str, Callable[[dict[str, Any]], list[Table]]] = {
    "metric_thresholds": _threshold_tables,
    "champion_comparison": _comparison_tables,
}

"""Bias drift: the fairness metrics that gate promotion, measured again on production.

The fairness gate judged a version on its holdout; the population it serves, and what happens
to each group, can move afterwards. Outcomes arrive late, so this check reads a long window of
the prediction log (``alerts.rules.bias_drift.window_days``) and keeps the rows whose outcome
has arrived (joined on (entity, event time), the newest label winning, as
``prediction_log.read_with_labels`` joins them). On those rows it computes what the gate
computes, with the gate's own code: ``governance.fairness`` cuts the groups (buckets, the
``missing`` group), builds the per-group table (rows, positives, selection rate, TPR, FPR; a
regression model's errors per group), leaves groups under ``fairness.min_group_size`` out of
the metrics, and ``fairness_gate`` holds each metric against ``fairness.limits_for(attribute)``.
So a metric breaches in production exactly when the same rows would have failed the gate.

Choices, and why:

* **The logged answer is the prediction.** A classifier's rows carry the label the version
  answered at its own cut-off (``prediction``) beside the probability; that label is what
  reached people, so it is what the rates are computed from (no threshold is applied again).
* **A sensitive column that is not a feature is logged only when given**: the service logs
  ``attributes`` beside a request's rows, and batch scoring logs features only. A row without
  it is *unattributed* and left out of that attribute's table (counted, never read as a
  ``missing`` group, which would mix "not asked" with "not known"). A feature's own missing
  values are the gate's ``missing`` group, as on the holdout.
* **Too little evidence is no verdict.** Fewer than ``min_labelled_rows`` labelled rows with
  the attribute, or a metric the gate could not assess (fewer than two groups large enough, a
  group without positives), give ``breached`` None: nothing fires and nothing resolves.
* **Memory is the labelled rows, not the window.** The log is read with ``pyarrow.dataset``,
  only the key, output, version and sensitive columns, batch by batch; each batch is joined to
  the labels in Arrow and only the labelled rows are kept.
* **Time is bounded by the groups, not the window.** fairlearn's ``MetricFrame`` handles every
  row in Python, so a group larger than ``max_group_rows`` is measured on that many of its
  rows, drawn (seeded) in proportion to each of its (outcome, answer) cells: its selection
  rate, TPR and FPR stay the whole group's up to one row per cell (a regression model's
  errors, drawn at random, to sampling error). The table's sizes and positives still count
  every row, and smaller groups keep all theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.governance import SensitiveAttribute
from mlsteward.errors import MlstewardError
from mlsteward.governance.fairness import (
    AttributeFairness,
    assess_attribute,
    assess_regression_attribute,
    fairness_gate,
    group_labels,
)
from mlsteward.governance.gates import fmt
from mlsteward.governance.threshold_gate import bound_violation
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.columns import PREDICTION_COLUMN, PROBA_COLUMN, VERSION_COLUMN

RULE = "bias_drift"
MAX_GROUP_ROWS = 10_000
"""Rows per group the rates are measured on: fairlearn's ``MetricFrame`` handles each row of
each metric's arguments in Python (0.07-0.1 ms a row for the classification table: 20-30 s for
300,000 labelled rows and one attribute), and 10,000 rows drawn per cell measure a rate to
within one row per cell."""
SEED = 0
BATCH_ROWS = 1 << 20
"""Log rows joined to the labels at a time (the files' batches gathered up to it): each join
hashes the labels once, so fewer, larger joins cost less; a million rows of the few columns
read is tens of megabytes."""


@dataclass
class AttributeBias:
    """One sensitive attribute on the labelled production rows.

    ``rows`` are the labelled rows that carry the attribute, ``unattributed`` those that do
    not; ``fairness`` is the gate's table and metrics (None when no row carries it);
    ``checks`` per gated metric: True within its limit, False breached, None no verdict.
    """

    attribute: str
    logged: bool
    rows: int
    unattributed: int
    fairness: AttributeFairness | None
    limits: dict[str, dict[str, float | None]]
    checks: dict[str, bool | None]
    messages: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        fair = self.fairness.to_dict() if self.fairness is not None else {}
        return {
            "attribute": self.attribute,
            "logged": self.logged,
            "rows": self.rows,
            "unattributed": self.unattributed,
            "metrics": fair.get("metrics", {}),
            "groups": fair.get("groups", []),
            "small_groups": fair.get("small_groups", []),
            "limits": self.limits,
            "checks": self.checks,
            "note": "; ".join(n for n in (self.note, fair.get("note", "")) if n),
        }


@dataclass
class BiasResult:
    """The gated fairness metrics over one labelled window of the prediction log."""

    model: str
    task: str
    version: str | None
    since: datetime
    until: datetime
    rows: int
    labelled_rows: int
    min_labelled_rows: int
    min_group_size: int
    attributes: dict[str, AttributeBias]
    notes: list[str] = field(default_factory=list)

    @property
    def breached(self) -> list[str]:
        """``attribute:metric`` of every gated metric past its limit."""
        return [
            f"{a.attribute}:{m}" for a in self.attributes.values() for m, ok in a.checks.items()
            if ok is False
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "version": self.version,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "min_labelled_rows": self.min_labelled_rows,
            "min_group_size": self.min_group_size,
            "breached": self.breached,
            "attributes": {k: a.to_dict() for k, a in self.attributes.items()},
            "notes": list(self.notes),
        }

    def observations(self, cfg: ModelConfig, version: str | None) -> list[Observation]:
        """One verdict per gated (attribute, metric), subject ``attribute:metric``, for
        ``alerts.engine.observe``."""
        out = []
        for spec in cfg.sensitive_attributes:
            a = self.attributes.get(spec.column)
            for metric, bound in cfg.fairness.limits_for(spec).items():
                if not bound.gated:
                    continue
                value = a.fairness.metrics.get(metric) if a and a.fairness else None
                verdict = a.checks.get(metric) if a else None
                broken = bound_violation(value, bound) if value is not None else None
                limit = broken[1] if broken else bound.max if bound.max is not None else bound.min
                out.append(
                    Observation(
                        rule=RULE,
                        breached=None if verdict is None else not verdict,
                        summary=self._summary(spec, metric, a, verdict, value),
                        value=value,
                        limit=limit,
                        subject=f"{spec.column}:{metric}",
                        version=version,
                        details={
                            "attribute": spec.column,
                            "metric": metric,
                            "bound": {"min": bound.min, "max": bound.max},
                            "rows": a.rows if a else 0,
                            "labelled_rows": self.labelled_rows,
                            "since": self.since.isoformat(),
                            "groups": a.to_dict()["groups"] if a else [],
                        },
                    )
                )
        return out

    def _summary(
        self,
        spec: SensitiveAttribute,
        metric: str,
        a: AttributeBias | None,
        verdict: bool | None,
        value: float | None,
    ) -> str:
        where = f"on {a.rows if a else 0} labelled prediction(s) since {self.since:%Y-%m-%d}"
        if a is not None and verdict is False:
            return f"{a.messages[metric]} {where}"
        if verdict is True:
            return f"{spec.column}: {metric} {fmt(value, 3)} within its limit {where}"
        reason = (a.note if a else "") or "not assessable"
        if a is not None and a.fairness is not None and a.fairness.note:
            reason = "; ".join(n for n in (a.note, a.fairness.note) if n)
        return f"{spec.column}: {metric} no verdict {where} ({reason})"


# -- reading the labelled window ----------------------------------------------------------------


def _labels_table(
    labels: pd.DataFrame, entity: str, timestamp: str, schema: pa.Schema, model: str
) -> pa.Table:
    """The labels' keys and outcome, typed as the log types its key columns (a join compares
    types exactly)."""
    table = pa.Table.from_pandas(
        labels[[entity, timestamp, prediction_log.LABEL]], preserve_index=False
    )
    for name in (entity, timestamp):
        if name not in schema.names:
            raise MlstewardError(
                f"{model}: the prediction log has no {name!r} column to join outcomes on"
            )
        want = schema.field(name).type
        if table.schema.field(name).type != want:
            try:
                column = table.column(name).cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise MlstewardError(
                    f"{model}: outcome column {name!r} ({table.schema.field(name).type}) cannot "
                    f"be compared with the logged {want}"
                ) from exc
            table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def labelled_window(
    cfg: ModelConfig, since: pd.Timestamp, until: pd.Timestamp, version: str | None = None
) -> tuple[pd.DataFrame, int, list[str]]:
    """The window's labelled rows (keys, outputs, the logged sensitive columns, ``label``), how
    many rows the window holds, and which sensitive columns the log has at all."""
    outputs = [PREDICTION_COLUMN] if cfg.is_regression else [PROBA_COLUMN, PREDICTION_COLUMN]
    files = prediction_log.batch_files(cfg.name, since, until)
    if not files:
        return pd.DataFrame(), 0, []
    dataset = prediction_log.open_dataset(files)
    names = dataset.schema.names
    flt = prediction_log.window_filter(since, until)
    if version is not None:
        mine = ds.field(VERSION_COLUMN) == pa.scalar(version, pa.string())
        flt = mine if flt is None else flt & mine
    logged = [a.column for a in cfg.sensitive_attributes if a.column in names]
    rows = dataset.count_rows(filter=flt) if version is None or VERSION_COLUMN in names else 0
    read = prediction_log.read_labels(cfg.name)
    if read is None or rows == 0:
        return pd.DataFrame(), rows, logged
    labels, entity, timestamp = read
    missing = [c for c in outputs if c not in names]
    if missing:
        raise MlstewardError(
            f"{cfg.name}: the prediction log has no {missing} column(s); a {cfg.task} model's "
            "rows carry them"
        )
    keys = _labels_table(labels, entity, timestamp, dataset.schema, cfg.name)
    columns = list(dict.fromkeys([entity, timestamp, *outputs, *logged]))
    parts: list[pa.Table] = []
    pending: list[pa.RecordBatch] = []

    def join_pending() -> None:
        if pending:
            chunk = pa.Table.from_batches(pending)
            pending.clear()
            parts.append(chunk.join(keys, keys=[entity, timestamp], join_type="inner"))

    for batch in dataset.to_batches(columns=columns, filter=flt):
        pending.append(batch)
        if sum(b.num_rows for b in pending) >= BATCH_ROWS:
            join_pending()
    join_pending()
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return pd.DataFrame(), rows, logged
    return pa.concat_tables(parts).to_pandas(), rows, logged


# -- the check ----------------------------------------------------------------------------------


def bounded_rows(
    groups: np.ndarray, strata: list[np.ndarray], cap: int, seed: int = SEED
) -> np.ndarray | None:
    """Positions of at most about ``cap`` rows per group, or None when no group is larger.

    A larger group keeps the same share of each of its strata (a classifier's (outcome,
    answer) cells), the rows within a stratum drawn at random (seeded): its selection rate,
    TPR and FPR stay those of the whole group up to one row per cell, and the other groups are
    untouched, so a small group never falls under ``min_group_size`` because a large one was cut.
    """
    counts = pd.Series(groups).value_counts()
    if (counts <= cap).all():
        return None
    keys = pd.DataFrame({"g": groups, **{f"s{i}": s for i, s in enumerate(strata)}})
    by = list(keys.columns)
    share = keys["g"].map((cap / counts).clip(upper=1.0)).to_numpy()
    keys["k"] = np.random.default_rng(seed).random(len(keys))
    size = keys.groupby(by, sort=False)["k"].transform("size").to_numpy()
    rank = keys.groupby(by, sort=False)["k"].rank(method="first").to_numpy()
    return np.flatnonzero(rank <= np.round(size * share))


def _assess(
    cfg: ModelConfig, spec: SensitiveAttribute, frame: pd.DataFrame, max_group_rows: int
) -> tuple[AttributeFairness | None, int, str]:
    """The gate's numbers for one attribute on the labelled rows that carry it; how many rows
    were left out and why."""
    values = frame[spec.column]
    keep = np.ones(len(frame), dtype=bool)
    notes = []
    if spec.column not in cfg.feature_names:
        keep &= values.notna().to_numpy()
    dropped = int((~keep).sum())
    if dropped:
        notes.append(f"{dropped} labelled row(s) were logged without {spec.column!r}")
    positive = cfg.label_values[1]
    if cfg.is_regression:
        outcome = pd.to_numeric(frame[prediction_log.LABEL], errors="coerce").to_numpy(np.float64)
        answer = pd.to_numeric(frame[PREDICTION_COLUMN], errors="coerce").to_numpy(np.float64)
        finite = np.isfinite(outcome) & np.isfinite(answer)
        if (keep & ~finite).any():
            notes.append(f"{int((keep & ~finite).sum())} row(s) without a finite error")
        keep &= finite
    else:
        outcome = (frame[prediction_log.LABEL].to_numpy() == positive).astype(np.int64)
        answer = (frame[PREDICTION_COLUMN].to_numpy() == positive).astype(np.int64)
    if not keep.any():
        return None, dropped, "; ".join(notes)
    values, outcome, answer = values[keep].reset_index(drop=True), outcome[keep], answer[keep]
    mgs = cfg.fairness.min_group_size
    groups = group_labels(values, spec).to_numpy()
    strata = [] if cfg.is_regression else [outcome, answer]
    chosen = bounded_rows(groups, strata, max(max_group_rows, 2 * mgs))
    rows = np.arange(len(values)) if chosen is None else chosen
    if cfg.is_regression:
        fairness = assess_regression_attribute(
            values.iloc[rows], outcome[rows], answer[rows], spec, mgs
        )
    else:
        proba = frame.loc[keep, PROBA_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
        fairness = assess_attribute(
            values.iloc[rows], outcome[rows], answer[rows], proba[rows], spec, mgs
        )
    if chosen is not None:
        # the table counts every labelled row; the rates come from the rows measured
        sizes = pd.Series(groups).value_counts()
        positives = pd.Series(outcome).groupby(groups).sum()
        for g in fairness.groups:
            g["measured"] = g["size"]
            g["size"] = int(sizes[g["group"]])
            if "positives" in g:
                g["positives"] = int(positives[g["group"]])
        notes.append(
            f"rates measured on at most {max_group_rows:,} rows per group (seeded"
            + ("" if cfg.is_regression else ", in proportion to each (outcome, answer) cell")
            + ")"
        )
    return fairness, dropped, "; ".join(notes)


def check_bias(
    cfg: ModelConfig,
    *,
    now: datetime | None = None,
    version: str | None = None,
    max_group_rows: int = MAX_GROUP_ROWS,
) -> BiasResult:
    """The gated fairness metrics over the labelled predictions of the last
    ``alerts.rules.bias_drift.window_days``.

    Args:
        cfg: The model's config (sensitive attributes, fairness limits, the rule).
        now: The window's end (default now; naive means UTC).
        version: Only the rows this version answered (e.g. the champion, leaving a canary's
            rows out); None reads every version's rows, as production served them.
        max_group_rows: Rows a group's rates are measured on, at most (see
            :func:`bounded_rows`); the table's sizes and positives count every row.

    Raises:
        MlstewardError: the log lacks the model's output or key columns, or the outcomes'
            keys cannot be compared with the logged ones.
    """
    rule = cfg.alerts.rules.bias_drift
    until = prediction_log.utc_ts(now or datetime.now(UTC))
    since = until - timedelta(days=rule.window_days)
    frame, rows, logged = labelled_window(cfg, since, until, version)
    labelled = len(frame)
    assessed: dict[str, AttributeFairness] = {}
    partial: dict[str, tuple[int, int, str]] = {}
    for spec in cfg.sensitive_attributes:
        if spec.column not in logged or frame.empty:
            continue
        fairness, dropped, note = _assess(cfg, spec, frame, max_group_rows)
        partial[spec.column] = (labelled - dropped, dropped, note)
        if fairness is not None:
            assessed[spec.column] = fairness
    gate = fairness_gate(assessed, cfg)
    checked = gate.details["attributes"]
    messages: dict[str, dict[str, str]] = {}
    for v in gate.violations:
        messages.setdefault(v.attribute or "", {})[v.metric] = v.message
    attributes: dict[str, AttributeBias] = {}
    for spec in cfg.sensitive_attributes:
        limits = cfg.fairness.limits_for(spec)
        attr_rows, dropped, note = partial.get(spec.column, (0, labelled, ""))
        if spec.column not in logged:
            note = f"{spec.column!r} is not in the prediction log"
        enough = attr_rows >= rule.min_labelled_rows
        if spec.column in logged and not enough:
            note = "; ".join(
                n
                for n in (
                    note,
                    f"{attr_rows} labelled row(s) carry it, fewer than min_labelled_rows "
                    f"{rule.min_labelled_rows}: no verdict",
                )
                if n
            )
        gated_checks = checked.get(spec.column, {}).get("checks", {})
        attributes[spec.column] = AttributeBias(
            attribute=spec.column,
            logged=spec.column in logged,
            rows=attr_rows,
            unattributed=dropped,
            fairness=assessed.get(spec.column),
            limits={m: {"min": b.min, "max": b.max} for m, b in limits.items()},
            checks={
                m: (gated_checks.get(m) if enough else None) for m, b in limits.items() if b.gated
            },
            messages=messages.get(spec.column, {}) if enough else {},
            note=note,
        )
    notes = []
    if rows and not labelled:
        notes.append(f"none of the {rows} prediction(s) in the window has an outcome yet")
    return BiasResult(
        model=cfg.name,
        task=cfg.task,
        version=version,
        since=since.to_pydatetime(),
        until=until.to_pydatetime(),
        rows=rows,
        labelled_rows=labelled,
        min_labelled_rows=rule.min_labelled_rows,
        min_group_size=cfg.fairness.min_group_size,
        attributes=attributes,
        notes=notes,
    )

"""Drift between a reference window and a current window: the one module that talks to Evidently.

Why an adapter: Evidently's API moves between minor versions (0.4 → 0.7 replaced the whole
metric model), so everything else in mlsteward sees only :class:`DriftResult`, our own typed
result. Evidently stays the engine for the statistics; this module decides what it computes:

- one ``ValueDrift(column=..., method=..., threshold=...)`` per feature (plus the prediction and
  the label when both sides have them), with the method chosen explicitly from ``cfg.drift``, so
  Evidently never picks a test by counting unique values over a whole column, and nothing is
  computed twice (``DataDriftPreset`` computes each column's drift three times);
- a ``DataDefinition`` that declares numeric vs categorical from the config's feature dtypes
  (``bool`` and ``category`` are categorical), instead of letting Evidently guess;
- each column in its own Report on a one-column Dataset, so Evidently's per-column copies of
  "the whole dataset" are that one column (same statistics and widgets; one HTML page);
- ``include_tests=True``, because the drift verdict per column is only exposed as the status of
  the metric's test (FAIL = drift detected). We use that verdict rather than re-deriving it from
  the score, so p-value tests (drift when p < threshold) and distances (drift when
  score >= threshold) are judged by Evidently itself;
- the HTML is written only when ``html_path`` is given.

Results are read by each metric's own config (``type`` ending in ``ValueDrift``, ``column``,
``method``, ``threshold``), never by position in the report.

Large windows are sampled down to ``cfg.drift.max_rows`` rows per side (seeded, stratified by the
label when present) and the sampling is recorded in the result. A prediction-log window larger
than that arrives already pre-sampled by :func:`mlsteward.monitoring.prediction_log.sample_window`
(memory
bounded by the cap, not the window); ``presample`` carries how, so the result and the HTML say
how many rows the window had and how each cut was drawn (:func:`sampling_lines`).

Outcomes arrive late, so a current window (the prediction log) often has labels for only part of
its rows. Features and the prediction are compared on every row; target drift and quality only
on the rows whose outcome has arrived, in a second small Report on exactly those rows (sampled
on their own, so a large window with sparse outcomes keeps up to ``max_rows`` of them), so the
target drift, the quality and the labelled row count reported all describe the same rows,
whatever Evidently does with nulls. With fewer than ``cfg.drift.min_labelled_rows`` such rows
neither is computed, and the result says so in ``notes`` instead of reporting a quality figure
that is mostly chance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlsteward.config.models import EVALUATION_METRICS, FeatureSpec, ModelConfig
from mlsteward.errors import MlstewardError

Kind = Literal["numeric", "categorical"]

# Metrics compared between the windows when both sides carry labels and probabilities: the
# ones the gates evaluate, so a drop here means what it means there.
PERFORMANCE_METRICS = EVALUATION_METRICS


@dataclass(frozen=True)
class ColumnDriftResult:
    """Evidently's verdict on one column: the method, its score and threshold, drifted or not."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    kind: str  # "numeric" | "categorical"


@dataclass
class DriftResult:
    """Everything a drift run measured, in our own terms (JSON round-trips via to/from_dict)."""

    columns: dict[str, ColumnDriftResult]  # every feature, in config order
    drifted_columns: list[str]  # features only, in config order
    dataset_drift_share: float  # drifted features / features
    prediction_drift: ColumnDriftResult | None = None  # when both sides have the probability
    target_drift: ColumnDriftResult | None = None  # when both sides have the label
    # {"reference": {metric: v}, "current": {...}, "change": {metric: current - reference},
    #  "decision_threshold": t} when both sides have label and probability and the current
    #  side has enough labelled rows; "current" is measured on those rows only
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
        )


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


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


# -- which test for which column ------------------------------------------------------------
def _kind(spec: FeatureSpec, data: pd.DataFrame | None = None) -> Kind:
    """bool and category are categorical; int and float numeric; no dtype: judged from data."""
    if spec.dtype in ("category", "bool"):
        return "categorical"
    if spec.dtype in ("int", "float"):
        return "numeric"
    if data is not None and spec.name in data.columns:
        s = data[spec.name]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            return "numeric"
        return "categorical"
    return "numeric"


def column_methods(
    cfg: ModelConfig, data: pd.DataFrame | None = None
) -> dict[str, tuple[str, float | None, str]]:
    """Per feature, in config order: ``(method, threshold or None, kind)`` from ``cfg.drift``.

    The per-type method (``numeric_method`` / ``categorical_method``) applies unless the column
    has an override in ``cfg.drift.columns``; the threshold is the column's override, else the
    global ``cfg.drift.threshold``, else None (Evidently's default for that method). A feature
    without a configured dtype is judged from ``data`` when given, else taken as numeric.
    """
    policy = cfg.drift
    out: dict[str, tuple[str, float | None, str]] = {}
    for spec in cfg.features:
        kind = _kind(spec, data)
        override = policy.columns.get(spec.name)
        method = policy.numeric_method if kind == "numeric" else policy.categorical_method
        threshold = policy.threshold
        if override is not None:
            method = override.method or method
            threshold = override.threshold if override.threshold is not None else threshold
        out[spec.name] = (method, threshold, kind)
    return out


# -- input checks ----------------------------------------------------------------------------
def _dtype_problem(s: pd.Series, spec: FeatureSpec) -> str | None:
    """Why ``s`` cannot be the configured dtype, or None when it can."""
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    if spec.dtype == "float" and not numeric:
        return f"dtype {s.dtype} where the config says float"
    if spec.dtype == "int":
        if not numeric:
            return f"dtype {s.dtype} where the config says int"
        if pd.api.types.is_float_dtype(s):
            v = s.dropna().to_numpy()
            if len(v) and not np.all(np.mod(v, 1) == 0):
                return "fractional values where the config says int"
    if spec.dtype == "bool" and not pd.api.types.is_bool_dtype(s):
        values = set(pd.unique(s.dropna()))
        if not values <= {0, 1}:
            return f"dtype {s.dtype} with values other than 0/1 where the config says bool"
    if spec.dtype == "category" and numeric:
        return f"numeric dtype {s.dtype} where the config says category"
    return None


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, cfg: ModelConfig) -> None:
    """Collect every missing or mistyped feature on both sides, then fail once, naming them."""
    problems = []
    for side, frame in (("reference", reference), ("current", current)):
        missing = [f.name for f in cfg.features if f.name not in frame.columns]
        if missing:
            problems.append(f"{side}: missing feature column(s) {missing}")
        for spec in cfg.features:
            if spec.name in frame.columns and spec.dtype is not None:
                why = _dtype_problem(frame[spec.name], spec)
                if why:
                    problems.append(f"{side}: column {spec.name!r} has {why}")
    if problems:
        raise MlstewardError(
            f"drift check for model {cfg.name!r} cannot run: " + "; ".join(problems)
        )


# -- sampling --------------------------------------------------------------------------------
def _sample(
    frame: pd.DataFrame, max_rows: int, seed: int, side: str, label: str | None
) -> tuple[pd.DataFrame, dict | None]:
    """A seeded random sample of ``max_rows`` rows, stratified by ``label`` when present."""
    n = len(frame)
    if n <= max_rows:
        return frame, None
    rng = np.random.default_rng([seed, 0 if side == "reference" else 1])
    if label is not None and label in frame.columns:
        codes, _ = pd.factorize(frame[label], use_na_sentinel=False)
        counts = np.bincount(codes)
        exact = counts * (max_rows / n)
        take = np.floor(exact).astype(np.int64)
        # largest remainders get the rows that flooring left over
        for g in np.argsort(-(exact - take), kind="stable")[: max_rows - int(take.sum())]:
            take[g] += 1
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        parts = [
            rng.choice(order[s : s + c], size=k, replace=False)
            for s, c, k in zip(starts, counts, take, strict=True)
        ]
        idx = np.sort(np.concatenate(parts))
        method = f"stratified by {label}"
    else:
        idx = np.sort(rng.choice(n, size=max_rows, replace=False))
        method = "uniform random"
    info = {"rows_before": n, "rows_after": len(idx), "method": method, "seed": seed}
    return frame.iloc[idx], info


def _with_presample(
    info: dict | None, rows: int, seed: int, presample: dict, window_rows: int
) -> dict:
    """The final cut's record (``info``, None when it kept every row) on top of the reader's
    pre-sample, so one entry says: the window's rows, how the pre-sample was drawn, the cut."""
    base = info or {"rows_before": rows, "rows_after": rows, "method": "every row", "seed": seed}
    drawn = {k: presample[k] for k in ("rows", "rate", "seed", "key", "method") if k in presample}
    return {"rows_in_window": window_rows, "presample": drawn, **base}


def sampling_lines(sampling: dict, rows: dict[str, int] | None = None) -> list[str]:
    """One plain sentence per side saying how many rows were compared out of how many, and how
    they were drawn: the line the HTML report, the Prefect artifact and the model card show, so
    a reader never takes a sample's statistics for the whole window's."""
    lines = []
    for side in ("reference", "current", "current_labelled"):
        info = sampling.get(side)
        if not isinstance(info, dict):
            continue
        name = side.replace("_", " ")
        after = int(info.get("rows_after", 0))
        cut = f"{info.get('method', '?')}, seed {info.get('seed', '?')}"
        pre = info.get("presample")
        if isinstance(pre, dict):
            rate = pre.get("rate")
            how = f"rate {rate:.4g}, " if isinstance(rate, int | float) else ""
            lines.append(
                f"{name}: {after:,} of {int(info.get('rows_in_window', 0)):,} rows; seeded "
                f"pre-sample of {int(pre.get('rows', 0)):,} read from the log ({how}seed "
                f"{pre.get('seed', '?')}, key: {pre.get('key', '?')}), then sample ({cut})"
            )
        else:
            lines.append(
                f"{name}: {after:,} of {int(info.get('rows_before', 0)):,} rows, "
                f"seeded sample ({cut})"
            )
    if not lines and rows:
        counts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in rows.items())
        lines.append(f"no sampling: every row compared ({counts})")
    return lines


def _annotate_html(path: Path, lines: list[str]) -> None:
    """Put the sampling sentences at the top of Evidently's page, visible before any chart."""
    from html import escape

    if not lines:
        return
    text = path.read_text(encoding="utf-8")
    banner = (
        '<div class="mlsteward-sampling" style="font-family:sans-serif;font-size:14px;'
        'padding:8px 16px;background:#f4f4f4;border-bottom:1px solid #ddd">'
        "<b>Rows compared</b><br>" + "<br>".join(escape(line) for line in lines) + "</div>"
    )
    head, tag, rest = text.partition("<body>")
    if not tag:  # Evidently changed its page: keep the line anyway, at the very top
        path.write_text(banner + text, encoding="utf-8")
        return
    path.write_text(head + tag + "\n" + banner + rest, encoding="utf-8")


# -- Evidently -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    column: str
    method: str
    threshold: float | None
    kind: str


def _evidently_pair(
    reference: pd.DataFrame, current: pd.DataFrame, spec: _Spec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One column per side as a one-column frame; text categories as pandas categoricals.

    Why categoricals: Evidently counts categories with ``value_counts``, which on Python-object
    strings costs about 1.2 s per 1M-row column against 0.07 s on a categorical (same counts,
    same score). Both sides get one shared category list (the union, sorted) so codes mean the
    same on each side.
    """
    r, c = reference[spec.column], current[spec.column]
    if spec.kind == "categorical" and (
        pd.api.types.is_object_dtype(r)
        or pd.api.types.is_object_dtype(c)
        or pd.api.types.is_string_dtype(r)
        or isinstance(r.dtype, pd.CategoricalDtype)
    ):
        values = pd.unique(pd.concat([pd.Series(r.unique()), pd.Series(c.unique())]).dropna())
        dtype = pd.CategoricalDtype(sorted(values, key=str))
        r, c = r.astype(dtype), c.astype(dtype)
    return r.to_frame(), c.to_frame()


def _read_value_drift(snapshot: Any, spec: _Spec) -> ColumnDriftResult | None:
    """The ValueDrift result for ``spec`` in ``snapshot``, found by the metric's own config."""
    for result in snapshot.metric_results.values():
        location = getattr(result, "metric_value_location", None)
        params = dict(location.metric.params) if location is not None else {}
        if not str(params.get("type", "")).endswith("ValueDrift"):
            continue
        if (params.get("column"), params.get("method")) != (spec.column, spec.method):
            continue
        statuses = {str(getattr(t.status, "value", t.status)).upper() for t in result.tests}
        if statuses not in ({"FAIL"}, {"SUCCESS"}):
            raise MlstewardError(
                f"Evidently gave no drift verdict for column {spec.column!r} "
                f"(test statuses {sorted(statuses)}); the installed Evidently may have changed"
            )
        return ColumnDriftResult(
            column=spec.column,
            method=str(params["method"]),
            score=float(result.value),
            threshold=float(params["threshold"]),
            drifted=statuses == {"FAIL"},
            kind=spec.kind,
        )
    return None


def _save_html(parts: list[Any], html_path: Path) -> str:
    """One HTML page from the per-column snapshots, laid out as one Report's would be.

    Evidently's own serialisation model (``Snapshot.to_snapshot_model`` / ``load_model``)
    carries each part's metric results and widgets; the test summary is rebuilt over all parts
    with the same two widgets ``Snapshot.run`` builds.
    """
    from datetime import datetime

    from evidently.core.metric_types import metric_tests_widget
    from evidently.core.report import Snapshot, metric_tests_stats
    from evidently.core.serialization import ReportModel, SnapshotModel

    results = {k: v for p in parts for k, v in p.metric_results.items()}
    top = [m for p in parts for m in p.top_level_metrics]
    tests = [t for m in top for t in results[m].tests]
    merged = SnapshotModel(
        report=ReportModel(items=[]),
        name=None,
        timestamp=parts[0].timestamp if parts else datetime.now(),
        metadata={},
        tags=[],
        metric_results=results,
        top_level_metrics=top,
        widgets=[w for p in parts for w in p.widgets],
        tests_widgets=[metric_tests_stats(tests), metric_tests_widget(tests)] if tests else [],
    )
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    Snapshot.load_model(merged).save_html(str(html_path))
    return str(html_path)


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    specs: list[_Spec],
    html_path: Path | None,
) -> tuple[dict[str, ColumnDriftResult], str | None]:
    """One ValueDrift per column, each in its own Report on a one-column Dataset; one HTML.

    Why one column at a time: Evidently 0.7's ``ValueDrift`` copies the whole current Dataset
    (every column, not just its own) for the time-index plot of each numeric column, and
    ``Dataset.from_pandas`` copies the frame it is given. On a one-column Dataset those copies
    are that column alone, so the memory drift adds stays at about one column's worth of
    Evidently's working arrays however wide the frame, and the time spent copying other columns
    goes away. The statistics, verdicts and widgets are the same as in one Report over all
    columns; the HTML (when ``html_path`` is given) puts the columns together again.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    found: dict[str, ColumnDriftResult] = {}
    parts: list[Any] = []
    for spec in specs:
        ref_frame, cur_frame = _evidently_pair(reference, current, spec)
        # Every column list given (empty ones too): otherwise Evidently infers the missing
        # kinds from the data.
        definition = DataDefinition(
            numerical_columns=[spec.column] if spec.kind == "numeric" else [],
            categorical_columns=[spec.column] if spec.kind == "categorical" else [],
            text_columns=[],
            datetime_columns=[],
            unknown_columns=[],
            list_columns=[],
        )
        report = Report(
            [ValueDrift(column=spec.column, method=spec.method, threshold=spec.threshold)],
            include_tests=True,
        )
        try:
            snapshot = report.run(
                Dataset.from_pandas(cur_frame, data_definition=definition),
                Dataset.from_pandas(ref_frame, data_definition=definition),
            )
        except ValueError as exc:  # e.g. a column that is empty (all null) on one side
            raise MlstewardError(f"Evidently could not compute drift: {exc}") from exc
        del ref_frame, cur_frame
        result = _read_value_drift(snapshot, spec)
        if result is not None:
            found[spec.column] = result
        if html_path is not None:
            parts.append(snapshot.to_snapshot_model())  # results and widgets, no data
        del snapshot  # its Datasets go with it
    lost = [s.column for s in specs if s.column not in found]
    if lost:
        raise MlstewardError(f"Evidently returned no ValueDrift result for column(s) {lost}")
    report_path = _save_html(parts, html_path) if html_path is not None else None
    return found, report_path


def _performance(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    label: str,
    prediction: str,
    threshold: float,
) -> dict:
    """Quality on both windows with the same definitions the validation gates use.

    Uses :func:`mlsteward.training.fitting.evaluate` (scikit-learn) rather than Evidently's
    classification metrics: Evidently 0.7 has no Brier score, and using the gates' own
    definitions keeps "the primary metric fell by X" comparable with the promotion gate.
    """
    from mlsteward.training.fitting import evaluate

    out: dict[str, dict] = {}
    for side, frame in (("reference", reference), ("current", current)):
        y = frame[label].to_numpy()
        p = frame[prediction].to_numpy(dtype=np.float64)
        m = evaluate(y, p, threshold)
        out[side] = {k: m[k] for k in (*PERFORMANCE_METRICS, "positive_rate", "rows")}
    out["change"] = {k: out["current"][k] - out["reference"][k] for k in PERFORMANCE_METRICS}
    out["decision_threshold"] = float(threshold)
    return out


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: ModelConfig,
    *,
    prediction_column: str | None = "prediction_proba",
    label_column: str | None = None,
    html_path: Path | None = None,
    seed: int = 0,
    decision_threshold: float = 0.5,
    current_labelled: pd.DataFrame | None = None,
    presample: dict | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` feature by feature with Evidently.

    Args:
        reference: The reference window (e.g. the training snapshot).
        current: The recent window.
        cfg: The model config; ``cfg.drift`` chooses methods, thresholds and ``max_rows``.
        prediction_column: Probability column; its drift (and, with labels, the performance
            comparison) is computed when both sides have it.
        label_column: Label column; defaults to ``cfg.label``. When both sides have it, its
            drift (and the quality) is computed on the current rows where it is not null, if at
            least ``cfg.drift.min_labelled_rows`` are; otherwise ``notes`` says why not.
        html_path: Write Evidently's HTML report here; no HTML is rendered to disk otherwise.
        seed: Seed of the sampling when a side exceeds ``cfg.drift.max_rows``.
        decision_threshold: Probability cut-off for the label metrics (accuracy, F1, ...).
        current_labelled: With ``presample``: the reader's pre-sample of the labelled rows
            (drawn on their own, so sparse outcomes keep up to the cap); target drift and
            quality use it instead of the labelled rows of ``current``.
        presample: :attr:`mlsteward.monitoring.prediction_log.WindowSample.presample` when
        ``current`` is
            a pre-sample of a larger window: row counts then describe the window, and the
            sampling record says how the pre-sample was drawn.

    Returns:
        A :class:`DriftResult`.

    Raises:
        MlstewardError: A feature is missing on a side or its dtype contradicts the config.
    """
    _check_inputs(reference, current, cfg)
    label = label_column if label_column is not None else cfg.label
    has_label = label in reference.columns and label in current.columns
    has_pred = (
        prediction_column is not None
        and prediction_column in reference.columns
        and prediction_column in current.columns
    )

    rows_in = {"reference": len(reference), "current": len(current)}
    partial: pd.DataFrame | None = None  # the labelled current rows, when only some are
    if has_label:
        known = current[label].notna()
        rows_in["current_labelled"] = int(known.sum())
        if not known.all():
            partial = current[known]

    lab_pre = None  # the labelled rows' own pre-sample record, when they had one
    if presample is not None:
        rows_in["current"] = int(presample["rows_in_window"])
        if has_label:
            rows_in["current_labelled"] = int(presample["labelled_rows_in_window"])
            lab_pre = presample.get("labelled")
            if current_labelled is not None:
                partial = current_labelled[current_labelled[label].notna()]

    sampling: dict[str, dict] = {}
    max_rows = cfg.drift.max_rows
    strata = label if has_label else None
    reference, info = _sample(reference, max_rows, seed, "reference", strata)
    if info:
        sampling["reference"] = info
    n_pre = len(current)
    current, info = _sample(current, max_rows, seed, "current", strata)
    if presample is not None:
        info = _with_presample(info, n_pre, seed, presample, rows_in["current"])
    if info:
        sampling["current"] = info
    if partial is not None:
        n_pre = len(partial)
        partial, info = _sample(partial, max_rows, seed, "current", label)
        if lab_pre is not None:
            info = _with_presample(info, n_pre, seed, lab_pre, rows_in["current_labelled"])
        if info:
            sampling["current_labelled"] = info

    notes: list[str] = []
    labelled: pd.DataFrame | None = None  # the current rows target drift and quality use
    if has_label:
        labelled = current if partial is None else partial
        if len(labelled) >= cfg.drift.min_labelled_rows:
            outcome = _like(labelled[label], reference[label])
            if outcome.dtype != labelled[label].dtype:
                # the label column replaced in a shallow copy (only read from here on):
                # ``assign`` would copy every column of the window, ~140 MB at 1M rows x 20
                labelled = labelled.copy(deep=False)
                labelled[label] = outcome
        else:
            notes.append(
                f"{len(labelled)} labelled rows < min_labelled_rows "
                f"({cfg.drift.min_labelled_rows}): no target drift or performance for the "
                "current window"
            )
            labelled = None

    methods = column_methods(cfg, reference)
    specs = [_Spec(c, m, t, k) for c, (m, t, k) in methods.items()]
    pred_spec = label_spec = None
    if has_pred:
        pred_spec = _Spec(
            prediction_column, cfg.drift.prediction_method, cfg.drift.threshold, "numeric"
        )  # type: ignore[arg-type]
    if labelled is not None:
        label_spec = _Spec(label, cfg.drift.categorical_method, cfg.drift.threshold, "categorical")

    if partial is None:
        main = current if labelled is None else labelled
        extra = [s for s in (pred_spec, label_spec) if s is not None]
        found, report_path = _run_evidently(reference, main, specs + extra, html_path)
    else:
        extra = [pred_spec] if pred_spec is not None else []
        found, report_path = _run_evidently(reference, current, specs + extra, html_path)
        if label_spec is not None:
            # the HTML above covers every row; target drift only has the labelled ones
            found.update(_run_evidently(reference, labelled, [label_spec], None)[0])
    if report_path is not None:
        _annotate_html(Path(report_path), sampling_lines(sampling, rows_in))
    columns = {s.column: found[s.column] for s in specs}
    drifted = [c for c, r in columns.items() if r.drifted]

    performance = None
    if labelled is not None and has_pred:
        performance = _performance(
            reference,
            labelled,
            label,
            prediction_column,
            decision_threshold,  # type: ignore[arg-type]
        )

    return DriftResult(
        columns=columns,
        drifted_columns=drifted,
        dataset_drift_share=len(drifted) / len(columns),
        prediction_drift=found[pred_spec.column] if pred_spec else None,
        target_drift=found[label_spec.column] if label_spec else None,
        performance=performance,
        rows=rows_in,
        sampling=sampling,
        report_path=report_path,
        notes=notes,
    )


def _like(values: pd.Series, reference: pd.Series) -> pd.Series:
    """``values`` in the reference's dtype when that loses nothing.

    Outcomes joined from the prediction log are floats (NaN marked the missing ones); as the
    reference's integers they are the same categories to Evidently and the same classes to
    scikit-learn, instead of 1.0 beside 1.
    """
    if values.dtype == reference.dtype:
        return values
    try:
        cast = values.astype(reference.dtype)
    except (TypeError, ValueError):
        return values
    return cast if bool((cast == values).all()) else values

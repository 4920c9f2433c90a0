"""Drift between a reference window and a current window, measured with Evidently.

Why an adapter: Evidently's API moves between minor versions (0.4 → 0.7 replaced the whole
metric model), so everything else in mlsteward sees only :class:`DriftResult`, our own typed
result (``drift_result``); the calls into Evidently live in ``drift_evidently`` and the
sampling of large windows in ``drift_sampling``. Evidently stays the engine for the
statistics; this module decides what it computes:

- one ``ValueDrift(column=..., method=..., threshold=...)`` per feature (plus the prediction and
  the label when both sides have them), with the method chosen explicitly from ``cfg.drift``, so
  Evidently never picks a test by counting unique values over a whole column, and nothing is
  computed twice (``DataDriftPreset`` computes each column's drift three times). ``auto`` (the
  default) picks by the smaller side's rows after sampling (``drift_methods``): p-value tests
  at ``drift.p_value`` up to ``drift.small_sample_rows``, distances above, as Evidently's own
  defaults do, so a verdict on a few hundred rows is not sampling noise;
- beside each verdict, the smallest shift its test can see at these sizes and the column's PSI
  (``drift_power``), in the result and at the top of the HTML;
- the model's output by task: a classifier's probability (``prediction_proba``), a regression
  model's predicted value (``prediction``), both numeric with ``drift.prediction_method``,
  compared with ``output_reference`` when given (the holdout's out-of-sample predictions, when
  the features' reference is the training window, whose in-sample predictions would be too
  sure of themselves); the outcome as a category for a classifier, as a number
  (``drift.numeric_method``) for a regression model;
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
label when present: by class, or by deciles of a numeric outcome) and the sampling is recorded in
the result. A prediction-log window larger
than that arrives already pre-sampled by :func:`mlsteward.monitoring.window_sample.sample_window`
(memory bounded by the cap, not the window); ``presample`` carries how, so the result and the
HTML say how many rows the window had and how each cut was drawn (:func:`sampling_lines`).

Outcomes arrive late, so a current window (the prediction log) often has labels for only part of
its rows. Features and the prediction are compared on every row; target drift and quality only
on the rows whose outcome has arrived, in a second small Report on exactly those rows (sampled
on their own, so a large window with sparse outcomes keeps up to ``max_rows`` of them), so the
target drift, the quality and the labelled row count reported all describe the same rows,
whatever Evidently does with nulls. With fewer than ``cfg.drift.min_labelled_rows`` such rows
neither is computed, and the result says so in ``notes`` instead of reporting a quality figure
that is mostly chance. Quality is the model's own metrics (``quality.measure_quality``); the HTML
report names the metric the retrain policy watches and its two values.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.data import FeatureSpec
from mlsteward.errors import MlstewardError
from mlsteward.monitoring.columns import drift_prediction_column
from mlsteward.monitoring.drift_evidently import ColumnSpec, annotate_html, run_evidently
from mlsteward.monitoring.drift_methods import Kind, pick_method, pick_threshold
from mlsteward.monitoring.drift_power import sensitivity_lines
from mlsteward.monitoring.drift_result import ColumnDriftResult, DriftResult
from mlsteward.monitoring.drift_sampling import (
    QUANTILE_STRATA,
    reference_lines,
    sample_side,
    sampling_lines,
    with_presample,
)
from mlsteward.monitoring.published import draft
from mlsteward.monitoring.quality import measure_quality, quality_lines


class _ByTask(Enum):
    """Default of ``compute_drift(prediction_column=...)``: the model's output column."""

    OUTPUT = "the model's output column"


BY_TASK = _ByTask.OUTPUT


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
    cfg: ModelConfig,
    data: pd.DataFrame | None = None,
    *,
    rows: Mapping[str, int] | None = None,
    categories: Mapping[str, int] | None = None,
) -> dict[str, tuple[str, float | None, str]]:
    """Per feature, in config order: ``(method, threshold or None, kind)`` from ``cfg.drift``.

    The per-type choice (``numeric_method`` / ``categorical_method``) applies unless the column
    has an override in ``cfg.drift.columns``. ``auto`` becomes a method by ``rows`` (the
    smaller side's non-null rows per column; a column missing counts as large) and, for a
    small categorical column, ``categories`` (distinct values on both sides): see
    :func:`mlsteward.monitoring.drift_methods.pick_method`. The threshold is ``drift.p_value``
    for a p-value test ``auto`` chose, otherwise the column's override, else the global
    ``cfg.drift.threshold``, else None (Evidently's default for that method). A feature
    without a configured dtype is judged from ``data`` when given, else taken as numeric.
    """
    policy = cfg.drift
    out: dict[str, tuple[str, float | None, str]] = {}
    for spec in cfg.features:
        kind = _kind(spec, data)
        override = policy.columns.get(spec.name)
        choice: str = policy.numeric_method if kind == "numeric" else policy.categorical_method
        threshold = policy.threshold
        if override is not None:
            choice = override.method or choice
            threshold = override.threshold if override.threshold is not None else threshold
        n = (rows or {}).get(spec.name)
        method = pick_method(choice, kind, n, (categories or {}).get(spec.name), policy)
        out[spec.name] = (method, pick_threshold(choice, method, threshold, policy), kind)
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


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: ModelConfig,
    *,
    prediction_column: str | _ByTask | None = BY_TASK,
    label_column: str | None = None,
    html_path: Path | None = None,
    seed: int = 0,
    decision_threshold: float | None = 0.5,
    current_labelled: pd.DataFrame | None = None,
    presample: dict | None = None,
    output_reference: pd.DataFrame | None = None,
    reference_info: dict | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` feature by feature with Evidently.

    Args:
        reference: The reference window (e.g. the champion's holdout, or its training window).
        current: The recent window.
        cfg: The model config; ``cfg.drift`` chooses methods, thresholds and ``max_rows``.
        prediction_column: The model's output column; by default the task's own
            (``prediction_proba`` for a classifier, ``prediction`` for a regression model);
            None compares no output. Its drift (and, with labels, the quality comparison) is
            computed when both sides have it.
        label_column: Label column; defaults to ``cfg.label``. When both sides have it, its
            drift (and the quality) is computed on the current rows where it is not null, if at
            least ``cfg.drift.min_labelled_rows`` are; otherwise ``notes`` says why not.
        html_path: Write Evidently's HTML report here; no HTML is rendered to disk otherwise.
        seed: Seed of the sampling when a side exceeds ``cfg.drift.max_rows``.
        decision_threshold: A classifier's probability cut-off for the label metrics
            (accuracy, F1, ...); unused for a regression model (pass None).
        current_labelled: With ``presample``: the reader's pre-sample of the labelled rows
            (drawn on their own, so sparse outcomes keep up to the cap); target drift and
            quality use it instead of the labelled rows of ``current``.
        presample: :attr:`mlsteward.monitoring.window_sample.WindowSample.presample` when
            ``current`` is a pre-sample of a larger window: row counts then describe the
            window, and the sampling record says how the pre-sample was drawn.
        output_reference: What the model's output and the quality are compared with when
            ``reference`` is not it: rows with the label and out-of-sample predictions (the
            holdout, when the features' reference is the training window). Default:
            ``reference``.
        reference_info: What ``reference`` is and why
            (:meth:`mlsteward.monitoring.drift_reference.DriftReference.info`): kept in the
            result and said at the top of the HTML.

    Returns:
        A :class:`DriftResult`.

    Raises:
        MlstewardError: A feature is missing on a side or its dtype contradicts the config.
    """
    _check_inputs(reference, current, cfg)
    label = label_column if label_column is not None else cfg.label
    has_label = label in reference.columns and label in current.columns
    pred = (
        drift_prediction_column(cfg)
        if isinstance(prediction_column, _ByTask)
        else prediction_column
    )
    outputs = reference if output_reference is None else output_reference
    if pred is not None and not (pred in outputs.columns and pred in current.columns):
        pred = None  # None unless both sides have it
    rows_in, partial, lab_pre = _count_rows(
        reference, current, label, has_label, current_labelled, presample
    )
    strata = label if has_label else None
    quantiles = QUANTILE_STRATA if cfg.is_regression else None
    out_info: dict | None = None  # how the output reference was cut, if it was
    if output_reference is not None:
        rows_in["output_reference"] = len(output_reference)
        outputs, out_info = sample_side(
            output_reference,
            cfg.drift.max_rows,
            seed,
            "reference",
            label if label in output_reference.columns else None,
            quantiles=quantiles,
        )
    reference, current, partial, sampling = _sample_windows(
        reference,
        current,
        partial,
        cfg.drift.max_rows,
        seed,
        strata,
        quantiles,
        presample,
        lab_pre,
        rows_in,
    )
    if output_reference is None:
        outputs = reference  # the same rows, as sampled
    elif out_info:
        sampling["output_reference"] = out_info
    labelled, notes = (
        _labelled_rows(reference, current, partial, label, cfg.drift.min_labelled_rows)
        if has_label
        else (None, [])
    )
    specs, pred_spec, label_spec = _column_specs(
        cfg, reference, current, outputs, labelled, pred, label if labelled is not None else None
    )
    # The page is written and annotated as a hidden draft and published whole at the end: a
    # run killed meanwhile leaves no torn report under a finished one's name.
    with ExitStack() as publishing:
        page = None if html_path is None else publishing.enter_context(draft(Path(html_path)))
        found, written = _measure(
            reference,
            current,
            partial,
            labelled,
            specs,
            pred_spec,
            label_spec,
            page,
            {pred: outputs} if pred is not None and output_reference is not None else {},
        )
        performance = None
        if labelled is not None and pred is not None:
            performance = measure_quality(outputs, labelled, label, pred, cfg, decision_threshold)
        if page is not None and written is not None:
            checked = [found[s.column] for s in (*specs, pred_spec, label_spec) if s is not None]
            annotate_html(page, sensitivity_lines(checked), title="What each test can see")
            annotate_html(page, sampling_lines(sampling, rows_in))
            annotate_html(page, quality_lines(performance, cfg), title="Quality on outcomes")
            annotate_html(page, reference_lines(reference_info or {}), title="Reference")
    report_path = str(html_path) if written is not None else None
    columns = {s.column: found[s.column] for s in specs}
    drifted = [c for c, r in columns.items() if r.drifted]
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
        reference=dict(reference_info or {}),
    )


def _smaller_side(a: pd.Series, b: pd.Series) -> int:
    return int(min(a.count(), b.count()))


def _distinct(a: pd.Series, b: pd.Series) -> int:
    """Distinct non-null values over both sides (what Evidently's own choice counts)."""
    return len(
        pd.unique(pd.concat([pd.Series(a.dropna().unique()), pd.Series(b.dropna().unique())]))
    )


def _one_spec(
    cfg: ModelConfig, column: str, choice: str, kind: Kind, ref: pd.Series, cur: pd.Series
) -> ColumnSpec:
    """The test of a column outside the features (the model's output, the outcome)."""
    policy = cfg.drift
    rows = _smaller_side(ref, cur)
    small = rows <= policy.small_sample_rows and kind == "categorical"
    method = pick_method(choice, kind, rows, _distinct(ref, cur) if small else None, policy)
    return ColumnSpec(
        column, method, pick_threshold(choice, method, policy.threshold, policy), kind
    )


def _column_specs(
    cfg: ModelConfig,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    outputs: pd.DataFrame,
    labelled: pd.DataFrame | None,
    prediction: str | None,
    label: str | None,
) -> tuple[list[ColumnSpec], ColumnSpec | None, ColumnSpec | None]:
    """What to compute per feature, and for the prediction and the label when they take part,
    on the rows each is compared on (after sampling): ``auto`` reads their sizes.

    The prediction (a probability or a predicted value) is numeric, against ``outputs``; the
    outcome is categorical for a classifier and numeric for a regression model, on the
    ``labelled`` rows, each with its kind's method.
    """
    policy = cfg.drift
    # a feature the contract keeps free of nulls has as many values as rows (counting a
    # million text values costs ~25 ms a column); the others are counted
    rows = {
        f.name: min(len(reference), len(current))
        if not f.nullable and f.dtype is not None
        else _smaller_side(reference[f.name], current[f.name])
        for f in cfg.features
    }
    kinds = {f.name: _kind(f, reference) for f in cfg.features}
    categories = {
        c: _distinct(reference[c], current[c])
        for c, n in rows.items()
        if kinds[c] == "categorical" and n <= policy.small_sample_rows
    }
    methods = column_methods(cfg, reference, rows=rows, categories=categories)
    specs = [ColumnSpec(c, m, t, k) for c, (m, t, k) in methods.items()]
    pred_spec = None
    if prediction is not None:
        pred, cur = outputs[prediction], current[prediction]
        pred_spec = _one_spec(cfg, prediction, policy.prediction_method, "numeric", pred, cur)
    label_spec = None
    if label is not None and labelled is not None:
        kind: Kind = "numeric" if cfg.is_regression else "categorical"
        choice = policy.numeric_method if cfg.is_regression else policy.categorical_method
        label_spec = _one_spec(cfg, label, choice, kind, reference[label], labelled[label])
    return specs, pred_spec, label_spec


def _count_rows(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    label: str,
    has_label: bool,
    current_labelled: pd.DataFrame | None,
    presample: dict | None,
) -> tuple[dict[str, int], pd.DataFrame | None, dict | None]:
    """The rows each side had before any sampling (the window's, when ``current`` is a
    pre-sample), the labelled current rows when only some are, and their pre-sample record."""
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
    return rows_in, partial, lab_pre


def _sample_windows(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    partial: pd.DataFrame | None,
    max_rows: int,
    seed: int,
    strata: str | None,
    quantiles: int | None,
    presample: dict | None,
    lab_pre: dict | None,
    rows_in: dict[str, int],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, dict[str, dict]]:
    """Each side cut to ``max_rows`` (the labelled rows on their own), and how each was cut;
    stratified by ``strata`` (by its ``quantiles`` bins when given: a numeric outcome)."""
    sampling: dict[str, dict] = {}
    reference, info = sample_side(
        reference, max_rows, seed, "reference", strata, quantiles=quantiles
    )
    if info:
        sampling["reference"] = info
    n_pre = len(current)
    current, info = sample_side(current, max_rows, seed, "current", strata, quantiles=quantiles)
    if presample is not None:
        info = with_presample(info, n_pre, seed, presample, rows_in["current"])
    if info:
        sampling["current"] = info
    if partial is not None:  # only with a label, so ``strata`` is the label
        n_pre = len(partial)
        partial, info = sample_side(partial, max_rows, seed, "current", strata, quantiles=quantiles)
        if lab_pre is not None:
            info = with_presample(info, n_pre, seed, lab_pre, rows_in["current_labelled"])
        if info:
            sampling["current_labelled"] = info
    return reference, current, partial, sampling


def _labelled_rows(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    partial: pd.DataFrame | None,
    label: str,
    min_rows: int,
) -> tuple[pd.DataFrame | None, list[str]]:
    """The current rows target drift and quality use (None when too few, with a note why)."""
    labelled = current if partial is None else partial
    if len(labelled) < min_rows:
        return None, [
            f"{len(labelled)} labelled rows < min_labelled_rows "
            f"({min_rows}): no target drift or performance for the current window"
        ]
    outcome = _like(labelled[label], reference[label])
    if outcome.dtype != labelled[label].dtype:
        # the label column replaced in a shallow copy (only read from here on):
        # ``assign`` would copy every column of the window, ~140 MB at 1M rows x 20
        labelled = labelled.copy(deep=False)
        labelled[label] = outcome
    return labelled, []


def _measure(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    partial: pd.DataFrame | None,
    labelled: pd.DataFrame | None,
    specs: list[ColumnSpec],
    pred_spec: ColumnSpec | None,
    label_spec: ColumnSpec | None,
    html_path: Path | None,
    reference_for: dict[str, pd.DataFrame],
) -> tuple[dict[str, ColumnDriftResult], str | None]:
    """Every column's verdict, and the HTML page written (if ``html_path`` is given).

    With every current row labelled, one run covers features, prediction and label; otherwise
    features and prediction are compared on every row and the label on the labelled rows alone.
    ``reference_for``: the model output's own reference, when it has one.
    """
    if partial is None:
        main = current if labelled is None else labelled
        extra = [s for s in (pred_spec, label_spec) if s is not None]
        return run_evidently(reference, main, specs + extra, html_path, reference_for=reference_for)
    extra = [pred_spec] if pred_spec is not None else []
    found, report_path = run_evidently(
        reference, current, specs + extra, html_path, reference_for=reference_for
    )
    if label_spec is not None and labelled is not None:
        # the HTML above covers every row; target drift only has the labelled ones
        found.update(run_evidently(reference, labelled, [label_spec], None)[0])
    return found, report_path


def _like(values: pd.Series, reference: pd.Series) -> pd.Series:
    """``values`` in the reference's dtype when that loses nothing.

    Outcomes joined from the prediction log are floats (NaN marked the missing ones); as the
    reference's integers they are the same categories to Evidently and the same classes to
    scikit-learn, instead of 1.0 beside 1 (and a count stays a count).
    """
    if values.dtype == reference.dtype:
        return values
    try:
        cast = values.astype(reference.dtype)
    except (TypeError, ValueError):
        return values
    return cast if bool((cast == values).all()) else values

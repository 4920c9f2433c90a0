"""Drift of a regression model with real Evidently: the predicted value and the numeric outcome
drift as numbers, quality is the model's own metrics, and the retrain decision follows RMSE in
its direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsteward.monitoring.drift import compute_drift
from mlsteward.monitoring.drift_result import DriftResult
from mlsteward.monitoring.retrain import decide
from mlsteward.training.metrics import evaluate_regression
from tests.support.regression import LABEL, expected_days, regression_cfg, stays


def predicted(frame: pd.DataFrame) -> pd.DataFrame:
    """A model that knows the true mean stay: the holdout and the log look like this."""
    return frame.assign(prediction=expected_days(frame))


def relabelled(frame: pd.DataFrame, factor: float, seed: int) -> pd.DataFrame:
    """The same rows whose outcomes now follow ``factor`` times the old mean (concept shift)."""
    rng = np.random.default_rng(seed)
    return frame.assign(**{LABEL: rng.poisson(factor * expected_days(frame)).astype(np.int64)})


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return predicted(stays(4_000, seed=1))


def test_unshifted_window_is_quiet(reference) -> None:
    cfg = regression_cfg(performance_drop=0.1, performance_drop_mode="relative")
    result = compute_drift(reference, predicted(stays(2_000, seed=2)), cfg, decision_threshold=None)
    assert result.drifted_columns == []
    assert result.prediction_drift is not None and not result.prediction_drift.drifted
    assert result.prediction_drift.column == "prediction"
    assert result.target_drift is not None and not result.target_drift.drifted
    assert abs(result.performance["change"]["rmse"]) / result.performance["reference"]["rmse"] < 0.1
    assert not decide(result.drifted_columns, result.dataset_drift_share, result.performance,
                      cfg).retrain  # fmt: skip


def test_shifted_inputs_move_the_prediction_and_the_outcome(reference) -> None:
    cfg = regression_cfg()
    current = predicted(stays(2_000, seed=3, age_shift=20.0))
    result = compute_drift(reference, current, cfg, decision_threshold=None)
    assert result.drifted_columns == ["age"]
    pred, target = result.prediction_drift, result.target_drift
    assert pred is not None and pred.drifted and pred.kind == "numeric"
    # auto on 2,000 and 4,000 rows: the distance, for the output as for a numeric outcome
    assert pred.method == "wasserstein"
    assert target is not None and target.drifted and target.column == LABEL
    assert (target.kind, target.method) == ("numeric", "wasserstein")
    # the classifier's column is not looked for
    assert "prediction_proba" not in current.columns


def test_the_predicted_value_alone_can_drift(reference) -> None:
    """Same inputs, but the values predicted for them doubled: only the output moved."""
    current = stays(2_000, seed=4).assign(prediction=lambda f: 2.0 * expected_days(f))
    result = compute_drift(reference, current.drop(columns=[LABEL]), regression_cfg(),
                           decision_threshold=None)  # fmt: skip
    assert result.drifted_columns == [] and result.target_drift is None
    assert result.prediction_drift is not None and result.prediction_drift.drifted


def test_quality_is_the_models_metrics_on_both_windows(reference) -> None:
    cfg = regression_cfg()
    current = predicted(stays(1_500, seed=5))
    perf = compute_drift(reference, current, cfg, decision_threshold=None).performance
    assert perf is not None and "decision_threshold" not in perf
    assert list(perf["change"]) == list(cfg.metric_names)
    assert "mean_poisson_deviance" in perf["change"] and "roc_auc" not in perf["change"]
    truth = evaluate_regression(current[LABEL], current["prediction"], cfg.tuning)
    for metric in (*cfg.metric_names, "mean_prediction", "mean_outcome", "rows"):
        assert perf["current"][metric] == pytest.approx(truth[metric], rel=1e-12), metric
    assert perf["reference"]["rows"] == 4_000


def test_rmse_worse_beyond_the_relative_limit_retrains_and_better_does_not(reference) -> None:
    cfg = regression_cfg(performance_drop=0.1, performance_drop_mode="relative")
    rows = predicted(stays(2_000, seed=6))

    worse = compute_drift(reference, relabelled(rows, 1.6, seed=7), cfg, decision_threshold=None)
    rmse = worse.performance["reference"]["rmse"], worse.performance["current"]["rmse"]
    assert rmse[1] > 1.1 * rmse[0]
    assert worse.target_drift is not None and worse.target_drift.drifted
    decision = decide(worse.drifted_columns, worse.dataset_drift_share, worse.performance, cfg)
    assert decision.retrain and decision.reasons == [
        f"rmse rose from {rmse[0]:.4f} to {rmse[1]:.4f} on labelled recent data (worse by "
        f"{(rmse[1] - rmse[0]) / rmse[0]:.1%} >= 10.0% of the reference)"
    ]

    # outcomes exactly the rounded mean: far less noise, a much smaller RMSE, no retrain
    calm = rows.assign(**{LABEL: np.round(rows["prediction"]).astype(np.int64)})
    better = compute_drift(reference, calm, cfg, decision_threshold=None)
    assert better.performance["current"]["rmse"] < 0.5 * better.performance["reference"]["rmse"]
    assert not decide(better.drifted_columns, better.dataset_drift_share, better.performance,
                      cfg).retrain  # fmt: skip


def test_partly_labelled_log_window_measures_outcomes_on_their_rows(reference) -> None:
    cfg = regression_cfg(performance_drop=0.1, performance_drop_mode="relative")
    labelled = relabelled(predicted(stays(600, seed=8)), 1.6, seed=9)
    waiting = predicted(stays(2_400, seed=10)).assign(**{LABEL: np.nan})
    current = pd.concat([labelled, waiting], ignore_index=True).sample(frac=1.0, random_state=0)

    result = compute_drift(reference, current, cfg, decision_threshold=None)

    assert result.rows == {"reference": 4_000, "current": 3_000, "current_labelled": 600}
    assert result.performance["current"]["rows"] == 600
    truth = evaluate_regression(labelled[LABEL], labelled["prediction"], cfg.tuning)
    assert result.performance["current"]["rmse"] == pytest.approx(truth["rmse"], rel=1e-12)
    assert result.target_drift is not None and result.target_drift.drifted
    assert result.prediction_drift is not None and not result.prediction_drift.drifted
    back = DriftResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert back.to_dict() == result.to_dict()


def test_large_windows_are_stratified_by_outcome_deciles(reference) -> None:
    cfg = regression_cfg(max_rows=1_000)
    result = compute_drift(reference, predicted(stays(3_000, seed=11)), cfg,
                           decision_threshold=None)  # fmt: skip
    info = result.sampling["reference"]
    assert info["method"] == f"stratified by 10 quantile bins of {LABEL}"
    assert (info["rows_before"], info["rows_after"]) == (4_000, 1_000)
    assert result.performance["reference"]["rows"] == 1_000
    # the cut keeps the outcome's distribution: its mean within a few percent of the whole's
    whole = reference[LABEL].mean()
    assert result.performance["reference"]["mean_outcome"] == pytest.approx(whole, rel=0.03)


def test_html_report_names_the_watched_metric_and_its_numbers(reference, tmp_path: Path) -> None:
    cfg = regression_cfg(performance_drop=0.1, performance_drop_mode="relative")
    html = tmp_path / "drift.html"
    current = relabelled(predicted(stays(1_000, seed=12)), 1.6, seed=13)
    result = compute_drift(reference, current, cfg, decision_threshold=None, html_path=html)
    page = html.read_text(encoding="utf-8")
    perf = result.performance
    assert "<b>Quality on outcomes</b>" in page and "<b>Rows compared</b>" in page
    assert (
        f"rmse (lower is better): {perf['reference']['rmse']:.4f} reference, "
        f"{perf['current']['rmse']:.4f} current on 1,000 labelled rows" in page
    )
    assert "retrain at 10.0% of the reference worse: retrains" in page

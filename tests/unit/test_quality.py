"""The quality rule of the retrain decision: the watched metric in its own direction, the limit in
the metric's units or as a share of the reference, and the words the report shows."""

from __future__ import annotations

import json
import math

import pytest

from mlsteward.config.models import get_model_config
from mlsteward.monitoring.quality import quality_check, quality_lines, watched_metric
from mlsteward.monitoring.retrain import decide
from tests.support.regression import regression_cfg


def perf(ref: float, cur: float, metric: str = "rmse", **others: tuple[float, float]) -> dict:
    metrics = {metric: (ref, cur), **others}
    return {
        "reference": {m: r for m, (r, _) in metrics.items()} | {"rows": 900.0},
        "current": {m: c for m, (_, c) in metrics.items()} | {"rows": 400.0},
        "change": {m: c - r for m, (r, c) in metrics.items()},
    }


def relative_rmse(drop: float = 0.1):
    return regression_cfg(performance_drop=drop, performance_drop_mode="relative")


def test_rmse_worse_by_more_than_the_relative_limit_retrains() -> None:
    cfg = relative_rmse()
    assert watched_metric(cfg) == "rmse"  # regression's primary metric by default
    d = decide([], 0.0, perf(2.0, 2.25), cfg)
    assert d.retrain
    assert d.reasons == [
        "rmse rose from 2.0000 to 2.2500 on labelled recent data "
        "(worse by 12.5% >= 10.0% of the reference)"
    ]
    assert not decide([], 0.0, perf(2.0, 2.1), cfg).retrain  # 5% worse
    assert decide([], 0.0, perf(2.0, 2.2), cfg).retrain  # 10%: the limit itself retrains


def test_rmse_getting_better_never_retrains_however_large_the_change() -> None:
    cfg = relative_rmse()
    check = quality_check(perf(2.0, 1.0), cfg)
    assert check is not None and check.worsening == pytest.approx(-1.0)
    assert check.relative == pytest.approx(-0.5) and not check.worse
    assert not decide([], 0.0, perf(2.0, 1.0), cfg).retrain


def test_absolute_mode_reads_the_limit_in_the_metrics_units() -> None:
    cfg = regression_cfg(performance_drop=0.3)  # absolute is the default mode
    assert decide([], 0.0, perf(2.0, 2.3), cfg).retrain
    assert not decide([], 0.0, perf(2.0, 2.25), cfg).retrain
    assert decide([], 0.0, perf(2.0, 2.3), cfg).reasons[0].endswith("(worse by 0.3000 >= 0.3000)")


def test_a_higher_is_better_metric_retrains_when_it_falls() -> None:
    cfg = regression_cfg(
        performance_metric="r2", performance_drop=0.1, performance_drop_mode="relative"
    )
    d = decide([], 0.0, perf(0.5, 0.4, "r2"), cfg)
    assert d.retrain and d.reasons[0].startswith("r2 fell from 0.5000 to 0.4000")
    assert "worse by 20.0%" in d.reasons[0]
    assert not decide([], 0.0, perf(0.5, 0.6, "r2"), cfg).retrain


def test_the_configured_metric_is_watched_not_the_primary_one() -> None:
    cfg = regression_cfg(performance_metric="mae", performance_drop=0.1)
    assert watched_metric(cfg) == "mae"
    rmse_much_worse = perf(1.0, 1.05, "mae", rmse=(2.0, 4.0))
    assert not decide([], 0.0, rmse_much_worse, cfg).retrain
    d = decide([], 0.0, perf(1.0, 1.2, "mae", rmse=(2.0, 2.0)), cfg)
    assert d.retrain and d.reasons[0].startswith("mae rose from 1.0000 to 1.2000")


def test_classification_keeps_its_rule_and_words() -> None:
    heart = get_model_config("heart_disease")
    d = decide([], 0.0, perf(0.86, 0.80, "roc_auc"), heart)
    assert d.reasons == [
        "roc_auc fell from 0.8600 to 0.8000 on labelled recent data (drop 0.0600 >= 0.0500)"
    ]
    brier = heart.model_copy(
        update={"drift": heart.drift.model_copy(update={"performance_metric": "brier"})}
    )
    d = decide([], 0.0, perf(0.14, 0.20, "brier"), brier)
    assert d.retrain and d.reasons[0].startswith("brier rose from 0.1400 to 0.2000")
    assert not decide([], 0.0, perf(0.14, 0.10, "brier"), brier).retrain


def test_a_reference_of_zero_and_missing_values() -> None:
    cfg = relative_rmse()
    check = quality_check(perf(0.0, 0.5), cfg)
    assert check is not None and check.relative == math.inf and check.worse
    assert json.dumps(check.to_dict(), allow_nan=False)  # infinities leave as null
    assert quality_check(None, cfg) is None
    assert quality_check(perf(0.86, 0.80, "roc_auc"), cfg) is None  # not rmse: nothing to judge
    nan = quality_check(perf(float("nan"), 2.0), cfg)
    assert nan is not None and not nan.worse
    assert "not comparable" in nan.summary()


def test_report_lines_name_the_metric_and_the_numbers() -> None:
    cfg = relative_rmse()
    lines = quality_lines(perf(2.0, 2.5, mae=(1.5, 1.6)), cfg)
    assert lines == [
        "rmse (lower is better): 2.0000 reference, 2.5000 current on 400 labelled rows; "
        "worse by 25.0% (relative), retrain at 10.0% of the reference worse: retrains",
        "all metrics (reference -> current): rmse 2.0000 -> 2.5000, mae 1.5000 -> 1.6000",
    ]
    better = quality_lines(perf(2.0, 1.9), cfg)[0]
    assert better.endswith("better by 5.0% (relative), retrain at 10.0% of the reference worse: "
                           "below the limit")  # fmt: skip
    assert quality_lines(None, cfg) == []

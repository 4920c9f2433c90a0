"""Batch scoring of a regression model: the predicted values, explanations in the target's units,
the batch's summary, and refusal of a version of the other task."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.results import ScoringResult
from mlsteward.config.models import get_model_config
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import encode
from mlsteward.governance import registry
from mlsteward.monitoring.scoring import (
    ScoredBatch,
    explain,
    score_frame,
    shap_feature_column,
    shap_value_column,
)
from tasks.scoring import prediction_summary
from tests.support.regression import LABEL, fit_verified, regression_cfg, stays

AT = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def poisson(tmp_path_factory: pytest.TempPathFactory) -> registry.VerifiedModel:
    return fit_verified(regression_cfg(), stays(3_000, seed=1), tmp_path_factory.mktemp("poisson"))


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return stays(400, seed=2).drop(columns=[LABEL])


def test_predictions_are_the_models_values(poisson, batch) -> None:
    cfg = regression_cfg()
    out = score_frame(cfg, poisson, batch, top_k=2, scored_at=AT)
    f = out.frame
    expected = poisson.model.predict(encode(batch, poisson.info.encoding))
    assert f["prediction"].dtype == np.float64
    np.testing.assert_allclose(f["prediction"].to_numpy(), expected, rtol=1e-6)
    assert "prediction_proba" not in f.columns
    assert out.threshold is None and out.is_regression
    assert (f["prediction"] > 0).all()  # a log link predicts positive counts
    assert list(f.columns[:6]) == ["stay_id", "discharged_at", "age", "prior_visits", "ward",
                                   "prediction"]  # fmt: skip
    assert [c for c in f.columns if c.startswith("shap_")] == [
        shap_feature_column(1), shap_value_column(1), shap_feature_column(2), shap_value_column(2)
    ]  # fmt: skip


def test_poisson_contributions_and_base_add_up_to_the_prediction(poisson, batch) -> None:
    """Every feature's contribution kept (top_k = all): in days, they and the base value sum to
    the predicted stay itself, not to its logarithm."""
    cfg = regression_cfg()
    out = score_frame(cfg, poisson, batch, top_k=3, scored_at=AT)
    f = out.frame
    values = f[[shap_value_column(r) for r in (1, 2, 3)]].to_numpy()
    np.testing.assert_allclose(out.base_value + values.sum(axis=1), f["prediction"], rtol=1e-4)
    # the log-scale base would be about log(mean stay), far below the mean stay in days
    raw, raw_base = explain(poisson, encode(batch, poisson.info.encoding))
    assert out.base_value == pytest.approx(np.exp(raw_base), rel=1e-6)
    assert out.base_value > 1.5 * raw_base
    # the ranking is the log scale's: the same feature comes first in every row
    top = np.asarray(poisson.info.encoding.columns)[np.argmax(np.abs(raw), axis=1)]
    assert (f[shap_feature_column(1)].to_numpy() == top).all()


def test_identity_link_contributions_are_the_models_own(tmp_path: Path, batch) -> None:
    cfg = regression_cfg("reg:squarederror")
    verified = fit_verified(cfg, stays(2_000, seed=3), tmp_path)
    out = score_frame(cfg, verified, batch, top_k=3, scored_at=AT)
    raw, base = explain(verified, encode(batch, verified.info.encoding))
    assert out.base_value == pytest.approx(base)
    values = out.frame[[shap_value_column(r) for r in (1, 2, 3)]].to_numpy()
    np.testing.assert_allclose(np.sort(np.abs(values), axis=1), np.sort(np.abs(raw), axis=1))
    np.testing.assert_allclose(base + values.sum(axis=1), out.frame["prediction"], rtol=1e-4)


def test_empty_batch_still_reports_the_base_in_days(poisson, batch) -> None:
    full = score_frame(regression_cfg(), poisson, batch, top_k=1, scored_at=AT)
    empty = score_frame(regression_cfg(), poisson, batch.iloc[:0], top_k=0, scored_at=AT)
    assert empty.frame.empty and "prediction" in empty.frame.columns
    assert empty.base_value == pytest.approx(full.base_value, rel=1e-6)


def test_a_version_of_the_other_task_is_refused(poisson, batch) -> None:
    heart = get_model_config("heart_disease")
    with pytest.raises(MlstewardError, match=r"v1 is a regression model \(count:poisson\) but "
                       r"the config says task binary_classification"):  # fmt: skip
        score_frame(heart, poisson, batch)


def test_summary_says_mean_median_and_p95_prediction(poisson, batch) -> None:
    out = score_frame(regression_cfg(), poisson, batch, top_k=0, scored_at=AT)
    values = out.frame["prediction"].to_numpy()
    summary = prediction_summary(out)
    assert summary == {
        "mean_prediction": round(float(values.mean()), 6),
        "median_prediction": round(float(np.median(values)), 6),
        "p95_prediction": round(float(np.quantile(values, 0.95)), 6),
    }
    assert summary["median_prediction"] < summary["p95_prediction"]
    empty = ScoredBatch(out.frame.iloc[:0], "stay", "1", None, 1.0, 0)
    assert set(prediction_summary(empty).values()) == {None}


def test_scoring_result_keeps_only_its_tasks_numbers() -> None:
    common = {
        "model": "m", "version": "1", "batch_id": "b", "rows": 3, "source": "s",
        "scored_path": "p", "prediction_log_path": "l", "top_k": 2,
    }  # fmt: skip
    regression = ScoringResult.model_validate(
        {**common, "mean_prediction": 4.2, "median_prediction": 3.0, "p95_prediction": 9.5}
    ).model_dump()
    assert list(regression) == [*list(common)[:7], "mean_prediction", "median_prediction",
                                "p95_prediction", "top_k"]  # fmt: skip
    classification = ScoringResult.model_validate(
        {**common, "mean_probability": 0.3, "positive_rate": 0.25, "threshold": 0.4}
    ).model_dump()
    # the document a classifier's scoring run has always shown, key for key
    assert list(classification) == [*list(common)[:7], "mean_probability", "positive_rate",
                                    "threshold", "top_k"]  # fmt: skip
    assert classification["threshold"] == 0.4

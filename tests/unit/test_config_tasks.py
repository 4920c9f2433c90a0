"""The task decides the loss, the metrics and the fairness numbers a config may name; a
sensitive column may be measured without being a model input."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsteward.config.models import ModelConfig, load_model_config
from mlsteward.errors import ConfigError

REGRESSION = """\
name: m
task: regression
source: {path: data.csv, entity: id}
label: y
features: [a, b]
"""
BINARY = REGRESSION.replace("regression", "binary_classification")


def load(tmp_path: Path, text: str) -> ModelConfig:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return load_model_config(path)


def test_regression_gets_its_own_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, REGRESSION)
    assert cfg.is_regression
    assert cfg.tuning.objective == "reg:squarederror" and cfg.tuning.metric == "rmse"
    assert cfg.promotion.primary_metric == "rmse"
    assert set(cfg.fairness.limits) >= {"mae_ratio", "mean_residual_difference"}
    assert cfg.fairness.limits["mae_ratio"].max == 1.25
    assert "roc_auc" not in cfg.metric_names and "r2" in cfg.metric_names
    # a deviance only where the objective keeps predictions positive
    assert "mean_poisson_deviance" not in cfg.metric_names


def test_classification_defaults_are_unchanged(tmp_path: Path) -> None:
    cfg = load(tmp_path, BINARY)
    assert cfg.tuning.objective == "binary:logistic" and cfg.tuning.metric == "logloss"
    assert cfg.promotion.primary_metric == "roc_auc"
    assert cfg.fairness.limits["demographic_parity_ratio"].min == 0.8


def test_count_objective_reports_its_deviance_and_tweedie_names_its_power(tmp_path: Path) -> None:
    poisson = load(tmp_path, REGRESSION + "tuning: {objective: 'count:poisson'}\n")
    assert poisson.tuning.metric == "poisson-nloglik"
    assert "mean_poisson_deviance" in poisson.metric_names
    tweedie = load(
        tmp_path, REGRESSION + "tuning: {objective: 'reg:tweedie', tweedie_variance_power: 1.3}\n"
    )
    assert tweedie.tuning.metric == "tweedie-nloglik@1.3"
    assert tweedie.tuning.objective_params() == {
        "objective": "reg:tweedie",
        "tweedie_variance_power": 1.3,
    }


def test_user_fairness_limits_keep_the_other_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, REGRESSION + "fairness: {limits: {rmse_ratio: {max: 1.5}}}\n")
    assert cfg.fairness.limits["rmse_ratio"].max == 1.5
    assert cfg.fairness.limits["mae_ratio"].max == 1.25


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            REGRESSION + "tuning: {objective: 'binary:logistic'}\n",
            "tuning.objective: 'binary:logistic' does not fit task 'regression'",
        ),
        (
            BINARY + "tuning: {objective: 'count:poisson'}\n",
            "does not fit task 'binary_classification'",
        ),
        (REGRESSION + "tuning: {eval_metric: auc}\n", "eval_metric 'auc' does not fit"),
        (REGRESSION + "thresholds: {roc_auc: {min: 0.7}}\n", "thresholds.roc_auc: not a metric"),
        (BINARY + "thresholds: {rmse: {max: 3}}\n", "thresholds.rmse: not a metric"),
        (
            REGRESSION + "thresholds: {mean_poisson_deviance: {max: 3}}\n",
            "thresholds.mean_poisson_deviance: not a metric",
        ),
        (
            REGRESSION + "promotion: {primary_metric: calibration_ratio}\n",
            "promotion.primary_metric: 'calibration_ratio' is not a metric of this regression "
            "model that has a better direction",
        ),
        (
            REGRESSION + "drift: {performance_metric: roc_auc}\n",
            "drift.performance_metric: 'roc_auc'",
        ),
        (
            REGRESSION + "fairness: {limits: {equal_opportunity_difference: {max: 0.1}}}\n",
            "fairness.limits: ['equal_opportunity_difference'] are not fairness metrics of a "
            "regression model",
        ),
        (
            BINARY + "sensitive_attributes: [{column: a, limits: {mae_ratio: {max: 2}}}]\n",
            "sensitive_attributes.a.limits: ['mae_ratio']",
        ),
        (
            BINARY + "sensitive_attributes: [{column: race, dtype: category, buckets: [1]}]\n",
            "'race' is category; buckets are for numeric columns",
        ),
        (BINARY + "sensitive_attributes: [y]\n", "'y' is the entity, label or timestamp"),
        (BINARY + "sensitive_attributes: [race, race]\n", "duplicated column(s) ['race']"),
    ],
)
def test_task_mismatches_are_refused_by_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert expected in str(err.value)


def test_a_sensitive_column_outside_the_features_is_checked_but_not_an_input(
    tmp_path: Path,
) -> None:
    cfg = load(
        tmp_path,
        BINARY
        + "sensitive_attributes:\n"
        + "  - a\n"
        + "  - {column: race, dtype: category, categories: [x, y, z]}\n"
        + "  - {column: income, dtype: float, min: 0, buckets: [20000, 60000]}\n",
    )
    assert cfg.feature_names == ["a", "b"]
    assert [c.name for c in cfg.attribute_columns] == ["race", "income"]
    assert cfg.data_column_names == ["a", "b", "race", "income"]
    race = cfg.attribute_columns[0]
    assert race.dtype == "category" and race.categories == ["x", "y", "z"]
    assert cfg.attribute_columns[1].min == 0

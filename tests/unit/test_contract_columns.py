"""Contract rules for a regression label and for sensitive columns that are not features, on
small frames (no Feast involved)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from mlsteward.config.models import ModelConfig
from mlsteward.data.contract import check_contract, enforce
from mlsteward.errors import ContractViolation

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def regression(objective: str = "reg:squarederror", **overrides: object) -> ModelConfig:
    base: dict[str, object] = {
        "name": "m",
        "task": "regression",
        "source": {"path": "x.csv", "entity": "id", "timestamp": "ts"},
        "label": "y",
        "features": [{"name": "x", "dtype": "float"}],
        "tuning": {"objective": objective},
        "contract": {"max_bad_row_share": 1.0},
    }
    base.update(overrides)
    return ModelConfig.model_validate(base)


def frame(labels: list[object]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
            "x": np.linspace(0, 1, n),
            "y": pd.Series(labels, dtype=object),
        }
    )


def broken(labels: list[object], objective: str) -> dict[tuple[str, str], int]:
    result = check_contract(frame(labels), regression(objective), now=NOW, training_source=True)
    return dict(result.report.violations)


def test_a_regression_label_is_typed_float64_whatever_the_objective() -> None:
    for objective, labels in [
        ("reg:squarederror", [-1.5, 0.0, 2.25, 3]),
        ("count:poisson", [0, 1, 2, 7]),
        ("reg:tweedie", [0.0, 0.5, 12.0, 3]),
    ]:
        good = enforce(check_contract(frame(labels), regression(objective), now=NOW)).good
        assert good["y"].dtype == "float64", objective
        assert good["y"].tolist() == [float(v) for v in labels]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("objective", "labels", "expected"),
    [
        ("reg:squarederror", [1.0, "many", 2.0, 3.0], {("label_numeric", "y"): 1}),
        ("reg:squarederror", [1.0, None, 2.0, 3.0], {("label_numeric", "y"): 1}),
        ("reg:squarederror", [1.0, "inf", 2.0, 3.0], {("label_numeric", "y"): 1}),
        ("reg:pseudohubererror", [1.0, " ", 2.0, -3.0], {("label_numeric", "y"): 1}),
        ("count:poisson", [1, 2.5, 2, 3], {("label_count", "y"): 1}),
        ("count:poisson", [1, -1, 2, 3], {("label_count", "y"): 1}),
        ("count:poisson", [1, "two", 2, 3], {("label_numeric", "y"): 1}),
        ("reg:tweedie", [1.0, -0.5, 2.0, 3.5], {("label_nonnegative", "y"): 1}),
        ("reg:tweedie", [1.0, 0.0, 2.0, 3.5], {}),
        ("reg:absoluteerror", [1.0, -0.5, 2.0, 3.5], {}),
    ],
)
def test_each_regression_label_rule_quarantines_the_row_naming_it(
    objective: str, labels: list[object], expected: dict[tuple[str, str], int]
) -> None:
    assert broken(labels, objective) == expected
    if expected:
        result = check_contract(frame(labels), regression(objective), now=NOW)
        (rule, column), _ = next(iter(expected.items()))
        assert result.quarantined["_violations"].tolist() == [f"{rule}:{column}"]
        assert result.quarantined["_row_number"].tolist() == [2]


def test_a_constant_regression_label_refuses_the_whole_source_naming_the_column() -> None:
    result = check_contract(
        frame([4, 4, 4, "x"]), regression("count:poisson"), now=NOW, training_source=True
    )
    with pytest.raises(ContractViolation) as err:
        enforce(result)
    message = str(err.value)
    assert "label column 'y' has the same value (4) in every accepted row" in message
    assert "nothing to learn" in message
    assert err.value.report["fatal"] == [result.report.fatal[0]]
    # Only a training source: a scoring or drift window may well hold one value.
    window = check_contract(frame([4, 4, 4]), regression("count:poisson"), now=NOW)
    assert enforce(window).report.fatal == []


def test_a_classification_label_keeps_its_label_values_rule() -> None:
    cfg = regression(task="binary_classification", tuning={})
    result = check_contract(frame([0, 1, 2.5, 1]), cfg, now=NOW, training_source=True)
    assert dict(result.report.violations) == {("label_value", "y"): 1}
    assert result.good["y"].dtype == "int64"


def with_attribute(**rules: object) -> ModelConfig:
    return regression(sensitive_attributes=[{"column": "grp", **rules}])


def test_a_sensitive_column_that_is_not_a_feature_is_checked_with_its_rules() -> None:
    df = frame([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    df["grp"] = ["a", "b", "c", None, "a", "b"]
    result = check_contract(
        df, with_attribute(categories=["a", "b"]), now=NOW, training_source=True
    )
    assert dict(result.report.violations) == {
        ("allowed_category", "grp"): 1,
        ("not_null", "grp"): 1,
    }
    assert result.quarantined["_violations"].tolist() == ["allowed_category:grp", "not_null:grp"]
    assert result.report.inferred_dtypes["grp"] == "category"
    assert result.good["grp"].tolist() == ["a", "b", "a", "b"]


def test_a_sensitive_column_left_untyped_is_inferred_and_recorded() -> None:
    df = frame([1.0, 2.0, 3.0, 4.0])
    df["age"] = ["30", "41", "52", "67"]
    cfg = regression(sensitive_attributes=[{"column": "age", "min": 18, "buckets": [40, 60]}])
    result = enforce(check_contract(df.astype(str), cfg, now=NOW, training_source=True))
    assert result.report.inferred_dtypes == {"x": "float", "age": "int"}
    assert result.good["age"].dtype == "int64"
    assert list(result.good.columns) == ["id", "ts", "x", "age", "y"]


def test_a_nullable_sensitive_column_keeps_its_nulls() -> None:
    df = frame([1.0, 2.0, 3.0, 4.0])
    df["grp"] = ["a", None, "b", "a"]
    result = enforce(check_contract(df, with_attribute(nullable=True), now=NOW))
    assert result.report.bad_rows == 0 and result.good["grp"].isna().sum() == 1


def test_a_training_source_must_carry_the_sensitive_column() -> None:
    with pytest.raises(ContractViolation, match=r"missing required column\(s\) \['grp'\]"):
        check_contract(frame([1.0, 2.0]), with_attribute(), now=NOW, training_source=True)
    # Other input (scoring, drift) is judged without it.
    assert enforce(check_contract(frame([1.0, 2.0]), with_attribute(), now=NOW)).good.shape[0] == 2

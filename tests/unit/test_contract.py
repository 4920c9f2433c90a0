"""Data-contract rules, one by one, on small frames (no Feast involved)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from mlsteward.config.models import ModelConfig
from mlsteward.data.contract import check_contract, enforce, infer_dtype
from mlsteward.errors import ContractViolation

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def cfg(**overrides: object) -> ModelConfig:
    base = {
        "name": "m",
        "task": "binary_classification",
        "source": {"path": "x.csv", "entity": "id", "timestamp": "ts"},
        "label": "y",
        "features": [
            {"name": "age", "dtype": "int", "min": 0, "max": 120},
            {"name": "bp", "dtype": "float", "min": 50, "max": 250},
            {"name": "sex", "dtype": "category", "categories": ["F", "M"]},
            {"name": "smoker", "dtype": "bool"},
        ],
        "contract": {"max_bad_row_share": 1.0},
    }
    base.update(overrides)
    return ModelConfig.model_validate(base)


def good_frame(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
            "age": np.arange(n) + 30,
            "bp": 120.0,
            "sex": ["F", "M"] * (n // 2),
            "smoker": [True, False] * (n // 2),
            "y": [0, 1] * (n // 2),
        }
    )


def rules(result) -> dict[tuple[str, str], int]:
    return dict(result.report.violations)


def test_clean_frame_passes_with_canonical_dtypes() -> None:
    r = enforce(check_contract(good_frame(), cfg(), now=NOW))
    assert r.report.bad_rows == 0 and len(r.good) == 20
    assert str(r.good.ts.dtype) == "datetime64[us, UTC]"
    assert r.good.age.dtype == "int64" and r.good.smoker.dtype == bool
    assert r.good.y.dtype == "int64"


@pytest.mark.parametrize(
    ("mutate", "rule", "column"),
    [
        (
            lambda d: d.__setitem__("age", d.age.astype(object).where(d.index != 3, "old")),
            "dtype",
            "age",
        ),
        (
            lambda d: d.__setitem__("age", d.age.astype(float).where(d.index != 3, 40.5)),
            "dtype",
            "age",
        ),
        (lambda d: d.loc.__setitem__((3, "bp"), np.nan), "not_null", "bp"),
        (lambda d: d.loc.__setitem__((3, "bp"), 999.0), "range", "bp"),
        (lambda d: d.loc.__setitem__((3, "sex"), "X"), "allowed_category", "sex"),
        (
            lambda d: d.__setitem__("smoker", d.smoker.astype(object).where(d.index != 3, "maybe")),
            "dtype",
            "smoker",
        ),
        (lambda d: d.loc.__setitem__((3, "y"), 2), "label_value", "y"),
        (
            lambda d: d.__setitem__("y", d.y.astype(float).where(d.index != 3, np.nan)),
            "label_value",
            "y",
        ),
        (
            lambda d: d.loc.__setitem__((3, "ts"), pd.Timestamp("2030-01-01", tz="UTC")),
            "no_future_timestamp",
            "ts",
        ),
    ],
)
def test_each_rule_quarantines_the_bad_row_and_names_it(mutate, rule: str, column: str) -> None:
    df = good_frame()
    mutate(df)
    r = check_contract(df, cfg(), now=NOW)
    assert rules(r) == {(rule, column): 1}
    assert r.quarantined._row_number.tolist() == [4]  # 1-based data row
    assert r.quarantined._violations.iloc[0] == f"{rule}:{column}"
    assert len(r.good) == 19 and 3 not in r.good.id.tolist()


def test_duplicate_entity_timestamp_quarantines_every_copy() -> None:
    df = good_frame()
    df.loc[5, ["id", "ts"]] = df.loc[4, ["id", "ts"]].values
    r = check_contract(df, cfg(), now=NOW)
    assert rules(r) == {("unique_entity_timestamp", "id+ts"): 2}
    assert len(r.good) == 18


def test_missing_required_column_is_fatal_and_named() -> None:
    with pytest.raises(ContractViolation, match=r"missing required column\(s\) \['bp'\]"):
        check_contract(good_frame().drop(columns="bp"), cfg(), now=NOW)


def test_bad_share_over_limit_fails_with_counts_per_rule() -> None:
    df = good_frame()
    df.loc[:4, "bp"] = 999.0
    r = check_contract(df, cfg(contract={"max_bad_row_share": 0.05}), now=NOW)
    with pytest.raises(ContractViolation) as err:
        enforce(r)
    msg = str(err.value)
    assert "5 of 20 rows (25.00%)" in msg and "limit is 5.00%" in msg
    assert "rule range on column 'bp': 5 row(s)" in msg
    assert err.value.report["violations"] == [{"rule": "range", "column": "bp", "rows": 5}]


def test_csv_strings_are_typed_by_the_contract() -> None:
    r = enforce(check_contract(good_frame().astype(str), cfg(), now=NOW))
    assert r.report.bad_rows == 0
    assert r.good.bp.dtype == "float64" and r.good.smoker.tolist()[:2] == [True, False]


def test_missing_timestamp_column_is_assigned_and_recorded() -> None:
    c = cfg(source={"path": "x.csv", "entity": "id"})
    r = enforce(check_contract(good_frame().drop(columns="ts"), c, now=NOW))
    assert r.report.timestamp_assigned
    assert (r.good.event_timestamp == pd.Timestamp(NOW)).all()


def test_undeclared_dtypes_are_inferred_and_recorded() -> None:
    assert infer_dtype(pd.Series(["1", "2", "3"])) == "int"
    assert infer_dtype(pd.Series([1.5, 2.0])) == "float"
    assert infer_dtype(pd.Series(["yes", "no"])) == "bool"
    assert infer_dtype(pd.Series(["a", "b"])) == "category"
    c = cfg(features=["age", "sex"])
    r = enforce(check_contract(good_frame(), c, now=NOW))
    assert r.report.inferred_dtypes == {"age": "int", "sex": "category"}

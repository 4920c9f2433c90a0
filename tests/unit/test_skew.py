"""Training-serving skew without Feast: the value comparison (tolerance, categories, booleans,
missing offline values, the worst entities), which logged rows are checked, and the verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from mlsteward.config.models import get_model_config
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.skew import (
    DIFFERING,
    MISSING_OFFLINE,
    FeatureSkew,
    SkewResult,
    compare_features,
    read_served,
)

T0 = pd.Timestamp("2026-03-01T12:00:00Z")
KINDS = {"bmi": "float", "age": "int", "smoking": "category", "diabetes": "bool"}


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six served rows of four patients against their offline values, typed as the log and
    the offline store type them (offline: Int64, float64, string, boolean)."""
    served = pd.DataFrame(
        {
            "patient_id": [1, 2, 3, 4, 1, 2],
            # 1e-7 relative: equal; 0.5: differs; missing offline; 1 -> 3 (largest); both NaN
            "bmi": [30.000003, 25.5, 22.0, 40.0, 33.0, float("nan")],
            "age": [50, 61, 70, 40, 50, 61],
            "smoking": ["never", "current", "former", None, "never", "never"],
            "diabetes": [True, False, True, False, True, None],
        }
    )
    offline = pd.DataFrame(
        {
            "patient_id": [1, 2, 3, 4, 1, 2],
            "bmi": [30.0, 25.0, None, 40.0, 30.0, float("nan")],
            "age": pd.array([50, 60, None, 40, 50, 61], dtype="Int64"),
            "smoking": pd.array(["never", "former", None, "never", "never", "never"], "string"),
            "diabetes": pd.array([True, True, None, False, True, False], dtype="boolean"),
        }
    )
    return served, offline


def compared(tolerance: float = 1e-6) -> dict[str, FeatureSkew]:
    served, offline = frames()
    times = pd.Series([T0 - pd.Timedelta(minutes=m) for m in range(6)])
    return compare_features(
        pa.Table.from_pandas(served),
        offline,
        entity="patient_id",
        served_at=times,
        kinds=KINDS,
        tolerance=tolerance,
    )


def test_numbers_agree_within_the_relative_tolerance_and_missing_offline_is_its_own_kind() -> None:
    bmi = compared()["bmi"]
    # row 0 within 1e-6 of 30; rows 1 and 4 differ; row 2 has no offline value; row 5 both NaN
    assert (bmi.rows, bmi.differing, bmi.missing_offline) == (6, 2, 1)
    assert bmi.mismatch_rate == pytest.approx(3 / 6)
    assert bmi.mean_abs_diff == pytest.approx((0.5 + 3.0) / 2)
    assert bmi.max_abs_diff == pytest.approx(3.0)
    # the worst entity first: patient 1's difference of 3 (its better row is not listed), then
    # patient 2's 0.5, then the missing offline value of patient 3
    worst = [(w.entity, w.kind, w.served, w.offline, w.abs_diff, w.rows) for w in bmi.worst]
    assert worst == [
        (1, DIFFERING, 33.0, 30.0, pytest.approx(3.0), 1),
        (2, DIFFERING, 25.5, 25.0, pytest.approx(0.5), 1),
        (3, MISSING_OFFLINE, 22.0, None, None, 1),
    ]
    assert bmi.worst[0].served_at == (T0 - pd.Timedelta(minutes=4)).isoformat()

    # a tolerance of 0 also flags the 1e-7 difference; a loose one only what is left
    assert compared(tolerance=0.0)["bmi"].differing == 3
    loose = compared(tolerance=0.2)["bmi"]
    assert (loose.differing, loose.missing_offline) == (0, 1)  # 3/30 and 0.5/25 are within 20%


def test_integers_categories_and_booleans() -> None:
    result = compared()
    age = result["age"]
    assert (age.differing, age.missing_offline) == (1, 1)  # 61 vs 60; 70 vs nothing
    assert age.worst[0].served == 61 and age.worst[0].offline == 60
    assert isinstance(age.worst[0].served, int)

    smoking = result["smoking"]
    # "current" vs "former" and a served null against "never" differ; "former" has no offline
    assert (smoking.differing, smoking.missing_offline) == (2, 1)
    assert smoking.mean_abs_diff is None and smoking.max_abs_diff is None
    assert [(w.entity, w.kind, w.served, w.offline) for w in smoking.worst] == [
        (2, DIFFERING, "current", "former"),
        (4, DIFFERING, None, "never"),
        (3, MISSING_OFFLINE, "former", None),
    ]

    diabetes = result["diabetes"]
    # False vs True differs, True vs nothing is missing, None vs False differs
    assert (diabetes.differing, diabetes.missing_offline) == (2, 1)
    assert {(w.entity, w.served, w.offline) for w in diabetes.worst} == {
        (2, False, True),
        (3, True, None),
    }
    # patient 2 disagrees on two rows: counted once in the list, with both rows
    assert [w.rows for w in diabetes.worst if w.entity == 2] == [2]


def test_a_column_that_is_not_its_kind_is_refused_by_name() -> None:
    served = pa.table({"patient_id": [1], "bmi": ["thirty"]})
    offline = pd.DataFrame({"patient_id": [1], "bmi": [30.0]})
    with pytest.raises(Exception, match="'bmi'"):
        compare_features(
            served,
            offline,
            entity="patient_id",
            served_at=pd.Series([T0]),
            kinds={"bmi": "float"},
            tolerance=0.0,
            model="m",
        )


def _log(model: str, rows: list[dict], batch: str) -> None:
    frame = pd.DataFrame(rows)
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    prediction_log.append(model, frame, batch_id=batch)


def test_only_the_services_online_rows_are_read_newest_first() -> None:
    cfg = get_model_config("heart_disease")
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    served = [
        {
            "patient_id": pid,
            "bmi": 30.0 + pid,
            "request_id": f"r{pid}",
            "scored_at": now - timedelta(minutes=60 - pid),
        }
        for pid in range(1, 11)
    ]
    # instances: the client sent the features, the service logged no entity id
    sent = [
        {"patient_id": None, "bmi": 20.0, "request_id": "i1", "scored_at": now},
        {"patient_id": None, "bmi": 21.0, "request_id": "i2", "scored_at": now},
    ]
    _log(cfg.name, served + sent, "online-1")
    # batch scoring: features from the offline store, no request id
    _log(cfg.name, [{"patient_id": 99, "bmi": 25.0, "scored_at": now}], "batch-1")
    # before the window
    _log(cfg.name, [{**served[0], "scored_at": now - timedelta(days=3)}], "old-1")

    since = pd.Timestamp(now - timedelta(hours=24))
    until = pd.Timestamp(now + timedelta(minutes=1))
    table, counts, not_logged = read_served(cfg, since, until, max_rows=4)
    assert counts == {"online": 10, "request": 2, "batch": 1}
    assert table.column("patient_id").to_pylist() == [10, 9, 8, 7]
    assert table.column("bmi").to_pylist() == [40.0, 39.0, 38.0, 37.0]
    assert "age" in not_logged and "bmi" not in not_logged

    everything, _, _ = read_served(cfg, since, until, max_rows=100)
    assert everything.num_rows == 10 and None not in everything.column("patient_id").to_pylist()


def test_verdicts_one_per_feature_and_none_without_rows() -> None:
    cfg = get_model_config("heart_disease")
    limit = cfg.alerts.rules.skew.max_mismatch_rate
    features = compared()
    features["age"] = FeatureSkew("age", "int", 200, 1, 0)  # 0.5%: under the 1% limit
    features["sex"] = FeatureSkew("sex", "category", 0, 0, 0)
    result = SkewResult(
        model=cfg.name,
        since="s",
        until="u",
        tolerance=1e-6,
        max_mismatch_rate=limit,
        max_rows=200_000,
        rows_in_window=6,
        rows_checked=6,
        excluded={"request": 0, "batch": 0},
        rows_without_offline=0,
        features=features,
    )
    verdicts = {o.subject: o for o in result.observations(cfg, "3")}
    assert set(verdicts) == {"bmi", "age", "smoking", "diabetes", "sex"}
    assert verdicts["bmi"].breached is True and verdicts["bmi"].value == pytest.approx(0.5)
    assert verdicts["bmi"].rule == "skew" and verdicts["bmi"].limit == limit
    assert verdicts["bmi"].version == "3"
    assert verdicts["bmi"].summary.startswith("skew in bmi: 50.00% of 6 served rows")
    assert verdicts["bmi"].details["worst_entities"][0]["entity"] == 1
    assert verdicts["age"].breached is False and verdicts["age"].summary.startswith("no skew")
    assert verdicts["sex"].breached is None and verdicts["sex"].value is None
    assert result.skewed == ["bmi", "smoking", "diabetes"]
    assert result.to_dict()["features"]["bmi"]["missing_offline"] == 1

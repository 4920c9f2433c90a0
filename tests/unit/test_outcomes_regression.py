"""A regression model's predictions in the prediction log and its late outcomes: written and read
back, a window of the model's columns, outcomes refused by the objective's rules, the join."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsteward.audit import audit_store
from mlsteward.config.models import get_model_config
from mlsteward.errors import ContractViolation
from mlsteward.monitoring import prediction_log as plog
from mlsteward.monitoring.current_window import drift_log_columns, read_current_window
from mlsteward.monitoring.outcomes import ingest_labels
from mlsteward.monitoring.scoring import score_frame
from tests.support.regression import (
    ENTITY,
    LABEL,
    MODEL,
    TIMESTAMP,
    fit_verified,
    regression_cfg,
    stays,
)

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory):
    return fit_verified(regression_cfg(), stays(2_000, seed=1), tmp_path_factory.mktemp("m"))


def logged(verified, n: int = 300, seed: int = 5) -> pd.DataFrame:
    """A scored regression batch appended to the log; returns the rows with their outcome."""
    rows = stays(n, seed=seed)
    scored = score_frame(regression_cfg(), verified, rows.drop(columns=[LABEL]), top_k=1,
                         scored_at=NOW - timedelta(hours=1)).frame  # fmt: skip
    plog.append(MODEL, scored, batch_id=f"reg-{seed}")
    return rows.merge(scored[[ENTITY, "prediction"]], on=ENTITY)


def outcomes_file(tmp_path: Path, values: list, name: str = "outcomes.csv") -> Path:
    n = len(values)
    frame = pd.DataFrame(
        {
            ENTITY: np.arange(900_000, 900_000 + n),
            TIMESTAMP: [f"2025-01-01T00:{i:02d}:00Z" for i in range(n)],
            LABEL: values,
        }
    )
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def ingest(cfg, path: Path) -> dict:
    with audit_store() as store:
        return ingest_labels(cfg, path, actor="user:test", audit=store)


def test_regression_batches_round_trip_and_join_float_outcomes(verified, tmp_path) -> None:
    truth = logged(verified)
    back = plog.read(MODEL)
    assert back["prediction"].dtype == np.float64 and "prediction_proba" not in back.columns
    np.testing.assert_array_equal(back["prediction"].to_numpy(), truth["prediction"].to_numpy())

    # a third of the stays come back with their length, as text in a CSV
    known = truth.iloc[::3]
    path = tmp_path / "lengths.csv"
    known[[ENTITY, TIMESTAMP, LABEL]].astype({LABEL: str}).to_csv(path, index=False)
    result = ingest(regression_cfg(), path)
    assert (result["matched"], result["unmatched"], result["rows"]) == (len(known), 0, len(known))

    joined = plog.read_with_labels(MODEL, columns=[ENTITY, "prediction"])
    assert joined[plog.LABEL].dtype == np.float64
    by_id = joined.set_index(ENTITY)[plog.LABEL]
    np.testing.assert_array_equal(by_id.loc[known[ENTITY]].to_numpy(), known[LABEL].to_numpy())
    assert by_id.isna().sum() == len(truth) - len(known)


def test_the_drift_window_reads_the_models_columns(verified, tmp_path) -> None:
    cfg = regression_cfg()
    truth = logged(verified)
    assert drift_log_columns(cfg) == ["age", "prior_visits", "ward", "prediction"]
    assert drift_log_columns(get_model_config("heart_disease"))[-1] == "prediction_proba"
    path = tmp_path / "lengths.parquet"
    truth.iloc[:100][[ENTITY, TIMESTAMP, LABEL]].to_parquet(path, index=False)
    ingest(cfg, path)

    window = read_current_window(cfg, NOW - timedelta(days=1))
    assert window.rows == 300 and window.labelled_rows == 100
    assert list(window.frame.columns) == [*drift_log_columns(cfg), LABEL, "label_ingested_at"]
    assert window.frame[LABEL].notna().sum() == 100
    assert window.frame["prediction"].dtype == np.float64


def test_a_large_regression_window_is_presampled_with_its_outcomes(verified, tmp_path) -> None:
    cfg = regression_cfg(max_rows=1_000)
    truth = logged(verified, n=3_000, seed=6)
    path = tmp_path / "lengths.parquet"
    truth.iloc[::10][[ENTITY, TIMESTAMP, LABEL]].to_parquet(path, index=False)
    ingest(cfg, path)

    window = read_current_window(cfg, NOW - timedelta(days=1), seed=1)
    assert window.presample is not None and window.rows == 3_000
    assert len(window.frame) == 2_000 and window.labelled_rows == 300
    assert window.labelled is None or window.labelled[LABEL].notna().all()
    sample = window.frame.merge(truth[["age", LABEL]], on="age", suffixes=("", "_true"))
    have = sample[LABEL].notna()
    np.testing.assert_array_equal(sample.loc[have, LABEL], sample.loc[have, f"{LABEL}_true"])


@pytest.mark.parametrize(
    ("objective", "values", "rule", "rows"),
    [
        ("count:poisson", ["3", "-1", "2.5", "abc", "", "0"],
         "not a finite number in row(s) 4, 5", "not a whole number >= 0 (count:poisson) in "
         "row(s) 2, 3"),
        ("reg:tweedie", ["0.5", "-0.25", "inf", "7"],
         "not a finite number in row(s) 3", "not a number >= 0 (reg:tweedie) in row(s) 2"),
        ("reg:squarederror", ["-3.5", "nan", "1e400", "12"],
         "not a finite number in row(s) 2, 3", None),
    ],
)  # fmt: skip
def test_outcomes_that_break_the_objectives_rule_are_refused(
    tmp_path, objective, values, rule, rows
) -> None:
    cfg = regression_cfg(objective)
    with pytest.raises(ContractViolation) as caught:
        ingest(cfg, outcomes_file(tmp_path, values))
    message = str(caught.value)
    assert f"'{LABEL}' {rule}" in message
    if rows is not None:
        assert f"'{LABEL}' {rows}" in message
    assert message.endswith("; nothing was attached")
    assert plog.label_files(MODEL) == []


def test_valid_outcomes_of_each_objective_are_attached(tmp_path) -> None:
    for objective, values in (
        ("count:poisson", ["0", "4", "12.0"]),
        ("reg:tweedie", ["0", "0.75", "3.5"]),
        ("reg:squarederror", ["-2.5", "0", "8.25"]),
    ):
        result = ingest(regression_cfg(objective), outcomes_file(tmp_path, values, objective))
        assert result["stored"] == 3
    assert result["relabelled"] == 3  # the same keys each time
    labels, _, _ = plog.read_labels(MODEL)
    assert labels[plog.LABEL].dtype == np.float64
    assert sorted(labels[plog.LABEL]) == [-2.5, 0.0, 8.25]  # the newest ingest wins


def test_classification_outcomes_keep_their_rule(tmp_path) -> None:
    cfg = get_model_config("heart_disease")
    path = tmp_path / "heart.csv"
    pd.DataFrame(
        {"patient_id": [1, 2], "event_timestamp": ["2025-01-01", "2025-01-02"],
         "heart_disease": ["1", "0.5"]}
    ).to_csv(path, index=False)  # fmt: skip
    with pytest.raises(
        ContractViolation, match=r"'heart_disease' not one of \[0, 1\] in row\(s\) 2"
    ):
        ingest(cfg, path)

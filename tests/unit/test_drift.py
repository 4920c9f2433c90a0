"""Drift adapter: known answers on tiny frames, config honoured, clear errors, and the generator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlsteward.config import ModelConfig, load_model_config
from mlsteward.drift import ColumnDriftResult, DriftResult, column_methods, compute_drift
from mlsteward.errors import MlstewardError
from mlsteward.settings import project_root
from mlsteward.synthetic import Shift, generate_batch, generate_cohort, risk_logit

N = 2_000


def _cfg(**drift) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "toy",
            "task": "binary_classification",
            "source": {"path": "x.parquet", "entity": "id", "timestamp": "ts"},
            "label": "y",
            "features": [
                {"name": "moved", "dtype": "float"},
                {"name": "still", "dtype": "float"},
                {"name": "count", "dtype": "int"},
                {"name": "colour", "dtype": "category", "categories": ["red", "blue"]},
                {"name": "flag", "dtype": "bool"},
            ],
            "drift": drift,
        }
    )


def _frame(rng: np.random.Generator, n: int, *, shift: float, p_red: float) -> pd.DataFrame:
    moved = rng.normal(0.0, 1.0, n) + shift
    return pd.DataFrame(
        {
            "moved": moved,
            "still": rng.normal(0.0, 1.0, n),
            "count": rng.poisson(3.0, n).astype(np.int64),
            "colour": np.where(rng.random(n) < p_red, "red", "blue").astype(object),
            "flag": rng.random(n) < 0.3,
        }
    )


@pytest.fixture(scope="module")
def toy() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    return _frame(rng, N, shift=0.0, p_red=0.8), _frame(rng, N, shift=4.0, p_red=0.2)


@pytest.fixture(scope="module")
def heart_cfg() -> ModelConfig:
    return load_model_config(project_root() / "config" / "models" / "heart_disease.yaml")


@pytest.fixture(scope="module")
def heart_reference() -> pd.DataFrame:
    return generate_cohort(20_000, seed=0)


def test_known_answers(toy):
    ref, cur = toy
    result = compute_drift(ref, cur, _cfg(), prediction_column=None)
    assert result.drifted_columns == ["moved", "colour"]  # config order
    assert not result.columns["still"].drifted
    assert not result.columns["count"].drifted
    assert not result.columns["flag"].drifted
    assert result.columns["moved"].method == "wasserstein"
    assert result.columns["moved"].kind == "numeric"
    assert result.columns["colour"].method == "jensenshannon"
    assert result.columns["colour"].kind == "categorical"
    assert result.columns["flag"].kind == "categorical"
    assert result.columns["moved"].score > 1.0 > 0.1 == result.columns["moved"].threshold
    assert result.dataset_drift_share == pytest.approx(2 / 5)
    assert result.prediction_drift is None and result.target_drift is None
    assert result.performance is None
    assert result.sampling == {} and result.rows == {"reference": N, "current": N}
    assert result.report_path is None


def test_overrides_and_global_threshold_are_honoured(toy):
    ref, cur = toy
    cfg = _cfg(
        threshold=0.2,
        columns={"still": {"method": "ks", "threshold": 1e-6}, "colour": {"method": "psi"}},
    )
    methods = column_methods(cfg)
    assert methods["still"] == ("ks", 1e-6, "numeric")
    assert methods["colour"] == ("psi", 0.2, "categorical")
    assert methods["moved"] == ("wasserstein", 0.2, "numeric")
    result = compute_drift(ref, cur, cfg, prediction_column=None)
    assert (result.columns["still"].method, result.columns["still"].threshold) == ("ks", 1e-6)
    assert not result.columns["still"].drifted  # a p-value test: drift only when p < 1e-6
    assert (result.columns["colour"].method, result.columns["colour"].threshold) == ("psi", 0.2)
    assert result.columns["colour"].drifted
    assert result.columns["moved"].threshold == 0.2


def test_p_value_direction_is_evidentlys(toy):
    """A KS test on a 4-sd shift has p ~ 0: drifted although the score is below threshold."""
    ref, cur = toy
    result = compute_drift(ref, cur, _cfg(numeric_method="ks"), prediction_column=None)
    moved = result.columns["moved"]
    assert moved.method == "ks" and moved.threshold == 0.05
    assert moved.score < moved.threshold and moved.drifted


def test_round_trip_and_json(toy, tmp_path):
    ref, cur = toy
    ref = ref.assign(y=(ref["moved"] > 0).astype(int), prediction_proba=0.5)
    cur = cur.assign(y=(cur["moved"] > 4).astype(int), prediction_proba=0.5)
    html = tmp_path / "reports" / "drift.html"
    result = compute_drift(ref, cur, _cfg(), html_path=html)
    assert result.report_path == str(html) and html.stat().st_size > 1000
    # constant predictions: ROC-AUC is defined (0.5), but make one NaN-able field explicit
    result.columns["still"] = ColumnDriftResult("still", "ks", float("nan"), 0.05, False, "numeric")
    d = result.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert d["columns"]["still"]["score"] is None
    back = DriftResult.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert back.prediction_drift == result.prediction_drift
    assert back.target_drift is not None and back.target_drift.column == "y"
    assert back.columns["moved"] == result.columns["moved"]


@pytest.mark.parametrize(
    ("side", "mutate", "words"),
    [
        ("reference", lambda f: f.drop(columns=["still"]), ["reference", "'still'"]),
        ("current", lambda f: f.drop(columns=["colour", "flag"]), ["current", "colour", "flag"]),
        ("current", lambda f: f.assign(moved=f["moved"].astype(str)), ["current", "'moved'"]),
        ("reference", lambda f: f.assign(colour=1.5), ["reference", "'colour'", "category"]),
        ("current", lambda f: f.assign(count=f["count"] + 0.5), ["current", "'count'", "int"]),
        ("current", lambda f: f.assign(flag="maybe"), ["current", "'flag'", "bool"]),
    ],
)
def test_bad_input_names_column_and_side(toy, side, mutate, words):
    ref, cur = toy
    if side == "reference":
        ref = mutate(ref)
    else:
        cur = mutate(cur)
    with pytest.raises(MlstewardError) as err:
        compute_drift(ref, cur, _cfg(), prediction_column=None)
    for w in words:
        assert w in str(err.value)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_empty_column_is_a_clear_error(toy):
    ref, cur = toy
    with pytest.raises(MlstewardError, match="still"):
        compute_drift(ref, cur.assign(still=np.nan), _cfg(), prediction_column=None)


def test_sampling_is_recorded_and_stratified(toy):
    ref, cur = toy
    ref = pd.concat([ref] * 3, ignore_index=True)
    ref["y"] = (np.arange(len(ref)) % 4 == 0).astype(int)
    cur = cur.assign(y=(np.arange(len(cur)) % 4 == 0).astype(int))
    result = compute_drift(ref, cur, _cfg(max_rows=1_000), prediction_column=None, seed=3)
    assert result.rows == {"reference": 3 * N, "current": N}
    assert result.sampling["reference"] == {
        "rows_before": 3 * N,
        "rows_after": 1_000,
        "method": "stratified by y",
        "seed": 3,
    }
    assert result.sampling["current"]["rows_after"] == 1_000
    assert result.drifted_columns == ["moved", "colour"]
    again = compute_drift(ref, cur, _cfg(max_rows=1_000), prediction_column=None, seed=3)
    assert again.to_dict() == result.to_dict()


def _scored(frame: pd.DataFrame) -> pd.DataFrame:
    """Score with the true (reference) risk function: a well-calibrated model."""
    return frame.assign(prediction_proba=1.0 / (1.0 + np.exp(-risk_logit(frame))))


def test_performance_drop_under_concept_shift(heart_cfg, heart_reference):
    ref = _scored(heart_reference)
    same = _scored(generate_batch(5_000, seed=1))
    moved = _scored(generate_batch(5_000, seed=1, shift=Shift(concept=1.0)))
    stable = compute_drift(ref, same, heart_cfg)
    shifted = compute_drift(ref, moved, heart_cfg, decision_threshold=0.4)
    assert abs(stable.performance["change"]["roc_auc"]) < 0.03
    assert shifted.performance["change"]["roc_auc"] < -0.15
    assert shifted.performance["change"]["brier"] > 0.05
    assert shifted.performance["decision_threshold"] == 0.4
    assert set(shifted.performance["reference"]) >= {"roc_auc", "brier", "accuracy"}
    # same features: no feature drift, so only the label relation moved
    assert shifted.drifted_columns == stable.drifted_columns == []
    assert shifted.prediction_drift is not None and not shifted.prediction_drift.drifted


def test_generator_unshifted_is_quiet(heart_cfg, heart_reference):
    for current in (generate_cohort(20_000, seed=1), generate_batch(5_000, seed=1)):
        result = compute_drift(heart_reference, current, heart_cfg, prediction_column=None)
        assert result.drifted_columns == []
        assert max(r.score for r in result.columns.values()) < 0.08  # threshold 0.1
        assert result.target_drift is not None and not result.target_drift.drifted


def test_generator_covariate_shift_flags_exactly_those(heart_cfg, heart_reference):
    current = generate_batch(5_000, seed=1, shift=Shift(covariate={"bmi": 1.0, "cholesterol": 1.0}))
    result = compute_drift(heart_reference, current, heart_cfg, prediction_column=None)
    assert result.drifted_columns == ["cholesterol", "bmi"]
    assert result.dataset_drift_share == pytest.approx(2 / 14)

"""Pure training functions: split, search space, encoding, threshold, metrics, tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hyperopt import pyll

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.training import SearchDimension, TuningConfig
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.training.fitting import (
    build_search_space,
    make_dmatrix,
    time_split,
    tune,
    typed_params,
)
from mlsteward.training.metrics import choose_threshold, evaluate


def frame(n: int = 100) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    return pd.DataFrame({"row_id": np.arange(n)[::-1], "ts": ts, "x": np.arange(n)})


def test_time_split_is_ordered_and_complete() -> None:
    df = frame(100).sample(frac=1, random_state=0)
    s = time_split(df, "ts", 0.7, 0.15)
    assert s.sizes() == {"train": 70, "validation": 15, "test": 15}
    assert s.train.ts.max() < s.validation.ts.min()
    assert s.validation.ts.max() < s.test.ts.min()
    assert sorted(pd.concat([s.train, s.validation, s.test]).x) == list(range(100))


def test_time_split_never_cuts_through_one_timestamp() -> None:
    df = frame(100)
    df["ts"] = df.ts.dt.floor("7D")  # many rows share each timestamp
    s = time_split(df, "ts", 0.7, 0.15)
    assert not set(s.train.ts) & set(s.validation.ts)
    assert not set(s.validation.ts) & set(s.test.ts)


def test_time_split_refuses_when_a_part_would_be_empty() -> None:
    df = frame(10)
    df["ts"] = df.ts.iloc[0]  # a single event time
    with pytest.raises(ValueError, match=r"left .* empty"):
        time_split(df, "ts", 0.7, 0.15)


def test_search_space_from_data_samples_within_bounds() -> None:
    space = {
        "max_depth": SearchDimension(dist="quniform", low=2, high=6, q=1),
        "eta": SearchDimension(dist="loguniform", low=0.01, high=0.3),
        "booster": SearchDimension(dist="choice", options=["gbtree", "dart"]),
    }
    hp_space = build_search_space(space)
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = typed_params(pyll.stochastic.sample(hp_space, rng=rng), space)
        assert isinstance(s["max_depth"], int) and 2 <= s["max_depth"] <= 6
        assert 0.01 <= s["eta"] <= 0.3
        assert s["booster"] in ("gbtree", "dart")


def cfg_with_category() -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "m",
            "task": "binary_classification",
            "source": {"path": "x.csv", "entity": "id"},
            "label": "y",
            "features": [
                {"name": "c", "dtype": "category", "categories": ["b", "a"]},
                {"name": "n", "dtype": "float"},
                {"name": "f", "dtype": "bool"},
            ],
        }
    )


def test_encoding_uses_declared_category_order_and_marks_categoricals() -> None:
    cfg = cfg_with_category()
    df = pd.DataFrame({"c": ["a", "b", None], "n": [1.5, None, 3.0], "f": [True, False, True]})
    enc = make_encoding(cfg, {}, df)
    x = encode(df, enc)
    assert enc.categories == {"c": ["b", "a"]}
    assert enc.feature_types == ["c", "q", "q"]
    assert x.c.tolist()[:2] == [1.0, 0.0] and np.isnan(x.c.iloc[2])
    assert x.dtypes.unique().tolist() == [np.float32]
    # selected by name: column order in the input frame does not matter
    assert encode(df[["f", "n", "c"]], enc).equals(x)


def test_threshold_max_f1_beats_fixed_half_on_skewed_scores() -> None:
    y = np.array([0] * 80 + [1] * 20)
    p = np.concatenate([np.linspace(0, 0.3, 80), np.linspace(0.25, 0.45, 20)])
    th = choose_threshold(y, p, "max_f1", 0.5)
    assert evaluate(y, p, th)["f1"] > evaluate(y, p, 0.5)["f1"]
    assert choose_threshold(y, p, "fixed", 0.3) == 0.3


def test_evaluate_metrics_on_a_perfect_ranking() -> None:
    y = np.array([0, 0, 1, 1])
    m = evaluate(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)
    assert m["roc_auc"] == 1.0 and m["accuracy"] == 1.0 and m["brier"] < 0.05


def test_tuning_is_seeded_and_reports_every_trial() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)}).astype(np.float32)
    y = pd.Series((x.a + 0.5 * rng.normal(size=600) > 0).astype(int))
    cfg = ModelConfig.model_validate(
        {
            "name": "m",
            "task": "binary_classification",
            "source": {"path": "x", "entity": "id"},
            "label": "y",
            "features": ["a", "b"],
        }
    )
    enc = make_encoding(cfg, {"a": "float", "b": "float"}, x)
    dtr, dval = make_dmatrix(x[:400], y[:400], enc), make_dmatrix(x[400:], y[400:], enc)
    tuning = TuningConfig(num_boost_round=50, early_stopping_rounds=5)
    seen: list[int] = []
    r1 = tune(dtr, dval, tuning, max_evals=4, seed=3, on_trial=lambda t, b, n: seen.append(n))
    r2 = tune(dtr, dval, tuning, max_evals=4, seed=3)
    assert seen == [4, 4, 4, 4] and len(r1.trials) == 4
    assert r1.best_params == r2.best_params and r1.best_loss == r2.best_loss
    assert r1.best_loss == min(t.loss for t in r1.trials)


def test_assigned_timestamps_split_in_row_order() -> None:
    df = frame(100)
    df["ts"] = df.ts.iloc[0]  # ingestion stamped every row alike
    s = time_split(df, "ts", 0.7, 0.15, keep_ties_together=False)
    assert s.sizes() == {"train": 70, "validation": 15, "test": 15}
    assert s.train.row_id.max() < s.validation.row_id.min()

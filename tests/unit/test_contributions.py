"""Explanations of a log-link model restated in the target's units add up to the prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from mlsteward.monitoring.contributions import in_target_units


def test_poisson_contributions_add_up_to_the_predicted_count() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = rng.poisson(np.exp(1.0 + 0.6 * x["a"] - 0.3 * x["b"]))
    model = xgb.XGBRegressor(objective="count:poisson", n_estimators=30, max_depth=3).fit(x, y)
    raw = model.get_booster().predict(xgb.DMatrix(x), pred_contribs=True)
    values, base = in_target_units(raw[:, :-1], raw[:, -1], "count:poisson")
    prediction = model.predict(x)
    np.testing.assert_allclose(base + values.sum(axis=1), prediction, rtol=1e-4)
    # signs and order within a row are the log scale's
    assert np.array_equal(np.sign(values), np.sign(raw[:, :-1]))
    # a unit increase of 'a' adds days, not log-days: the scale is about the prediction
    assert np.mean(np.abs(values[:, 0])) > np.mean(np.abs(raw[:, 0]))


def test_identity_link_and_cancelling_rows_are_left_exact() -> None:
    raw = np.array([[0.5, -0.5], [0.2, 0.1]])
    base = np.array([1.0, 1.0])
    same, same_base = in_target_units(raw, base, "reg:squarederror")
    assert same is raw and same_base is base
    values, units = in_target_units(raw, base, "reg:tweedie")
    np.testing.assert_allclose(units, np.e)
    np.testing.assert_allclose(values[0], raw[0] * np.e)  # first-order where they cancel
    np.testing.assert_allclose(units[1] + values[1].sum(), np.exp(1.3))

"""Batch scoring core: probabilities, labels, SHAP identity, top-k explanations, column order."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.data.synthetic import generate_cohort
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance import registry
from mlsteward.monitoring.scoring import (
    ScoredBatch,
    score_frame,
    shap_feature_column,
    shap_value_column,
    top_k_contributions,
)

THRESHOLD = 0.4


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return get_model_config("heart_disease")


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_cohort(n_rows=3000, seed=1)


@pytest.fixture(scope="module")
def verified(cfg: ModelConfig, cohort: pd.DataFrame, tmp_path_factory) -> registry.VerifiedModel:
    """A real model with categorical partition splits, saved and reloaded like the registry does."""
    enc = make_encoding(cfg, {f.name: f.dtype for f in cfg.features}, cohort)
    model = xgb.XGBClassifier(
        n_estimators=25,
        max_depth=4,
        tree_method="hist",
        enable_categorical=True,
        feature_types=enc.feature_types,
        max_cat_to_onehot=1,
        random_state=0,
        n_jobs=1,
    )
    model.fit(encode(cohort, enc), cohort[cfg.label].to_numpy())
    path = tmp_path_factory.mktemp("model") / "model.ubj"
    model.save_model(path)
    loaded = xgb.XGBClassifier()
    loaded.load_model(path)
    info = registry.VersionInfo(
        name=cfg.name,
        version="1",
        run_id="r",
        source="s",
        tags={
            "feature_encoding": json.dumps(enc.to_dict()),
            "decision_threshold": str(THRESHOLD),
            "model_artifact_sha256": "x",
        },
    )
    return registry.VerifiedModel(info=info, model=loaded, sha256="x")


@pytest.fixture(scope="module")
def batch(cfg: ModelConfig, verified: registry.VerifiedModel, cohort) -> pd.DataFrame:
    return cohort.drop(columns=[cfg.label]).iloc[:500].copy()


@pytest.fixture(scope="module")
def scored(cfg, verified, batch) -> ScoredBatch:
    return score_frame(cfg, verified, batch, top_k=3, scored_at=datetime(2025, 3, 1, tzinfo=UTC))


def test_model_really_has_categorical_splits(verified: registry.VerifiedModel) -> None:
    raw = json.loads(verified.model.get_booster().save_raw("json"))
    trees = raw["learner"]["gradient_booster"]["model"]["trees"]
    assert sum(len(t["categories_nodes"]) for t in trees) > 0


def test_probabilities_and_labels(cfg, verified, batch, scored: ScoredBatch) -> None:
    enc = verified.info.encoding
    expected = verified.model.predict_proba(encode(batch, enc))[:, 1]
    f = scored.frame
    np.testing.assert_allclose(f["prediction_proba"].to_numpy(), expected, rtol=0, atol=1e-7)
    assert (f["prediction"] == (f["prediction_proba"] >= THRESHOLD).astype(int)).all()
    assert set(f["prediction"]) <= set(cfg.label_values)
    assert scored.threshold == THRESHOLD
    assert (scored.model, scored.version, scored.top_k) == (cfg.name, "1", 3)
    assert (f["model_version"] == "1").all()
    assert (f["scored_at"] == pd.Timestamp("2025-03-01", tz="UTC")).all()
    assert str(f["scored_at"].dtype) == "datetime64[us, UTC]"
    lead = [cfg.source.entity, cfg.timestamp_column, *enc.columns]
    assert list(f.columns[: len(lead)]) == lead
    pd.testing.assert_frame_equal(f[lead], batch[lead].reset_index(drop=True))


def test_shap_plus_base_value_is_the_margin(cfg, verified, batch) -> None:
    """Every row's contributions add up, with the base value, to the model's log-odds."""
    from mlsteward.monitoring.scoring import explain

    enc = verified.info.encoding
    x = encode(batch, enc)
    x.iloc[::7, enc.columns.index("smoking")] = np.nan  # missing categories follow their branch
    x.iloc[::5, enc.columns.index("cholesterol")] = np.nan
    values, base = explain(verified, x)
    margin = verified.model.predict(x, output_margin=True)
    assert values.shape == (len(x), len(enc.columns))
    np.testing.assert_allclose(values.sum(axis=1) + base, margin, rtol=0, atol=1e-4)
    # Same numbers as XGBoost's native TreeSHAP with categorical support.
    native = verified.model.get_booster().predict(
        xgb.DMatrix(x, feature_types=enc.feature_types, enable_categorical=True),
        pred_contribs=True,
    )
    np.testing.assert_allclose(values, native[:, :-1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(native[:, -1], base, rtol=0, atol=1e-5)


def test_top_k_columns_are_the_largest_contributions(cfg, verified, batch, scored) -> None:
    from mlsteward.monitoring.scoring import explain

    enc = verified.info.encoding
    values, base = explain(verified, encode(batch, enc))
    assert scored.base_value == pytest.approx(base, abs=1e-6)
    f = scored.frame
    expected = top_k_contributions(values, enc.columns, 3)
    for r in (0, 1, 2):
        for row, pairs in zip(f.itertuples(index=False), expected, strict=True):
            assert getattr(row, shap_feature_column(r + 1)) == pairs[r][0]
            assert getattr(row, shap_value_column(r + 1)) == pytest.approx(pairs[r][1])
    mags = np.abs(f[[shap_value_column(r) for r in (1, 2, 3)]].to_numpy())
    assert (np.diff(mags, axis=1) <= 1e-12).all()
    # The top value of each row is the row's largest |SHAP| of all features.
    np.testing.assert_allclose(mags[:, 0], np.abs(values).max(axis=1))
    assert not any(c.startswith("shap_4") for c in f.columns)


def test_top_k_contributions_orders_by_magnitude() -> None:
    values = np.array([[0.1, -0.5, 0.3, 0.0], [2.0, 0.0, -2.0, 1.0]])
    out = top_k_contributions(values, ["a", "b", "c", "d"], 2)
    assert out == [[("b", -0.5), ("c", 0.3)], [("a", 2.0), ("c", -2.0)]]  # ties: column order
    assert top_k_contributions(values, ["a", "b", "c", "d"], 0) == [[], []]
    assert len(top_k_contributions(values, ["a", "b", "c", "d"], 10)[0]) == 4
    with pytest.raises(ValueError, match="do not match"):
        top_k_contributions(values, ["a", "b"], 1)


def test_top_k_zero_adds_no_explanation_columns(cfg, verified, batch, scored) -> None:
    plain = score_frame(cfg, verified, batch, top_k=0, scored_at=datetime(2025, 3, 1, tzinfo=UTC))
    assert plain.top_k == 0
    assert not [c for c in plain.frame.columns if c.startswith("shap_")]
    assert plain.base_value == pytest.approx(scored.base_value, abs=1e-6)
    pd.testing.assert_frame_equal(plain.frame, scored.frame[plain.frame.columns], check_exact=True)


def test_default_top_k_comes_from_config(cfg, verified, batch) -> None:
    out = score_frame(cfg, verified, batch.iloc[:20])
    assert out.top_k == cfg.scoring.top_k
    assert shap_feature_column(cfg.scoring.top_k) in out.frame.columns
    assert out.frame["scored_at"].dt.tz is not None


def test_columns_are_selected_by_name(cfg, verified, batch, scored) -> None:
    shuffled = batch[list(np.random.default_rng(0).permutation(batch.columns))]
    shuffled = shuffled.assign(unrelated=1.0)
    again = score_frame(
        cfg, verified, shuffled, top_k=3, scored_at=datetime(2025, 3, 1, tzinfo=UTC)
    )
    pd.testing.assert_frame_equal(again.frame, scored.frame, check_exact=True)


def test_missing_columns_are_named(cfg, verified, batch) -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['bmi'\]"):
        score_frame(cfg, verified, batch.drop(columns=["bmi"]))
    with pytest.raises(ValueError, match="top_k"):
        score_frame(cfg, verified, batch, top_k=-1)


def test_empty_frame_scores_to_empty(cfg, verified, batch) -> None:
    out = score_frame(cfg, verified, batch.iloc[:0], top_k=2)
    assert out.frame.empty
    assert np.isfinite(out.base_value)
    assert shap_value_column(2) in out.frame.columns


def test_scored_frame_round_trips_through_the_prediction_log(scored: ScoredBatch) -> None:
    from mlsteward.monitoring import prediction_log

    prediction_log.append(scored.model, scored.frame, batch_id="s1")
    back = prediction_log.read(scored.model).drop(columns="batch_id")
    assert list(back.columns) == list(scored.frame.columns)
    pd.testing.assert_frame_equal(back, scored.frame, check_dtype=False)
    assert back["shap_1_value"].dtype == np.float64

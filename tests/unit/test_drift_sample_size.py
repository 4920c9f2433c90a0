"""Drift verdicts at any sample size: the method by size, quiet small samples, what each test
can see, PSI beside the verdict, and the training window as reference for a small holdout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from mlsteward.config.models import ModelConfig, load_model_config
from mlsteward.config.paths import project_root
from mlsteward.data.ingestion import ingest
from mlsteward.data.snapshots import SnapshotMissingError
from mlsteward.data.synthetic import generate_cohort, write_dataset
from mlsteward.monitoring.drift import column_methods, compute_drift
from mlsteward.monitoring.drift_power import psi
from mlsteward.monitoring.drift_reference import choose_reference, training_window
from mlsteward.monitoring.drift_result import DriftResult
from mlsteward.training.fitting import time_split


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
                {"name": "colour", "dtype": "category", "categories": ["red", "blue", "green"]},
                {"name": "flag", "dtype": "bool"},
            ],
            "drift": drift,
        }
    )


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "moved": rng.normal(0.0, 1.0, n) + shift,
            "still": rng.gamma(2.0, 1.0, n).round(1),  # skewed, rounded: ties
            "colour": rng.choice(["red", "blue", "green"], n, p=[0.5, 0.3, 0.2]).astype(object),
            "flag": rng.random(n) < 0.3,
        }
    )


def test_auto_picks_by_size_and_overrides_win():
    cfg = _cfg(columns={"still": {"method": "psi"}, "moved": {"threshold": 0.3}})
    small = column_methods(cfg, rows=dict.fromkeys(["moved", "still", "colour", "flag"], 300),
                           categories={"colour": 3, "flag": 2})  # fmt: skip
    assert small == {
        "moved": ("ks", 0.01, "numeric"),  # a p-value test at drift.p_value, not 0.3
        "still": ("psi", None, "numeric"),  # an explicit method stays, whatever the size
        "colour": ("chisquare_two_sample", 0.01, "categorical"),
        "flag": ("z", 0.01, "categorical"),
    }
    large = column_methods(cfg, rows=dict.fromkeys(["moved", "still", "colour", "flag"], 1_001))
    assert large["moved"] == ("wasserstein", 0.3, "numeric")  # the override is the distance's
    assert large["colour"] == ("jensenshannon", None, "categorical")
    assert large["flag"] == ("jensenshannon", None, "categorical")
    # the switch and the p-value are the config's; a global method is used at every size
    moved = _cfg(small_sample_rows=100, p_value=0.001, categorical_method="TVD")
    assert column_methods(moved, rows={"moved": 100, "colour": 50})["moved"][:2] == ("ks", 0.001)
    assert column_methods(moved, rows={"moved": 101})["moved"][0] == "wasserstein"
    assert column_methods(moved, rows={"colour": 50})["colour"][:2] == ("TVD", None)


def test_small_unshifted_samples_are_quiet_and_small_shifts_are_seen():
    cfg = _cfg()
    flagged, checked = 0, 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        result = compute_drift(_frame(rng, 120), _frame(rng, 300), cfg, prediction_column=None)
        assert {c.method for c in result.columns.values()} == {
            "ks", "chisquare_two_sample", "z",
        }  # fmt: skip
        flagged += len(result.drifted_columns)
        checked += len(result.columns)
    assert flagged / checked <= 0.1  # p < 0.01 per column: ~1% expected; 0 with these seeds

    rng = np.random.default_rng(11)
    shifted = compute_drift(
        _frame(rng, 5_000), _frame(rng, 500, shift=0.5), cfg, prediction_column=None
    )
    assert shifted.drifted_columns == ["moved"]
    assert shifted.columns["moved"].method == "ks"  # the smaller side has 500 rows


def test_min_detectable_shift_and_psi_are_recorded_and_sensible(tmp_path: Path):
    cfg = _cfg()
    rng = np.random.default_rng(3)
    ref = _frame(rng, 4_000)
    few = compute_drift(ref, _frame(rng, 100), cfg, prediction_column=None)
    more = compute_drift(ref, _frame(rng, 900), cfg, prediction_column=None)
    html = tmp_path / "drift.html"
    large = compute_drift(ref, _frame(rng, 3_000), cfg, prediction_column=None, html_path=html)

    for name in ("moved", "still", "colour", "flag"):
        small_n, big_n = few.columns[name], more.columns[name]
        assert (small_n.reference_rows, small_n.current_rows) == (4_000, 100)
        assert 0 < big_n.min_detectable_shift < small_n.min_detectable_shift, name
        assert small_n.psi is not None and small_n.psi >= 0
    # K-S on a normal column: the shift whose statistic is the critical value, 2 Phi(d/2) - 1
    critical = math.sqrt(-math.log(0.005) / 2) * math.sqrt((4_000 + 100) / (4_000 * 100))
    expected = 2 * norm.ppf((1 + critical) / 2)
    assert few.columns["moved"].min_detectable_shift == pytest.approx(expected, rel=0.05)
    # a distance sees its own threshold (a location shift of t SDs scores t)
    assert large.columns["moved"].method == "wasserstein"
    assert large.columns["moved"].min_detectable_shift == pytest.approx(0.1)
    assert 0 < large.columns["colour"].min_detectable_shift < 0.5
    page = html.read_text(encoding="utf-8")
    assert "What each test can see" in page
    assert "moved: wasserstein (score &gt;= 0.1) on 4,000 reference and 3,000 current rows" in page

    back = DriftResult.from_dict(json.loads(json.dumps(few.to_dict(), allow_nan=False)))
    assert back.columns == few.columns


def test_psi_known_answers_and_beside_the_verdict():
    same = pd.Series(np.arange(1_000, dtype=float))
    assert psi(same, same, "numeric") == pytest.approx(0.0)
    # a tenth of the rows moved from the top decile into the bottom one
    moved = pd.Series(np.r_[np.arange(900, dtype=float), -np.ones(100)])
    expected = 0.1 * math.log(0.2 / 0.1) + (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(same, moved, "numeric") == pytest.approx(expected, rel=1e-9)
    cats = pd.Series(["a"] * 50 + ["b"] * 50)
    now = pd.Series(["a"] * 80 + ["b"] * 20)
    assert psi(cats, now, "categorical") == pytest.approx(
        0.3 * math.log(0.8 / 0.5) - 0.3 * math.log(0.2 / 0.5)
    )
    # PSI is recorded, never judged: a verdict by the column's test alone
    cfg = _cfg()
    rng = np.random.default_rng(5)
    ref, cur = _frame(rng, 2_000), _frame(rng, 2_000)
    cur["colour"] = np.where(rng.random(2_000) < 0.7, "red", "blue").astype(object)
    result = compute_drift(ref, cur, cfg, prediction_column=None)
    colour = result.columns["colour"]
    assert colour.psi > 0.2 and colour.drifted == (colour.score >= colour.threshold)


def test_small_holdout_falls_back_to_the_training_window(tmp_path: Path):
    cfg = load_model_config(project_root() / "config" / "models" / "heart_disease.yaml")
    source = write_dataset(generate_cohort(n_rows=900, seed=4), tmp_path / "cohort.parquet")
    snapshot = ingest(cfg, source, publish=lambda *_: None).snapshot
    rows = pd.read_parquet(snapshot.path).assign(row_id=np.arange(snapshot.rows))
    split = time_split(rows, cfg.timestamp_column, cfg.split.train, cfg.split.validation)
    holdout = split.test.drop(columns="row_id").assign(prediction_proba=0.4)
    assert len(holdout) == 135 < cfg.drift.min_reference_rows

    reference = choose_reference(
        holdout, lambda: training_window(cfg, snapshot), cfg.drift.min_reference_rows,
        version="3",
    )  # fmt: skip

    assert reference.source == "training window"
    window = reference.frame
    assert len(window) == len(split.train) == 630
    assert window[cfg.timestamp_column].max() <= holdout[cfg.timestamp_column].min()
    assert set(window.columns) >= {f.name for f in cfg.features} | {cfg.label}
    assert reference.output_reference is holdout
    assert reference.info()["why"].startswith("the holdout has 135 rows, fewer than")

    # the drift result and its HTML say what the reference was; the output stays the holdout's
    html = tmp_path / "drift.html"
    current = generate_cohort(n_rows=300, seed=5).assign(prediction_proba=0.4)
    result = compute_drift(
        reference.frame, current, cfg, html_path=html,
        output_reference=reference.output_reference, reference_info=reference.info(),
    )  # fmt: skip
    assert result.reference["source"] == "training window"
    assert result.rows["reference"] == 630 and result.rows["output_reference"] == 135
    assert result.prediction_drift.reference_rows == 135
    assert result.columns["bmi"].reference_rows == 630
    assert result.performance["reference"]["rows"] == 135
    page = html.read_text(encoding="utf-8")
    assert "features and outcome: v3&#x27;s training window" in page
    assert "model output and quality: the holdout&#x27;s 135 rows" in page

    # a large enough holdout stays; an unreadable training window leaves the holdout, saying why
    kept = choose_reference(holdout, lambda: training_window(cfg, snapshot), 100, version="3")
    assert kept.source == "holdout" and kept.output_reference is None
    Path(snapshot.path).unlink()
    with pytest.raises(SnapshotMissingError):
        training_window(cfg, snapshot)
    lost = choose_reference(holdout, lambda: training_window(cfg, snapshot), 1_000, version="3")
    assert lost.source == "holdout" and lost.frame is holdout
    assert "training window cannot be read" in lost.why and "missing" in lost.why


def test_the_faster_wasserstein_equals_scipys() -> None:
    """Evidently's ``wasserstein`` runs on our implementation: the same number as scipy's,
    with ties (integer columns), unequal sizes and a constant reference."""
    from scipy import stats

    from mlsteward.monitoring.drift_evidently import wasserstein_norm

    rng = np.random.default_rng(4)
    cases = [
        (rng.normal(size=5_000), rng.normal(0.3, 1.2, size=700)),
        (rng.integers(18, 90, size=3_000).astype(float), rng.integers(20, 95, size=4_000)),
        (np.full(200, 5.0), rng.normal(5, 1, size=300)),
    ]
    for ref, cur in cases:
        scale = max(float(np.std(ref)), 0.001)
        expected = stats.wasserstein_distance(ref, cur) / scale
        value, drifted = wasserstein_norm(pd.Series(ref), pd.Series(cur), None, 0.1)
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert drifted == (expected >= 0.1)

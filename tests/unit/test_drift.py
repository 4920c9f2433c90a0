"""Drift adapter: known answers on tiny frames, config honoured, clear errors, and the generator."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mlsteward.config.models import ModelConfig, load_model_config
from mlsteward.config.paths import project_root
from mlsteward.data.synthetic import Shift, generate_batch, generate_cohort
from mlsteward.data.synthetic_risk import risk_logit
from mlsteward.errors import MlstewardError
from mlsteward.monitoring.drift import column_methods, compute_drift
from mlsteward.monitoring.drift_result import ColumnDriftResult, DriftResult
from mlsteward.monitoring.drift_sampling import sampling_lines
from mlsteward.monitoring.retrain import decide
from mlsteward.training.metrics import evaluate

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
    assert result.rows == {"reference": 3 * N, "current": N, "current_labelled": N}
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


def _with_min_labelled(cfg: ModelConfig, n: int) -> ModelConfig:
    return cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"min_labelled_rows": n})})


def _partly_labelled(labelled: pd.DataFrame, unlabelled: pd.DataFrame) -> pd.DataFrame:
    """A log-shaped window: outcomes as floats, NaN where none has arrived, rows interleaved."""
    frame = pd.concat(
        [labelled, unlabelled.assign(heart_disease=np.nan)], ignore_index=True
    ).astype({"heart_disease": "float64"})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_partial_labels_features_on_all_rows_quality_on_labelled(heart_cfg, heart_reference):
    ref = _scored(heart_reference)
    labelled = _scored(generate_batch(1_000, seed=1))
    # the unlabelled rows alone carry a BMI shift: it is seen only if every row is compared
    unlabelled = _scored(generate_batch(2_000, seed=2, shift=Shift(covariate={"bmi": 1.5})))
    current = _partly_labelled(labelled, unlabelled)

    result = compute_drift(ref, current, heart_cfg)

    assert result.rows == {"reference": 20_000, "current": 3_000, "current_labelled": 1_000}
    assert "bmi" in result.drifted_columns
    assert result.prediction_drift is not None
    assert result.target_drift is not None and not result.target_drift.drifted
    perf = result.performance
    assert perf is not None and perf["current"]["rows"] == 1_000
    assert perf["reference"]["rows"] == 20_000
    truth = evaluate(
        labelled["heart_disease"].to_numpy(), labelled["prediction_proba"].to_numpy(), 0.5
    )
    assert perf["current"]["roc_auc"] == pytest.approx(truth["roc_auc"], abs=1e-12)
    assert perf["current"]["brier"] == pytest.approx(truth["brier"], abs=1e-12)
    assert abs(perf["change"]["roc_auc"]) < 0.05
    assert result.notes == []
    back = DriftResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert back.rows["current_labelled"] == 1_000 and back.to_dict() == result.to_dict()


def test_too_few_labels_give_no_quality_and_say_why(heart_cfg, heart_reference):
    ref = _scored(heart_reference)
    current = _partly_labelled(
        _scored(generate_batch(150, seed=1)), _scored(generate_batch(1_850, seed=2))
    )

    result = compute_drift(ref, current, heart_cfg)

    assert heart_cfg.drift.min_labelled_rows == 200
    assert result.rows["current_labelled"] == 150
    assert result.performance is None and result.target_drift is None
    assert result.notes == [
        "150 labelled rows < min_labelled_rows (200): no target drift or performance for the "
        "current window"
    ]
    assert result.prediction_drift is not None and result.drifted_columns == []
    back = DriftResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert back.notes == result.notes

    lower = compute_drift(ref, current, _with_min_labelled(heart_cfg, 100))
    assert lower.notes == [] and lower.performance["current"]["rows"] == 150
    assert lower.target_drift is not None

    none = compute_drift(ref, current.assign(heart_disease=np.nan), heart_cfg)
    assert none.rows["current_labelled"] == 0 and none.performance is None
    assert none.notes and none.notes[0].startswith("0 labelled rows < min_labelled_rows")


def test_inverted_concept_on_labelled_rows_is_a_known_performance_drop():
    """Reference labels follow ``moved > 0``, the labelled current rows ``moved < 0``: with the
    score ``sigmoid(moved)`` that is ROC-AUC 1 against 0, and accuracy 1 against 0."""
    rng = np.random.default_rng(11)
    ref, cur = _frame(rng, N, shift=0.0, p_red=0.5), _frame(rng, N, shift=0.0, p_red=0.5)
    ref = ref.assign(
        y=(ref["moved"] > 0).astype(int), prediction_proba=1 / (1 + np.exp(-ref["moved"]))
    )
    cur = cur.assign(
        y=np.where(np.arange(N) % 4 == 0, (cur["moved"] < 0).astype(float), np.nan),
        prediction_proba=1 / (1 + np.exp(-cur["moved"])),
    )
    cfg = _cfg(key_features=["moved"])

    result = compute_drift(ref, cur, cfg)

    assert result.drifted_columns == []
    assert result.rows["current_labelled"] == N // 4
    perf = result.performance
    assert perf["current"]["rows"] == N // 4
    assert perf["reference"]["roc_auc"] == pytest.approx(1.0)
    assert perf["current"]["roc_auc"] == pytest.approx(0.0)
    assert perf["reference"]["accuracy"] == pytest.approx(1.0)
    assert perf["current"]["accuracy"] == pytest.approx(0.0)
    assert perf["change"]["roc_auc"] == pytest.approx(-1.0)
    decision = decide(result.drifted_columns, result.dataset_drift_share, perf, cfg)
    assert decision.retrain and len(decision.reasons) == 1
    assert decision.reasons[0].startswith("roc_auc fell from 1.0000 to 0.0000")


def test_concept_shift_on_partly_labelled_window_triggers_retrain(heart_cfg, heart_reference):
    ref = _scored(heart_reference)
    shifted = Shift(concept=1.0)
    current = _partly_labelled(
        _scored(generate_batch(400, seed=1, shift=shifted)),
        _scored(generate_batch(3_600, seed=2, shift=shifted)),
    )

    result = compute_drift(ref, current, heart_cfg)

    assert result.drifted_columns == []
    assert result.performance["current"]["rows"] == 400
    drop = -result.performance["change"]["roc_auc"]
    assert drop >= heart_cfg.drift.performance_drop
    decision = decide(
        result.drifted_columns, result.dataset_drift_share, result.performance, heart_cfg
    )
    assert decision.retrain and decision.reasons[0].startswith("roc_auc fell")


def test_sparse_labels_in_a_large_window_are_sampled_on_their_own():
    rng = np.random.default_rng(5)
    ref, cur = _frame(rng, N, shift=0.0, p_red=0.5), _frame(rng, 3 * N, shift=0.0, p_red=0.5)
    ref = ref.assign(y=(ref["moved"] > 0).astype(int), prediction_proba=0.5)
    known = np.arange(3 * N) % 2 == 0  # 3,000 labelled rows of 6,000
    cur = cur.assign(y=np.where(known, (cur["moved"] > 0).astype(float), np.nan))
    cur = cur.assign(prediction_proba=0.5)

    result = compute_drift(ref, cur, _cfg(max_rows=1_000), seed=1)

    assert result.rows == {"reference": N, "current": 3 * N, "current_labelled": 3 * N // 2}
    assert result.sampling["current"]["rows_after"] == 1_000
    assert result.sampling["current_labelled"] == {
        "rows_before": 3 * N // 2,
        "rows_after": 1_000,
        "method": "stratified by y",
        "seed": 1,
    }
    assert result.performance["current"]["rows"] == 1_000
    assert result.performance["current"]["positive_rate"] == pytest.approx(
        cur.loc[known, "y"].mean(), abs=1e-3
    )


def test_html_is_one_page_with_every_column_and_one_summary(tmp_path):
    """Each column runs in its own Evidently Report; the HTML must still read as one report."""
    rng = np.random.default_rng(11)
    ref, cur = _frame(rng, N, shift=0.0, p_red=0.5), _frame(rng, N, shift=3.0, p_red=0.5)
    for frame in (ref, cur):
        frame["y"] = (rng.random(N) < 0.3).astype(np.int64)
        frame["prediction_proba"] = rng.random(N)
    path = tmp_path / "drift.html"
    result = compute_drift(ref, cur, _cfg(), html_path=path)

    assert result.report_path == str(path)
    html = path.read_text(encoding="utf-8")
    checked = [*result.columns, "prediction_proba", "y"]
    for column in checked:
        assert html.count(f"Drift in column '{column}'") == 1, column
        assert html.count(f'"title": "Value Drift for column {column}"') == 1, column
    # one summary over all the columns' tests, with Evidently's own verdicts
    summaries = re.findall(r'"counters": (\[\{"value": "\d+", "label": "SUCCESS"\}[^\]]*\])', html)
    assert len(summaries) == 1
    counts = {c["label"]: int(c["value"]) for c in json.loads(summaries[0])}
    assert result.drifted_columns == ["moved"]
    assert counts["FAIL"] == 1
    assert counts["SUCCESS"] == len(checked) - 1


# -- a prediction-log window read as a bounded pre-sample ------------------------------------
def _log_toy_window(days: int, per_day: int, seed: int = 21) -> None:
    """The toy model's prediction log: ``days`` batches of unshifted rows, outcomes for every
    third row (a quarter of them positive), plus an explanation column drift never reads."""
    from datetime import UTC, datetime, timedelta

    from mlsteward.monitoring import prediction_log as plog

    rng = np.random.default_rng(seed)
    start = datetime(2025, 3, 1, 12, tzinfo=UTC)
    for d in range(days):
        frame = _frame(rng, per_day, shift=0.0, p_red=0.5)
        frame["id"] = np.arange(d * per_day, (d + 1) * per_day)
        frame["ts"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(frame["id"], "min")
        frame["prediction_proba"] = rng.random(per_day)
        frame["shap_1_value"] = rng.normal(size=per_day)
        frame["scored_at"] = pd.Timestamp(start + timedelta(days=d))
        plog.append("toy", frame, batch_id=f"w{d}")
    logged = plog.read("toy", columns=["id", "ts"])
    labels = logged.iloc[::3].assign(y=(np.arange(len(logged.iloc[::3])) % 4 == 0).astype(int))
    plog.attach_labels("toy", labels, entity="id", timestamp="ts", label="y")


def _toy_reference(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(8)
    ref = _frame(rng, n, shift=0.0, p_red=0.5)
    return ref.assign(y=(np.arange(n) % 4 == 0).astype(int), prediction_proba=rng.random(n))


def test_presampled_log_window_is_recorded_in_result_and_report(tmp_path):
    from datetime import datetime

    from mlsteward.monitoring.current_window import read_current_window

    _log_toy_window(days=6, per_day=2_000)  # 12,000 rows > 2 x max_rows
    cfg = _cfg(max_rows=1_000)
    window = read_current_window(cfg, datetime(2025, 1, 1), seed=5)
    assert window.presample is not None and len(window.frame) == 2_000
    assert "shap_1_value" not in window.columns_read

    html = tmp_path / "drift.html"
    result = compute_drift(
        _toy_reference(), window.frame, cfg, label_column="y", html_path=html, seed=5,
        current_labelled=window.labelled, presample=window.presample,
    )  # fmt: skip

    assert result.rows == {"reference": N, "current": 12_000, "current_labelled": 4_000}
    current = result.sampling["current"]
    assert {k: current[k] for k in ("rows_in_window", "rows_before", "rows_after", "seed")} == {
        "rows_in_window": 12_000,
        "rows_before": 2_000,
        "rows_after": 1_000,
        "seed": 5,
    }
    assert current["method"] == "stratified by y"
    assert current["presample"]["rows"] == 2_000 and current["presample"]["seed"] == 5
    assert current["presample"]["rate"] == pytest.approx(1.25 * 2_000 / 12_000)
    # 4,000 labelled rows: their own pre-sample of 2,000, then 1,000 stratified by y.
    labelled = result.sampling["current_labelled"]
    assert (labelled["rows_in_window"], labelled["presample"]["rows"]) == (4_000, 2_000)
    assert labelled["rows_after"] == 1_000 == result.performance["current"]["rows"]
    # The final cut keeps the outcome's strata: a quarter positive among the labelled rows.
    assert result.performance["current"]["positive_rate"] == pytest.approx(0.25, abs=0.03)

    back = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert back["sampling"] == result.sampling
    assert DriftResult.from_dict(back).sampling == result.sampling
    line = "current: 1,000 of 12,000 rows; seeded pre-sample of 2,000 read from the log"
    text = html.read_text(encoding="utf-8")
    assert line in text and "current labelled: 1,000 of 4,000 rows" in text
    # shown first in the page body, before Evidently's rendered widgets
    assert text.index("<body>") < text.index(line) < text.index('<div id="root_metric')

    # the model card's drift history shows the same sentence from the audit record
    from mlsteward.report import AuditEvent, DriftCheck
    from mlsteward.report.view_drift import _report_cell

    record = AuditEvent(
        seq=1, ts="2025-03-07T10:00:00.000000Z", action="drift_checked", version="1",
        actor="drift-bot", reason="", details={"report": str(html), "sampling": back["sampling"]},
    )  # fmt: skip
    cell = _report_cell(DriftCheck.from_event(record)).text
    assert cell.startswith(str(html)) and f"sampled {line}" in cell

    again = compute_drift(
        _toy_reference(), read_current_window(cfg, datetime(2025, 1, 1), seed=5).frame, cfg,
        label_column="y", seed=5, current_labelled=window.labelled, presample=window.presample,
    )  # fmt: skip
    assert {c: r.score for c, r in again.columns.items()} == {
        c: r.score for c, r in result.columns.items()
    }


def test_small_log_window_is_compared_whole_and_says_so(tmp_path):
    from datetime import datetime

    from mlsteward.monitoring import prediction_log as plog
    from mlsteward.monitoring.current_window import read_current_window

    _log_toy_window(days=2, per_day=900)  # 1,800 rows <= 2 x max_rows: read whole
    cfg = _cfg(max_rows=1_000)
    window = read_current_window(cfg, datetime(2025, 1, 1))
    before = plog.read_with_labels(
        "toy",
        since=datetime(2025, 1, 1),
        columns=[*(f.name for f in cfg.features), "prediction_proba"],
    ).rename(columns={"label": "y"})
    pd.testing.assert_frame_equal(window.frame, before)  # the frame drift got before the change
    assert window.presample is None

    html = tmp_path / "drift.html"
    result = compute_drift(_toy_reference(), window.frame, cfg, label_column="y", html_path=html)
    assert result.rows == {"reference": N, "current": 1_800, "current_labelled": 600}
    assert set(result.sampling) == {"reference", "current"}  # exact stratified cut only
    assert "presample" not in result.sampling["current"]
    assert "current: 1,000 of 1,800 rows, seeded sample (stratified by y, seed 0)" in (
        html.read_text(encoding="utf-8")
    )


def test_sampling_lines_without_sampling_say_every_row():
    assert sampling_lines({}, {"reference": 5, "current": 1_234}) == [
        "no sampling: every row compared (reference 5, current 1,234)"
    ]

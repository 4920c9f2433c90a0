"""The canary guardrails of a regression model: absolute errors compared with a one-sided Welch
t-test, the prediction shift on predicted values; scrapes written by the real prometheus_client."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlsteward.config.sections.serving import GuardrailConfig
from mlsteward.rollout.guardrails import (
    absolute_errors,
    check_regression_quality,
    judge_step,
    student_t_sf,
)

MODEL = "length_of_stay"
CFG = GuardrailConfig()


def _t_sf_closed_form(t: float, df: int) -> float:
    """Student's t upper tail where it has a closed form (1, 2 and 3 degrees of freedom)."""
    if df == 1:  # Cauchy
        return 0.5 - math.atan(t) / math.pi
    if df == 2:
        return 0.5 - t / (2 * math.sqrt(2 + t * t))
    u = t / math.sqrt(3)
    return 0.5 - (u / (1 + u * u) + math.atan(u)) / math.pi


@pytest.mark.parametrize("df", [1, 2, 3])
@pytest.mark.parametrize("t", [-6.0, -1.2, 0.0, 0.4, 1.96, 3.3, 12.0, 300.0])
def test_student_t_tail_matches_its_closed_forms(t: float, df: int) -> None:
    assert student_t_sf(t, df) == pytest.approx(_t_sf_closed_form(t, df), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("t", "df", "tail"),
    [(2.228, 10, 0.025), (3.365, 5, 0.01), (2.042, 30, 0.025), (1.6449, 1e7, 0.05)],
)
def test_student_t_tail_matches_the_tables_and_the_normal_limit(
    t: float, df: float, tail: float
) -> None:
    assert student_t_sf(t, df) == pytest.approx(tail, abs=5e-5)
    normal = 0.5 * math.erfc(t / math.sqrt(2))
    if df > 1e6:
        assert student_t_sf(t, df) == pytest.approx(normal, rel=1e-6)
    else:  # whole or not, more freedom means a thinner tail, down to the normal one
        assert student_t_sf(t, df) > student_t_sf(t, df + 0.5) > normal


def test_student_t_tail_refuses_no_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_sf(1.0, 0.0)


def _errors(rng: np.random.Generator, mae: float, n: int) -> np.ndarray:
    """Absolute errors as a count model makes them: skewed, many small and a few large."""
    return rng.exponential(mae, n)


def test_equal_arms_pass() -> None:
    rng = np.random.default_rng(1)
    check = check_regression_quality(_errors(rng, 2.0, 400), _errors(rng, 2.0, 400), CFG, 4)
    assert check.name == "quality" and check.evaluable and check.passed, check.message
    assert check.observed["p_value"] is not None and check.observed["p_value"] > 0.0125


def test_clearly_larger_errors_fail_with_the_numbers_in_the_message() -> None:
    rng = np.random.default_rng(2)
    chal, champ = _errors(rng, 3.0, 400), _errors(rng, 2.0, 400)
    check = check_regression_quality(chal, champ, CFG, 4)
    assert check.evaluable and not check.passed
    observed = check.observed
    assert observed["challenger_mae"] == pytest.approx(chal.mean())
    assert observed["champion_mae"] == pytest.approx(champ.mean())
    assert observed["margin"] == pytest.approx(0.1 * champ.mean())
    p = observed["p_value"]
    assert p is not None and p < 0.05 / 4
    for number in (f"{chal.mean():.4g}", f"{champ.mean():.4g}", f"{0.1 * champ.mean():.4g}"):
        assert number in check.message, check.message
    assert "(400 labelled)" in check.message and "Welch" in check.message
    assert "10% of the champion's MAE" in check.message and "< 0.0125" in check.message


def test_the_margin_is_a_share_of_the_champions_mae_or_in_the_labels_units() -> None:
    """A challenger 5 % worse on a lot of labels is inside the default 10 % margin, and beyond
    a margin of zero; an absolute margin of one day tolerates it again."""
    rng = np.random.default_rng(3)
    champ = _errors(rng, 2.0, 20_000)
    chal = champ * 1.05
    assert check_regression_quality(chal, champ, CFG, 1).passed
    strict = GuardrailConfig(mae_margin=0.0)
    assert not check_regression_quality(chal, champ, strict, 1).passed
    days = GuardrailConfig(mae_margin=1.0, mae_margin_mode="absolute")
    check = check_regression_quality(chal * 1.2, champ, days, 1)
    assert check.passed and check.observed["margin"] == 1.0 and "(absolute)" in check.message


def test_not_evaluable_below_min_labelled_rows() -> None:
    rng = np.random.default_rng(4)
    check = check_regression_quality(_errors(rng, 9.0, 199), _errors(rng, 1.0, 500), CFG, 4)
    assert check.passed and not check.evaluable
    assert "199 challenger and 500 champion labelled rows, 200 per arm needed" in check.message
    one = GuardrailConfig(min_labelled_rows=1)  # one row has no spread: two are needed
    assert not check_regression_quality([5.0], [1.0], one, 1).evaluable


def test_identical_constant_errors_give_a_decision_not_a_division_by_zero() -> None:
    cfg = GuardrailConfig(min_labelled_rows=2)
    worse = check_regression_quality([2.0] * 5, [1.0] * 5, cfg, 1)
    same = check_regression_quality([1.0] * 5, [1.0] * 5, cfg, 1)
    assert not worse.passed and worse.observed["p_value"] == 0.0
    assert same.passed and same.observed["p_value"] == 1.0
    assert json.loads(json.dumps(worse.to_dict(), allow_nan=False))["observed"]["t"] is None


def test_negative_errors_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        check_regression_quality([1.0, -1.0], [1.0, 1.0], CFG, 1)


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_false_rollback_rate_at_the_margin_stays_within_alpha(mode: str) -> None:
    """Harm exactly at the margin, the worst case H0 allows, on skewed errors: rolled back in
    at most alpha of the rollouts (one look, 200 labelled rows per arm)."""
    rng = np.random.default_rng(5)
    cfg = GuardrailConfig(mae_margin=0.1 if mode == "relative" else 0.2, mae_margin_mode=mode)
    sims, rolled_back = 2_000, 0
    for _ in range(sims):
        champ = _errors(rng, 2.0, 200)
        chal = _errors(rng, 2.2, 200)  # 10 % (0.2 days) worse: on the margin
        rolled_back += not check_regression_quality(chal, champ, cfg, 1).passed
    assert rolled_back / sims <= cfg.alpha + 0.01  # Monte-Carlo tolerance (~2 standard errors)


def test_absolute_errors_skip_unlabelled_rows() -> None:
    frame = pd.DataFrame(
        {
            "arm": ["challenger"] * 4 + ["champion"] * 2,
            "prediction": [2.5, 4.0, 1.0, 3.0, 7.0, 1.5],
            "label": [3.0, 1.0, None, np.nan, 4.0, 1.5],
        }
    )
    assert absolute_errors(frame, "challenger").tolist() == [0.5, 3.0]
    assert absolute_errors(frame, "champion").tolist() == [3.0, 0.0]
    assert absolute_errors(frame.drop(columns="label"), "champion").size == 0


# -- the step verdict -----------------------------------------------------------------------


def _scrapes(challenger_failures: int = 0) -> tuple[str, str]:
    registry = CollectorRegistry()
    labels = ["model", "version", "arm"]
    requests = Counter("mlsteward_requests_total", "requests", [*labels, "status"],
                       registry=registry)  # fmt: skip
    latency = Histogram("mlsteward_request_seconds", "latency", labels, registry=registry,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.1))  # fmt: skip
    predictions = Counter("mlsteward_predictions_total", "rows", labels, registry=registry)
    errors = Counter("mlsteward_arm_errors_total", "failed", labels, registry=registry)
    start = generate_latest(registry).decode()
    for arm, version in (("champion", "1"), ("challenger", "2")):
        for _ in range(400):
            requests.labels(MODEL, version, arm, "200").inc()
            latency.labels(MODEL, version, arm).observe(0.0015)
            predictions.labels(MODEL, version, arm).inc()
    if challenger_failures:
        errors.labels(MODEL, "2", "challenger").inc(challenger_failures)
    return start, generate_latest(registry).decode()


def _regression_log(rng: np.random.Generator, challenger_noise: float, shift: float = 0.0):
    """A step's log of a regression model: a float ``prediction`` (no probability) per row, and
    the outcome in ``label``."""
    n = 400
    truth = rng.poisson(4.0, 2 * n).astype(float)
    noise = np.r_[rng.normal(0, 1.0, n), rng.normal(shift, challenger_noise, n)]
    return pd.DataFrame(
        {
            "arm": np.repeat(["champion", "challenger"], n),
            "prediction": np.clip(truth + noise, 0.05, None),
            "label": truth,
        }
    )


def test_judge_step_for_regression_passes_equal_arms() -> None:
    start, end = _scrapes()
    frame = _regression_log(np.random.default_rng(6), challenger_noise=1.0)
    verdict = judge_step(start, end, MODEL, "1", "2", frame, CFG, 4, regression=True)
    assert verdict.passed, verdict.summary()
    assert all(c.evaluable for c in verdict.checks)
    shift, quality = verdict.checks[2], verdict.checks[3]
    assert "predicted values" in shift.message and "MAE" in quality.message


def test_judge_step_for_regression_rolls_back_larger_errors_with_their_numbers() -> None:
    start, end = _scrapes()
    frame = _regression_log(np.random.default_rng(7), challenger_noise=1.8)
    verdict = judge_step(start, end, MODEL, "1", "2", frame, CFG, 4, regression=True)
    assert [c.name for c in verdict.breaches] == ["quality"], verdict.summary()
    quality = verdict.breaches[0]
    chal_mae = absolute_errors(frame, "challenger").mean()
    assert f"challenger MAE {chal_mae:.4g} (400 labelled)" in quality.message
    assert "[BREACH] quality: challenger MAE" in verdict.summary()


def test_judge_step_for_regression_measures_the_shift_on_predicted_values() -> None:
    """A challenger whose predicted values moved by two days: PSI breaches (and, with the labels
    the same, so does quality); the classification columns are not needed."""
    start, end = _scrapes()
    frame = _regression_log(np.random.default_rng(8), challenger_noise=1.0, shift=2.0)
    assert "prediction_proba" not in frame.columns
    verdict = judge_step(start, end, MODEL, "1", "2", frame, CFG, 4, regression=True)
    shift = verdict.checks[2]
    assert shift.name == "prediction_shift" and shift.evaluable and not shift.passed
    assert shift.observed["psi"] is not None and shift.observed["psi"] > CFG.max_prediction_psi
    # The same log judged as a classification model's has no probabilities to compare.
    as_classifier = judge_step(start, end, MODEL, "1", "2", frame, CFG, 4)
    assert not as_classifier.checks[2].evaluable

"""Built-in synthetic patient cohort for the ``heart_disease`` demo model.

Why synthetic: the demo must run offline, at any size, without patient data, and the tests need
ground truth a real data set cannot give (the exact risk function, controlled drift). Everything
is drawn from one seeded numpy generator, so the same seed always yields the same frame.

Structure
---------
``n_patients = ceil(n_rows / 3)`` patients. Every patient gets at least one visit and the rest of
the rows are assigned to patients uniformly at random, so visit counts are roughly 1 + Poisson(2)
(mean 3). Visit times are uniform over the window (default 18 months from 2024-01-01 UTC) in
whole seconds; ``(patient_id, event_timestamp)`` is unique (a rare same-second clash within one
patient is moved on by one second). Patient ids are ``id_offset + 1 ... id_offset + n_patients``.

Stable per-patient traits are drawn once (sex, baseline age, smoking, baseline BMI and activity,
diabetes, personal offsets for blood pressure, cholesterol and glucose, a latent coronary
"burden" and an unobserved frailty). Measurements are redrawn at every visit around those
traits, which is what real repeated visits look like: the same person, different readings.

Columns (in this order)
-----------------------
``patient_id`` (int64)
    Entity key, see above.
``event_timestamp`` (datetime64[us, UTC])
    Visit time, whole seconds.
``age`` (int64, 18-100)
    Baseline age at the window start ~ Normal(53, 13) clipped to [18, 95]; the visit age is
    ``floor(baseline + years elapsed since the window start)``, so it never decreases across a
    patient's visits.
``sex`` ("F" / "M")
    P(M) = 0.52.
``resting_bp`` (float64 mmHg, whole numbers, 70-250)
    ``100 + 0.45 age + 0.9 (bmi - 27) + 4 male + 3 current_smoker + 5 diabetes`` plus a personal
    offset ~ N(0, 9) and visit noise ~ N(0, 6): mean about 128, sd about 14, rising with age
    and BMI.
``cholesterol`` (float64 mg/dl, whole numbers, 80-600)
    ``195 + 0.6 (age - 53) + 1.8 (bmi - 27) - 6 male`` plus a personal offset ~ N(0, 32) and
    visit noise ~ N(0, 12).
``max_heart_rate`` (float64 bpm, whole numbers, 60-220)
    ``220 - age - 10 - 5 burden - 0.4 (bmi - 27) - 6 exercise_angina`` plus N(0, 9): the
    classic "220 minus age", lowered by disease, obesity and angina.
``bmi`` (float64 kg/m2, one decimal, 12-70)
    Baseline ~ LogNormal(log 27, 0.17) + 0.04 (age - 50), clipped to [15, 60]; each visit adds
    N(0, 0.5).
``smoking`` ("never" / "former" / "current")
    Multinomial logit against "never": former ``-0.9 + 0.03 (age - 50) + 0.2 male``, current
    ``-1.2 - 0.02 (age - 50) + 0.3 male``; about 53 % / 28 % / 19 %. Older people have more
    often quit, men smoke more.
``diabetes`` (bool)
    P = sigmoid(-2.3 + 0.14 (bmi - 27) + 0.045 (age - 53) + 0.2 current_smoker), a stable
    trait; prevalence about 13 %, rising steeply with BMI and age.
``chest_pain_type`` ("typical" / "atypical" / "non_anginal" / "asymptomatic")
    Multinomial logit against "typical": atypical ``0.4 - 0.3 burden``, non_anginal
    ``0.8 - 0.4 burden``, asymptomatic ``0.6 + 0.6 burden`` (about 14 / 21 / 33 / 32 %). As in
    the UCI heart data, silent (asymptomatic) presentations are the ones that go with coronary
    disease.
``exercise_angina`` (bool)
    P = sigmoid(-1.7 + 1.4 asymptomatic + 0.3 typical + 0.7 burden): about 29 % overall,
    56 % with asymptomatic chest pain.
``st_depression`` (float64 mm, one decimal, 0-8)
    ``0.2 + 0.5 burden + 1.0 exercise_angina + 0.01 (age - 53) + N(0, 0.9)`` clipped at 0, so
    about 40 % of visits have exactly 0.0, as in real exercise tests.
``fasting_glucose`` (float64 mg/dl, whole numbers, 50-400)
    ``90 + 0.9 (bmi - 27) + 0.15 (age - 53)`` plus, for diabetics, a personal excess
    ~ LogNormal(log 50, 0.4), plus a personal offset ~ N(0, 7) and visit noise ~ N(0, 6).
``resting_ecg`` ("normal" / "st_t_abnormality" / "lv_hypertrophy")
    Multinomial logit against "normal": ST-T abnormality ``-2.6 + 0.5 burden``, LV hypertrophy
    ``-2.2 + 0.04 (resting_bp - 130)`` (hypertension thickens the ventricle wall); about
    83 / 7 / 10 %.
``physical_activity_hours`` (float64 hours/week, one decimal, 0-40)
    Baseline ~ Gamma(1.6, 2.3) scaled by ``exp(-0.04 (bmi - 27) - 0.01 (age - 50))`` and by 0.7
    for current smokers; each visit multiplies it by LogNormal(0, 0.3).
``heart_disease`` (int64 0/1)
    The label, see below.

The latent ``burden`` (never output) is a per-patient score ``-0.55 + 0.05 (age - 53) +
0.5 male + 0.6 current + 0.25 former + 0.7 diabetes + 0.05 (bmi - 27)`` plus the blood-pressure
and cholesterol offsets (x 0.04, x 0.01) and N(0, 0.8); the -0.55 centres it near 0 for the
average patient. It is what makes symptoms (chest pain,
angina, ST depression, ECG, heart rate) correlate with the risk factors the way they do in
clinical data, instead of being independent columns.

Every numeric value is clipped into the ``heart_disease`` config's ``min``/``max`` (see
:data:`NUMERIC_RANGES`, checked against the YAML by the unit tests), so the cohort passes the
data contract with zero bad rows.

Label: a known logistic risk function
-------------------------------------
``logit = RISK_INTERCEPT + sum(RISK_COEFFICIENTS[t] * x_t)`` where numeric terms are measured
from :data:`RISK_CENTERS` (e.g. ``age - 55``), booleans are 0/1 and ``column=value`` terms are
one-hot indicators (the reference levels are F, never, typical and normal). Two noise terms are
added: an unobserved per-patient frailty ~ N(0, :data:`RISK_PATIENT_NOISE_SD`) and a per-visit
N(0, :data:`RISK_VISIT_NOISE_SD`); then ``heart_disease ~ Bernoulli(sigmoid(logit))``. The
prevalence is about 39 % and the noise-free logit alone has a ROC-AUC of about 0.88, so a plain
logistic regression on one-hot features learns it well (held-out AUC about 0.88 on 10k rows).
:func:`risk_logit` evaluates the noise-free logit on any frame, so tests and docs can use the
ground truth directly.

Controlled shifts (:class:`Shift`), for drift and fairness monitoring
---------------------------------------------------------------------
Applied in this order: covariate shift of the features, then labels from the (possibly
concept-shifted) risk function, then label distortion, then prevalence resampling. Each stage
draws from its own seeded stream, so a shift changes only what it is meant to change: the same
seed with and without a concept shift gives identical features.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ENTITY = "patient_id"
TIMESTAMP = "event_timestamp"
LABEL = "heart_disease"

DEFAULT_START = "2024-01-01"
DEFAULT_MONTHS = 18
#: The day the default 18-month reference cohort ends: the natural start of a monitoring batch.
DEFAULT_BATCH_START = "2025-07-01"
#: Batch patients are new patients: their ids start far above any reference cohort's.
BATCH_ID_OFFSET = 1_000_000_000
VISITS_PER_PATIENT = 3

#: Feature columns and their config dtype, in the order of ``config/models/heart_disease.yaml``.
FEATURE_DTYPES: dict[str, str] = {
    "age": "int",
    "sex": "category",
    "resting_bp": "float",
    "cholesterol": "float",
    "max_heart_rate": "float",
    "bmi": "float",
    "smoking": "category",
    "diabetes": "bool",
    "chest_pain_type": "category",
    "exercise_angina": "bool",
    "st_depression": "float",
    "fasting_glucose": "float",
    "resting_ecg": "category",
    "physical_activity_hours": "float",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DTYPES)
COLUMNS: tuple[str, ...] = (ENTITY, TIMESTAMP, *FEATURES, LABEL)

#: Value ranges of the numeric features; identical to the config's min/max (tested).
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (18, 100),
    "resting_bp": (70, 250),
    "cholesterol": (80, 600),
    "max_heart_rate": (60, 220),
    "bmi": (12, 70),
    "st_depression": (0, 8),
    "fasting_glucose": (50, 400),
    "physical_activity_hours": (0, 40),
}
#: Allowed values of the categorical features, in the config's order (tested).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "sex": ("F", "M"),
    "smoking": ("never", "former", "current"),
    "chest_pain_type": ("typical", "atypical", "non_anginal", "asymptomatic"),
    "resting_ecg": ("normal", "st_t_abnormality", "lv_hypertrophy"),
}
#: Decimal places float features are rounded to: what the instrument would report.
DECIMALS: dict[str, int] = {
    "resting_bp": 0,
    "cholesterol": 0,
    "max_heart_rate": 0,
    "bmi": 1,
    "st_depression": 1,
    "fasting_glucose": 0,
    "physical_activity_hours": 1,
}

# -- the ground-truth risk function ---------------------------------------------------------------
RISK_INTERCEPT = -1.6
#: Numeric terms enter the logit as ``value - centre``, so the intercept is the log-odds of a
#: reference patient (55-year-old non-smoking woman with typical angina and average readings).
RISK_CENTERS: dict[str, float] = {
    "age": 55.0,
    "resting_bp": 130.0,
    "cholesterol": 200.0,
    "max_heart_rate": 150.0,
    "bmi": 27.0,
    "st_depression": 0.0,
    "fasting_glucose": 100.0,
    "physical_activity_hours": 3.0,
}
#: Log-odds per unit (per year, mmHg, mg/dl, bpm, kg/m2, mm, hour) or per indicator.
RISK_COEFFICIENTS: dict[str, float] = {
    "age": 0.04,
    "sex=M": 0.55,
    "resting_bp": 0.012,
    "cholesterol": 0.004,
    "max_heart_rate": -0.02,
    "bmi": 0.03,
    "smoking=former": 0.2,
    "smoking=current": 0.6,
    "diabetes": 0.5,
    "chest_pain_type=atypical": -0.4,
    "chest_pain_type=non_anginal": -0.6,
    "chest_pain_type=asymptomatic": 1.0,
    "exercise_angina": 0.8,
    "st_depression": 0.45,
    "fasting_glucose": 0.004,
    "resting_ecg=st_t_abnormality": 0.35,
    "resting_ecg=lv_hypertrophy": 0.25,
    "physical_activity_hours": -0.05,
}
RISK_PATIENT_NOISE_SD = 0.4
RISK_VISIT_NOISE_SD = 0.3

#: The risk function at full concept shift (``Shift(concept=1)``): the symptom terms flip sign,
#: age and sex stop mattering and cholesterol matters three times as much, so a model trained
#: on the reference relationship ranks patients badly. Intermediate values interpolate
#: linearly between :data:`RISK_COEFFICIENTS` and these. The intercept is chosen so the
#: prevalence stays in the same range: a concept shift should not be detectable from the
#: positive rate alone.
CONCEPT_SHIFTED_INTERCEPT = 0.3
CONCEPT_SHIFTED_COEFFICIENTS: dict[str, float] = {
    **RISK_COEFFICIENTS,
    "age": 0.0,
    "sex=M": -0.3,
    "cholesterol": 0.012,
    "max_heart_rate": 0.015,
    "chest_pain_type=asymptomatic": -0.8,
    "exercise_angina": -0.6,
    "st_depression": -0.3,
}

_SECONDS_PER_YEAR = 365.25 * 24 * 3600
_N_STREAMS = 8  # visits, patients, measurements, symptoms, label, distortion, resample, spare


@dataclass(frozen=True)
class Shift:
    """A controlled departure from the reference cohort, for drift and fairness tests.

    Attributes:
        covariate: Numeric column -> additive shift in units of that column's standard deviation
            in the same (unshifted) sample, e.g. ``{"bmi": 1.0}`` moves the BMI mean up by about
            one sd. Only the named column moves (derived columns keep their values) and the
            shifted values are rounded and clipped into the config range again. Labels are
            computed from the shifted features, so this is a pure covariate shift: P(y | x)
            stays the same, while the positive rate follows the features.
        prevalence: Target positive rate in (0, 1). Achieved by **resampling rows**: a larger
            pool is generated and exactly ``round(prevalence * n_rows)`` positives and the rest
            negatives are drawn from it without replacement. That is a textbook label shift:
            P(x | y) is unchanged, so the feature distributions move with the class mix (more
            positives bring more asymptomatic chest pain, higher ST depression ...), and the
            rate is hit exactly up to rounding.
        concept: 0 = the reference risk function, 1 = :data:`CONCEPT_SHIFTED_COEFFICIENTS`
            (symptom terms flip sign, age and sex drop out); values in between interpolate.
            Features are unchanged; only how labels follow from them changes.
        label_distortion: A systematically biased label for one group, e.g.
            ``{"column": "sex", "value": "F", "flip_positive_rate": 0.5}`` turns half of the
            women's positive labels into 0 (under-diagnosis), leaving every other row alone.
    """

    covariate: dict[str, float] = field(default_factory=dict)
    prevalence: float | None = None
    concept: float = 0.0
    label_distortion: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for col, k in self.covariate.items():
            if col not in NUMERIC_RANGES:
                raise ValueError(
                    f"covariate shift: {col!r} is not a numeric feature "
                    f"(numeric features: {sorted(NUMERIC_RANGES)})"
                )
            if not math.isfinite(float(k)):
                raise ValueError(f"covariate shift for {col!r} must be finite, got {k!r}")
        if self.prevalence is not None and not 0.0 < float(self.prevalence) < 1.0:
            raise ValueError(f"prevalence must be strictly between 0 and 1, got {self.prevalence}")
        if not 0.0 <= float(self.concept) <= 1.0:
            raise ValueError(f"concept must be between 0 and 1, got {self.concept}")
        if self.label_distortion is not None:
            d = self.label_distortion
            expected = {"column", "value", "flip_positive_rate"}
            if set(d) != expected:
                raise ValueError(
                    f"label_distortion needs exactly the keys {sorted(expected)}, got {sorted(d)}"
                )
            if d["column"] not in FEATURE_DTYPES:
                raise ValueError(f"label_distortion: {d['column']!r} is not a feature column")
            cats = CATEGORIES.get(d["column"])
            if cats is not None and d["value"] not in cats:
                raise ValueError(
                    f"label_distortion: {d['value']!r} is not a category of {d['column']!r} "
                    f"({list(cats)})"
                )
            if not 0.0 <= float(d["flip_positive_rate"]) <= 1.0:
                raise ValueError("label_distortion: flip_positive_rate must be between 0 and 1")


def risk_coefficients(concept: float = 0.0) -> tuple[float, dict[str, float]]:
    """Intercept and coefficients of the risk function at a given concept-shift strength.

    Args:
        concept: 0 = reference (:data:`RISK_COEFFICIENTS`), 1 = fully shifted.

    Returns:
        ``(intercept, {term: coefficient})``.
    """
    c = float(concept)
    intercept = (1 - c) * RISK_INTERCEPT + c * CONCEPT_SHIFTED_INTERCEPT
    coefs = {
        t: (1 - c) * b + c * CONCEPT_SHIFTED_COEFFICIENTS[t] for t, b in RISK_COEFFICIENTS.items()
    }
    return intercept, coefs


def risk_logit(data: Mapping[str, Any] | pd.DataFrame, concept: float = 0.0) -> np.ndarray:
    """The noise-free log-odds of heart disease for every row of ``data`` (the ground truth).

    Args:
        data: A frame (or mapping of arrays) with the feature columns.
        concept: Concept-shift strength, see :class:`Shift`.

    Returns:
        float64 array, one log-odds per row.
    """
    intercept, coefs = risk_coefficients(concept)
    out: np.ndarray | None = None
    for term, beta in coefs.items():
        col, _, level = term.partition("=")
        values = np.asarray(data[col])
        if level:
            x = (values == level).astype(np.float64)
        else:
            x = values.astype(np.float64) - RISK_CENTERS.get(col, 0.0)
        out = beta * x if out is None else out + beta * x
    assert out is not None
    return out + intercept


# -- internals -----------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _categorical(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Vectorised multinomial-logit draw: one category code per row of ``logits`` (n, k)."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    u = rng.random(len(logits)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), logits.shape[1] - 1)


def _finish(col: str, x: np.ndarray) -> np.ndarray:
    """Round to the column's precision and clip into its config range."""
    lo, hi = NUMERIC_RANGES[col]
    if FEATURE_DTYPES[col] == "int":
        return np.clip(np.rint(x), lo, hi).astype(np.int64)
    return np.clip(np.round(x, DECIMALS[col]), lo, hi).astype(np.float64)


def _unique_times(pidx: np.ndarray, t: np.ndarray, span: int) -> np.ndarray:
    """Move same-second visits of one patient on by a second until every pair is unique."""
    if np.bincount(pidx).max() > span:
        raise ValueError("the time window has fewer seconds than a patient has visits")
    t = t.copy()
    while True:
        order = np.lexsort((t, pidx))
        p, s = pidx[order], t[order]
        dup = (p[1:] == p[:-1]) & (s[1:] == s[:-1])
        if not dup.any():
            return t
        idx = order[1:][dup]
        t[idx] = (t[idx] + 1) % span


def _simulate(
    n_rows: int, n_patients: int, streams: list[np.random.SeedSequence], span: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Draw the unshifted features.

    Returns:
        ``(columns, patient_index, seconds_from_start, frailty_per_row)``.
    """
    rv, rp, rm, rs = (np.random.default_rng(s) for s in streams[:4])

    # visits: every patient at least once, the rest uniformly; uniform whole-second times
    pidx = np.concatenate(
        [np.arange(n_patients), rv.integers(0, n_patients, n_rows - n_patients)]
    ).astype(np.int64)
    t = _unique_times(pidx, rv.integers(0, span, n_rows), span)

    # stable per-patient traits
    male = rp.random(n_patients) < 0.52
    age0 = np.clip(rp.normal(53.0, 13.0, n_patients), 18.0, 95.0)
    a50 = age0 - 50.0
    zeros = np.zeros(n_patients)
    smoking = _categorical(
        rp,
        np.column_stack([zeros, -0.9 + 0.03 * a50 + 0.2 * male, -1.2 - 0.02 * a50 + 0.3 * male]),
    )
    former, current = smoking == 1, smoking == 2
    bmi0 = np.clip(np.exp(rp.normal(math.log(27.0), 0.17, n_patients)) + 0.04 * a50, 15.0, 60.0)
    activity0 = (
        rp.gamma(1.6, 2.3, n_patients)
        * np.exp(-0.04 * (bmi0 - 27.0) - 0.01 * a50)
        * np.where(current, 0.7, 1.0)
    )
    diabetes = rp.random(n_patients) < _sigmoid(
        -2.3 + 0.14 * (bmi0 - 27.0) + 0.045 * (age0 - 53.0) + 0.2 * current
    )
    bp_off = rp.normal(0.0, 9.0, n_patients)
    chol_off = rp.normal(0.0, 32.0, n_patients)
    gluc_off = rp.normal(0.0, 7.0, n_patients) + diabetes * np.exp(
        rp.normal(math.log(50.0), 0.4, n_patients)
    )
    burden = (
        -0.55
        + 0.05 * (age0 - 53.0)
        + 0.5 * male
        + 0.6 * current
        + 0.25 * former
        + 0.7 * diabetes
        + 0.05 * (bmi0 - 27.0)
        + 0.04 * bp_off
        + 0.01 * chol_off
        + rp.normal(0.0, 0.8, n_patients)
    )
    frailty = rp.normal(0.0, RISK_PATIENT_NOISE_SD, n_patients)

    # per-visit measurements around the traits
    n = n_rows
    m, cur, dia, z = male[pidx], current[pidx], diabetes[pidx], burden[pidx]
    age = _finish("age", np.floor(age0[pidx] + t / _SECONDS_PER_YEAR))
    bmi = _finish("bmi", bmi0[pidx] + rm.normal(0.0, 0.5, n))
    activity = _finish("physical_activity_hours", activity0[pidx] * np.exp(rm.normal(0.0, 0.3, n)))
    resting_bp = _finish(
        "resting_bp",
        100.0
        + 0.45 * age
        + 0.9 * (bmi - 27.0)
        + 4.0 * m
        + 3.0 * cur
        + 5.0 * dia
        + bp_off[pidx]
        + rm.normal(0.0, 6.0, n),
    )
    cholesterol = _finish(
        "cholesterol",
        195.0
        + 0.6 * (age - 53.0)
        + 1.8 * (bmi - 27.0)
        - 6.0 * m
        + chol_off[pidx]
        + rm.normal(0.0, 12.0, n),
    )
    glucose = _finish(
        "fasting_glucose",
        90.0 + 0.9 * (bmi - 27.0) + 0.15 * (age - 53.0) + gluc_off[pidx] + rm.normal(0.0, 6.0, n),
    )

    # symptoms and exercise test, driven by the latent burden
    zn = np.zeros(n)
    chest = _categorical(rs, np.column_stack([zn, 0.4 - 0.3 * z, 0.8 - 0.4 * z, 0.6 + 0.6 * z]))
    angina = rs.random(n) < _sigmoid(-1.7 + 1.4 * (chest == 3) + 0.3 * (chest == 0) + 0.7 * z)
    st = _finish(
        "st_depression",
        0.2 + 0.5 * z + 1.0 * angina + 0.01 * (age - 53.0) + rs.normal(0.0, 0.9, n),
    )
    max_hr = _finish(
        "max_heart_rate",
        220.0 - age - 10.0 - 5.0 * z - 0.4 * (bmi - 27.0) - 6.0 * angina + rs.normal(0, 9.0, n),
    )
    ecg = _categorical(
        rs, np.column_stack([zn, -2.6 + 0.5 * z, -2.2 + 0.04 * (resting_bp - 130.0)])
    )

    def cat(col: str, codes: np.ndarray) -> np.ndarray:
        return np.asarray(CATEGORIES[col], dtype=object)[codes]

    cols: dict[str, np.ndarray] = {
        "age": age,
        "sex": cat("sex", m.astype(np.int64)),
        "resting_bp": resting_bp,
        "cholesterol": cholesterol,
        "max_heart_rate": max_hr,
        "bmi": bmi,
        "smoking": cat("smoking", smoking[pidx]),
        "diabetes": dia.astype(bool),
        "chest_pain_type": cat("chest_pain_type", chest),
        "exercise_angina": angina.astype(bool),
        "st_depression": st,
        "fasting_glucose": glucose,
        "resting_ecg": cat("resting_ecg", ecg),
        "physical_activity_hours": activity,
    }
    return cols, pidx, t, frailty[pidx]


def _labelled_pool(
    n_rows: int,
    n_patients: int,
    streams: list[np.random.SeedSequence],
    span: int,
    shift: Shift,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Features with covariate shift applied, then labels (concept shift, label distortion)."""
    cols, pidx, t, frailty = _simulate(n_rows, n_patients, streams, span)
    for col, k in shift.covariate.items():
        x = cols[col]
        cols[col] = _finish(col, x + float(k) * float(np.std(x)))

    rl = np.random.default_rng(streams[4])
    logit = risk_logit(cols, shift.concept) + frailty + rl.normal(0.0, RISK_VISIT_NOISE_SD, n_rows)
    y = (rl.random(n_rows) < _sigmoid(logit)).astype(np.int64)

    if shift.label_distortion is not None:
        d = shift.label_distortion
        u = np.random.default_rng(streams[5]).random(n_rows)
        flip = (
            (np.asarray(cols[d["column"]]) == d["value"])
            & (y == 1)
            & (u < float(d["flip_positive_rate"]))
        )
        y[flip] = 0
    cols[LABEL] = y
    return cols, pidx, t


def _to_utc(ts: str | pd.Timestamp) -> pd.Timestamp:
    out = pd.Timestamp(ts)
    out = out.tz_localize("UTC") if out.tz is None else out.tz_convert("UTC")
    return out.floor("s")


def _generate(
    n_rows: int,
    seed: int,
    start: pd.Timestamp,
    end: pd.Timestamp,
    shift: Shift | None,
    id_offset: int,
) -> pd.DataFrame:
    if int(n_rows) < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    n_rows = int(n_rows)
    span = int((end - start).total_seconds())
    if span < 1:
        raise ValueError(f"the time window {start} .. {end} is empty")
    shift = shift or Shift()
    streams = np.random.SeedSequence(int(seed)).spawn(_N_STREAMS)
    n_patients = max(1, math.ceil(n_rows / VISITS_PER_PATIENT))

    if shift.prevalence is None:
        cols, pidx, t = _labelled_pool(n_rows, n_patients, streams, span, shift)
    else:
        # Label shift by resampling: draw a big enough pool, then exactly k positives.
        target = float(shift.prevalence)
        k = round(target * n_rows)
        factor = 1.3 * max(target / 0.35, (1.0 - target) / 0.55, 1.0)
        while True:
            pool = math.ceil(n_rows * factor) + 200
            cols, pidx, t = _labelled_pool(pool, n_patients, streams, span, shift)
            pos = np.flatnonzero(cols[LABEL] == 1)
            neg = np.flatnonzero(cols[LABEL] == 0)
            if len(pos) >= k and len(neg) >= n_rows - k:
                break
            factor *= 2
        rr = np.random.default_rng(streams[6])
        keep = np.concatenate(
            [rr.choice(pos, k, replace=False), rr.choice(neg, n_rows - k, replace=False)]
        )
        cols = {c: v[keep] for c, v in cols.items()}
        pidx, t = pidx[keep], t[keep]

    patient_id = (int(id_offset) + 1 + pidx).astype(np.int64)
    micros = start.value // 1_000 + t.astype(np.int64) * 1_000_000
    order = np.lexsort((patient_id, micros))
    timestamps = pd.Series(micros[order].astype("datetime64[us]")).dt.tz_localize("UTC")
    frame = pd.DataFrame({ENTITY: patient_id[order], TIMESTAMP: timestamps})
    for col in (*FEATURES, LABEL):
        frame[col] = cols[col][order]
    return frame


# -- public API ----------------------------------------------------------------------------------
def generate_cohort(
    n_rows: int = 50_000,
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
    months: int = DEFAULT_MONTHS,
    shift: Shift | None = None,
    id_offset: int = 0,
) -> pd.DataFrame:
    """The reference patient cohort: ``n_rows`` visits of about ``n_rows / 3`` patients.

    Args:
        n_rows: Exact number of rows (visits).
        seed: Everything is derived from it; the same seed gives an identical frame.
        start: Window start; naive times are taken as UTC.
        months: Window length in calendar months.
        shift: Optional controlled shift, see :class:`Shift`.
        id_offset: Patient ids are ``id_offset + 1 ... id_offset + n_patients``.

    Returns:
        A frame with :data:`COLUMNS`, sorted by event_timestamp then patient_id, with a
        fresh RangeIndex.
    """
    begin = _to_utc(start)
    if int(months) < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    return _generate(
        n_rows, seed, begin, begin + pd.DateOffset(months=int(months)), shift, id_offset
    )


def generate_batch(
    n_rows: int = 5_000,
    seed: int = 1,
    start: str | pd.Timestamp = DEFAULT_BATCH_START,
    days: int = 30,
    shift: Shift | None = None,
    id_offset: int = BATCH_ID_OFFSET,
) -> pd.DataFrame:
    """A later batch of visits (default: the 30 days after the reference window), for drift tests.

    Same generator as :func:`generate_cohort`, over a window of ``days`` days. Batch patients
    are new patients (ids above ``id_offset``); give several batches different seeds and, if
    their ids must not repeat, different offsets.

    Args:
        n_rows: Exact number of rows.
        seed: Use a different seed from the reference cohort's, or the batch replays it.
        start: Window start; naive times are taken as UTC.
        days: Window length in days.
        shift: Optional controlled shift, see :class:`Shift`.
        id_offset: Patient ids are ``id_offset + 1 ...``.

    Returns:
        A frame shaped exactly like :func:`generate_cohort`'s.
    """
    begin = _to_utc(start)
    if int(days) < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    return _generate(n_rows, seed, begin, begin + pd.Timedelta(days=int(days)), shift, id_offset)


def write_dataset(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as parquet (``.parquet``/``.pq``) or CSV (``.csv``), creating parent dirs.

    The file appears atomically (written next to the target, then renamed), so a watcher never
    ingests half a file. In CSV, datetime columns are written as ISO 8601 in UTC with an explicit
    offset (``2024-01-01T08:30:00+00:00``; naive columns are taken to be UTC already), so the
    time zone survives a round trip through text.

    Args:
        df: The frame to write (its index is not written).
        path: Target file; the suffix picks the format.

    Returns:
        The absolute path written.
    """
    target = Path(path).expanduser().resolve()
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ValueError(f"{target}: unsupported suffix {suffix!r} (use .parquet, .pq or .csv)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix == ".csv":
            out = df.copy()
            for col in out.columns:
                if pd.api.types.is_datetime64_any_dtype(out[col]):
                    out[col] = _iso_utc(out[col])
            out.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def append_dataset(df: pd.DataFrame, path: str | Path) -> Path:
    """Add rows to an existing dataset file (or create it), as an upstream table grows.

    The whole file is rewritten atomically through :func:`write_dataset`, so a reader sees the
    old or the new file, never a partial one. Columns must match the file's exactly: a batch
    with a different layout is a different dataset, not new rows of this one.
    """
    target = Path(path).expanduser().resolve()
    if not target.exists():
        return write_dataset(df, target)
    if target.suffix.lower() == ".csv":
        old = pd.read_csv(target)
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]) and col in old.columns:
                old[col] = pd.to_datetime(old[col], utc=True, format="ISO8601")
    else:
        old = pd.read_parquet(target)
    if list(old.columns) != list(df.columns):
        raise ValueError(
            f"{target}: cannot append rows with columns {list(df.columns)} to a file with "
            f"columns {list(old.columns)}"
        )
    return write_dataset(
        pd.concat([old, df.astype(old.dtypes.to_dict())], ignore_index=True), target
    )


def _iso_utc(s: pd.Series) -> pd.Series:
    """ISO 8601 strings in UTC with a ``+00:00`` offset; sub-second digits only when present."""
    utc = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    fractional = bool((utc.dt.microsecond.fillna(0) != 0).any())
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if fractional else "%Y-%m-%dT%H:%M:%S"
    return utc.dt.strftime(fmt) + "+00:00"

"""The built-in cohort's patients and visits: its columns, their ranges, and how each is drawn.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlsteward.data.synthetic_draws import (
    categorical,
    draw_visits,
    finish_numeric,
    labels_of,
    sigmoid,
)
from mlsteward.data.synthetic_draws import unique_times as _unique_times  # noqa: F401 (tested here)
from mlsteward.data.synthetic_risk import RISK_PATIENT_NOISE_SD

ENTITY = "patient_id"
TIMESTAMP = "event_timestamp"
LABEL = "heart_disease"

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

_SECONDS_PER_YEAR = 365.25 * 24 * 3600


def finish_column(col: str, x: np.ndarray) -> np.ndarray:
    """Round to the column's precision and clip into its config range (age: whole years)."""
    return finish_numeric(x, NUMERIC_RANGES[col], DECIMALS.get(col))


def simulate_visits(
    n_rows: int, n_patients: int, streams: list[np.random.SeedSequence], span: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Draw the unshifted features: visits, then per-patient traits, then per-visit readings.

    Each stage draws from its own stream (``streams[:4]``), so the stages never disturb one
    another's numbers.

    Returns:
        ``(columns, patient_index, seconds_from_start, frailty_per_row)``.
    """
    rv, rp, rm, rs = (np.random.default_rng(s) for s in streams[:4])
    pidx, t = draw_visits(rv, n_rows, n_patients, span)
    traits = _traits(rp, n_patients)
    readings = _measurements(rm, traits, pidx, t)
    symptoms = _symptoms(rs, traits.burden[pidx], readings)
    m = traits.male[pidx]

    def cat(col: str, codes: np.ndarray) -> np.ndarray:
        return labels_of(codes, CATEGORIES[col])

    cols: dict[str, np.ndarray] = {
        "age": readings["age"],
        "sex": cat("sex", m.astype(np.int64)),
        "resting_bp": readings["resting_bp"],
        "cholesterol": readings["cholesterol"],
        "max_heart_rate": symptoms["max_heart_rate"],
        "bmi": readings["bmi"],
        "smoking": cat("smoking", traits.smoking[pidx]),
        "diabetes": traits.diabetes[pidx].astype(bool),
        "chest_pain_type": cat("chest_pain_type", symptoms["chest_pain_type"]),
        "exercise_angina": symptoms["exercise_angina"].astype(bool),
        "st_depression": symptoms["st_depression"],
        "fasting_glucose": readings["fasting_glucose"],
        "resting_ecg": cat("resting_ecg", symptoms["resting_ecg"]),
        "physical_activity_hours": readings["physical_activity_hours"],
    }
    return cols, pidx, t, traits.frailty[pidx]


@dataclass(frozen=True)
class _Traits:
    """Stable per-patient traits, one value per patient."""

    male: np.ndarray
    age0: np.ndarray
    smoking: np.ndarray  # category codes: never, former, current
    current: np.ndarray
    bmi0: np.ndarray
    activity0: np.ndarray
    diabetes: np.ndarray
    bp_off: np.ndarray
    chol_off: np.ndarray
    gluc_off: np.ndarray
    burden: np.ndarray  # the latent coronary burden (never output)
    frailty: np.ndarray  # unobserved, enters only the label


def _traits(rp: np.random.Generator, n_patients: int) -> _Traits:
    """Draw each patient's stable traits (see the module doc for every formula)."""
    male = rp.random(n_patients) < 0.52
    age0 = np.clip(rp.normal(53.0, 13.0, n_patients), 18.0, 95.0)
    a50 = age0 - 50.0
    zeros = np.zeros(n_patients)
    smoking = categorical(
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
    diabetes = rp.random(n_patients) < sigmoid(
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
    return _Traits(
        male, age0, smoking, current, bmi0, activity0, diabetes, bp_off, chol_off, gluc_off,
        burden, frailty,
    )  # fmt: skip


def _measurements(
    rm: np.random.Generator, traits: _Traits, pidx: np.ndarray, t: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-visit readings around the patient's traits: the same person, different readings."""
    n = len(pidx)
    m, cur, dia = traits.male[pidx], traits.current[pidx], traits.diabetes[pidx]
    age = finish_column("age", np.floor(traits.age0[pidx] + t / _SECONDS_PER_YEAR))
    bmi = finish_column("bmi", traits.bmi0[pidx] + rm.normal(0.0, 0.5, n))
    activity = finish_column(
        "physical_activity_hours", traits.activity0[pidx] * np.exp(rm.normal(0.0, 0.3, n))
    )
    resting_bp = finish_column(
        "resting_bp",
        100.0
        + 0.45 * age
        + 0.9 * (bmi - 27.0)
        + 4.0 * m
        + 3.0 * cur
        + 5.0 * dia
        + traits.bp_off[pidx]
        + rm.normal(0.0, 6.0, n),
    )
    cholesterol = finish_column(
        "cholesterol",
        195.0
        + 0.6 * (age - 53.0)
        + 1.8 * (bmi - 27.0)
        - 6.0 * m
        + traits.chol_off[pidx]
        + rm.normal(0.0, 12.0, n),
    )
    glucose = finish_column(
        "fasting_glucose",
        90.0
        + 0.9 * (bmi - 27.0)
        + 0.15 * (age - 53.0)
        + traits.gluc_off[pidx]
        + rm.normal(0.0, 6.0, n),
    )
    return {
        "age": age,
        "bmi": bmi,
        "physical_activity_hours": activity,
        "resting_bp": resting_bp,
        "cholesterol": cholesterol,
        "fasting_glucose": glucose,
    }


def _symptoms(
    rs: np.random.Generator, z: np.ndarray, readings: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Symptoms and the exercise test, driven by the latent burden ``z`` of each visit's
    patient: chest pain and ECG as category codes, angina as a flag."""
    n = len(z)
    age, bmi = readings["age"], readings["bmi"]
    zn = np.zeros(n)
    chest = categorical(rs, np.column_stack([zn, 0.4 - 0.3 * z, 0.8 - 0.4 * z, 0.6 + 0.6 * z]))
    angina = rs.random(n) < sigmoid(-1.7 + 1.4 * (chest == 3) + 0.3 * (chest == 0) + 0.7 * z)
    st = finish_column(
        "st_depression",
        0.2 + 0.5 * z + 1.0 * angina + 0.01 * (age - 53.0) + rs.normal(0.0, 0.9, n),
    )
    max_hr = finish_column(
        "max_heart_rate",
        220.0 - age - 10.0 - 5.0 * z - 0.4 * (bmi - 27.0) - 6.0 * angina + rs.normal(0, 9.0, n),
    )
    ecg = categorical(
        rs, np.column_stack([zn, -2.6 + 0.5 * z, -2.2 + 0.04 * (readings["resting_bp"] - 130.0)])
    )
    return {
        "chest_pain_type": chest,
        "exercise_angina": angina,
        "st_depression": st,
        "max_heart_rate": max_hr,
        "resting_ecg": ecg,
    }

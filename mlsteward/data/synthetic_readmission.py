"""Built-in ``readmission`` data: patients discharged from hospital, and how long their next
stay will be.

Why this dataset: the built-in regression model. Its outcome is what lengths of stay are -- a
skewed, non-negative whole number of days with a long right tail and some same-day (0) stays --
drawn from a known log-linear mean, so a ``count:poisson`` model has a ground truth to recover.
Race is measured but never an input (the lawful setup); it moves diagnoses, comorbidity and
insurance, as it does in real hospital data, but never the stay directly.

Structure
---------
``n_patients = ceil(n_rows / 2)`` patients with about two index admissions each over the window;
``event_timestamp`` is the discharge time of the index admission (uniform whole seconds,
``(patient_id, event_timestamp)`` unique). Stable traits are drawn once per patient (sex, race,
age, a latent chronic-illness burden, insurance); everything about an admission is redrawn at
each one.

Columns (in this order)
-----------------------
``patient_id`` (int64), ``event_timestamp`` (datetime64[us, UTC]): entity and discharge time.
``age`` (int64, 18-100): baseline ~ Normal(65, 15) clipped to [18, 98], plus years elapsed.
``sex`` ("F" / "M"): P(M) = 0.46.
``primary_diagnosis`` (circulatory, respiratory, digestive, diabetes, injury, musculoskeletal,
    neoplasms, other): multinomial logit against circulatory; respiratory and neoplasms more
    common with age, injury less, diabetes more common in black and hispanic patients.
``admission_type`` (emergency, urgent, elective): about 55 / 18 / 27 %; musculoskeletal and
    neoplasm admissions are more often elective, injuries less.
``num_prior_admissions`` (int64, 0-50): Poisson(exp(-0.2 + 0.5 burden)).
``num_medications`` (int64, 1-80): 1 + Poisson(13 exp(0.08 comorbidity + 0.005 (age - 65)
    + 0.2 diabetes)), mean about 16.
``num_lab_procedures`` (int64, 1-150): Normal(43 + 3 emergency + 0.5 comorbidity, 18).
``comorbidity_index`` (int64, 0-20, Charlson-like): Poisson(exp(0.55 + 0.8 burden)), mean
    about 2.2, a fifth of patients 0.
``discharge_disposition`` (home, home_health, skilled_nursing, rehab, other): multinomial logit
    against home; older and more comorbid patients go to home health or skilled nursing,
    injuries and musculoskeletal admissions to rehab.
``insurance`` (medicare, medicaid, private, self_pay): at 65+ mostly medicare; under 65 mostly
    private, medicaid more often for black and hispanic patients.
``hba1c_tested`` (bool): P = sigmoid(-1.6 + 2.6 diabetes).
``race`` (white, black, hispanic, asian, other; 62 / 19 / 11 / 4 / 4 %): sensitive, **not a
    feature**.
``length_of_stay_days`` (int64, 0-180): the outcome.

The latent ``burden`` (never output) is a per-patient ``0.03 (age - 65) + 0.25 black + 0.15
hispanic + N(0, 0.6)``: it makes comorbidity, prior admissions and medications move together.

The outcome's known mean
------------------------
``log mu = MEAN.intercept + sum(coefficient * term)`` over the features only (see :data:`MEAN`;
numeric terms measured from their centres), plus an unobserved per-patient frailty ~ N(0, 0.2);
then ``length_of_stay_days ~ Poisson(mu * G)`` with ``G ~ Gamma(3, 1/3)`` (a negative binomial
with dispersion 3), capped at 180. Mean about 4.4 days, median 3, p95 13, p99 about 22, about
11 % zeros and 16 % ones; about one stay in 2,000 is longer than 60 days. Race never enters.
At full concept shift comorbidity and prior admissions stop lengthening the stay and elective
admissions run longer than emergencies (:data:`MEAN`'s shifted coefficients).
"""

from __future__ import annotations

import math

import numpy as np

from mlsteward.data.synthetic_draws import (
    categorical,
    entities_at_visits,
    finish_numeric,
    labels_of,
    sigmoid,
)
from mlsteward.data.synthetic_engine import Columns, SyntheticDataset
from mlsteward.data.synthetic_linear import LinearTerms
from mlsteward.data.synthetic_shift import BaseShift, ShiftRules

ENTITY = "patient_id"
TIMESTAMP = "event_timestamp"
LABEL = "length_of_stay_days"
#: The sensitive column that is measured but never a model input.
RACE = "race"
#: Stays are capped here: the contract's maximum for the outcome.
MAX_STAY_DAYS = 180
#: Dispersion of the stay around its mean: variance = mu + mu**2 / DISPERSION.
DISPERSION = 3.0

#: Feature columns and their config dtype, in the order of ``config/models/readmission.yaml``.
FEATURE_DTYPES: dict[str, str] = {
    "age": "int",
    "sex": "category",
    "primary_diagnosis": "category",
    "admission_type": "category",
    "num_prior_admissions": "int",
    "num_medications": "int",
    "num_lab_procedures": "int",
    "comorbidity_index": "int",
    "discharge_disposition": "category",
    "insurance": "category",
    "hba1c_tested": "bool",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DTYPES)
COLUMNS: tuple[str, ...] = (ENTITY, TIMESTAMP, *FEATURES, RACE, LABEL)

#: Value ranges of the numeric features; identical to the config's min/max (tested).
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (18, 100),
    "num_prior_admissions": (0, 50),
    "num_medications": (1, 80),
    "num_lab_procedures": (1, 150),
    "comorbidity_index": (0, 20),
}
#: Allowed values of the categorical columns (race too), in the config's order (tested).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "sex": ("F", "M"),
    "primary_diagnosis": (
        "circulatory", "respiratory", "digestive", "diabetes", "injury", "musculoskeletal",
        "neoplasms", "other",
    ),
    "admission_type": ("emergency", "urgent", "elective"),
    "discharge_disposition": ("home", "home_health", "skilled_nursing", "rehab", "other"),
    "insurance": ("medicare", "medicaid", "private", "self_pay"),
    RACE: ("white", "black", "hispanic", "asian", "other"),
}  # fmt: skip
_RACE_SHARES = (0.5, 0.2, 0.16, 0.08, 0.06)

#: The known log-linear mean of the stay (log days); see the module doc.
#: Log days per unit (year, admission, medication, lab procedure, index point) or per
#: indicator, at concept 0.
_COEFFICIENTS: dict[str, float] = {
    "age": 0.006,
    "sex=M": 0.05,
    "primary_diagnosis=respiratory": 0.1,
    "primary_diagnosis=digestive": -0.05,
    "primary_diagnosis=diabetes": 0.05,
    "primary_diagnosis=injury": 0.15,
    "primary_diagnosis=musculoskeletal": -0.1,
    "primary_diagnosis=neoplasms": 0.3,
    "primary_diagnosis=other": -0.15,
    "admission_type=urgent": -0.05,
    "admission_type=elective": -0.4,
    "num_prior_admissions": 0.08,
    "num_medications": 0.012,
    "num_lab_procedures": 0.005,
    "comorbidity_index": 0.1,
    "discharge_disposition=home_health": 0.1,
    "discharge_disposition=skilled_nursing": 0.45,
    "discharge_disposition=rehab": 0.25,
    "discharge_disposition=other": 0.15,
    "insurance=medicaid": 0.05,
    "insurance=private": -0.05,
    "insurance=self_pay": -0.1,
    "hba1c_tested": -0.05,
}
MEAN = LinearTerms(
    intercept=math.log(3.7),
    coefficients=_COEFFICIENTS,
    centers={
        "age": 65.0,
        "num_prior_admissions": 1.0,
        "num_medications": 16.0,
        "num_lab_procedures": 43.0,
        "comorbidity_index": 2.0,
    },
    # At full concept shift (a new discharge policy, say) comorbidity and prior admissions stop
    # lengthening the stay, elective admissions run longer and skilled-nursing discharges
    # shorter; the intercept keeps the mean stay about the same, so the shift does not show in
    # the mean alone.
    shifted_intercept=math.log(3.8),
    shifted_coefficients={
        **_COEFFICIENTS,
        "age": -0.01,
        "primary_diagnosis=neoplasms": -0.2,
        "admission_type=elective": 0.3,
        "num_prior_admissions": -0.05,
        "comorbidity_index": 0.0,
        "discharge_disposition=skilled_nursing": -0.3,
    },
)
MEAN_PATIENT_NOISE_SD = 0.2

_SECONDS_PER_YEAR = 365.25 * 24 * 3600


def finish_column(col: str, x: np.ndarray) -> np.ndarray:
    """Round to a whole number and clip into the column's config range (all are counts)."""
    return finish_numeric(x, NUMERIC_RANGES[col], None)


def _patients(rp: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Stable per-patient traits (see the module doc)."""
    male = rp.random(n) < 0.46
    race = categorical(rp, np.tile(np.log(_RACE_SHARES), (n, 1)))
    black, hispanic = race == 1, race == 2
    age0 = np.clip(rp.normal(65.0, 15.0, n), 18.0, 98.0)
    burden = 0.03 * (age0 - 65.0) + 0.25 * black + 0.15 * hispanic + rp.normal(0.0, 0.6, n)
    old = age0 >= 65.0
    zeros = np.zeros(n)
    insurance = categorical(
        rp,
        np.column_stack([
            zeros,
            np.where(old, -2.5, 1.0 + 0.8 * black + 0.6 * hispanic),
            np.where(old, -1.5, 2.3 - 0.3 * black),
            np.where(old, -4.0, 0.0 + 0.3 * hispanic),
        ]),
    )  # fmt: skip
    frailty = rp.normal(0.0, MEAN_PATIENT_NOISE_SD, n)
    return {"male": male, "race": race, "age0": age0, "burden": burden,
            "insurance": insurance, "frailty": frailty}  # fmt: skip


def _admissions(
    ra: np.random.Generator, p: dict[str, np.ndarray], t: np.ndarray
) -> dict[str, np.ndarray]:
    """Everything about one admission, around the patient's traits (``p`` indexed per row);
    categorical columns as codes."""
    n = len(t)
    z = np.zeros(n)
    age = finish_column("age", np.floor(p["age0"] + t / _SECONDS_PER_YEAR))
    a65 = age - 65.0
    minority = (p["race"] == 1) | (p["race"] == 2)
    diag = categorical(ra, np.column_stack([
        z, -0.3 + 0.01 * a65, -0.5 - 0.01 * a65, -1.2 + 0.5 * minority, -0.9 - 0.015 * a65,
        -0.8 + z, -1.0 + 0.01 * a65, -0.2 + z,
    ]))  # fmt: skip
    injury, msk, neo, dia = diag == 4, diag == 5, diag == 6, diag == 3
    admission = categorical(
        ra, np.column_stack([z, -1.1 + z, -0.7 + 1.0 * msk + 0.6 * neo - 0.8 * injury])
    )
    comorbidity = finish_column("comorbidity_index", ra.poisson(np.exp(0.55 + 0.8 * p["burden"])))
    emergency = admission == 0
    disposition = categorical(ra, np.column_stack([
        z,
        -1.6 + 0.03 * a65 + 0.15 * comorbidity,
        -2.5 + 0.06 * a65 + 0.25 * comorbidity,
        -2.8 + 0.02 * a65 + 1.2 * injury + 0.8 * msk,
        -2.5 + z,
    ]))  # fmt: skip
    meds = 1.0 + ra.poisson(13.0 * np.exp(0.08 * comorbidity + 0.005 * a65 + 0.2 * dia))
    return {
        "age": age,
        "primary_diagnosis": diag,
        "admission_type": admission,
        "num_prior_admissions": finish_column(
            "num_prior_admissions", ra.poisson(np.exp(-0.2 + 0.5 * p["burden"]))
        ),
        "num_medications": finish_column("num_medications", meds),
        "num_lab_procedures": finish_column(
            "num_lab_procedures",
            ra.normal(43.0 + 3.0 * emergency + 0.5 * comorbidity, 18.0),
        ),
        "comorbidity_index": comorbidity,
        "discharge_disposition": disposition,
        "hba1c_tested": ra.random(n) < sigmoid(-1.6 + 2.6 * dia),
    }


def simulate(
    n_rows: int, n_patients: int, streams: list[np.random.SeedSequence], span: int
) -> tuple[Columns, np.ndarray, np.ndarray, np.ndarray]:
    """Draw the unshifted columns: discharges, then patients, then admissions (streams 0-2)."""
    pidx, t, p, ra = entities_at_visits(streams, n_rows, n_patients, span, _patients)
    a = _admissions(ra, p, t)
    codes = {**a, "sex": p["male"].astype(np.int64), "insurance": p["insurance"], RACE: p["race"]}
    cols: Columns = {
        col: labels_of(codes[col], CATEGORIES[col]) if col in CATEGORIES else codes[col]
        for col in (*FEATURES, RACE)
    }
    cols["hba1c_tested"] = cols["hba1c_tested"].astype(bool)
    return cols, pidx, t, p["frailty"]


def _outcome(
    cols: Columns, frailty: np.ndarray, concept: float, rng: np.random.Generator
) -> np.ndarray:
    """Negative-binomial stays around the known log-linear mean and the patient's frailty."""
    mu = np.exp(MEAN.evaluate(cols, concept) + frailty)
    rate = mu * rng.gamma(DISPERSION, 1.0 / DISPERSION, len(mu))
    return np.minimum(rng.poisson(rate), MAX_STAY_DAYS).astype(np.int64)


class Shift(BaseShift):
    """A controlled shift of the readmission data (see :class:`BaseShift`): covariate shift of
    a count feature, ``outcome_scale`` (label shift of the mean stay), ``concept`` and a
    ``label_distortion`` (scale and noise of one group's recorded stays) that may select its
    group by ``race`` as well as by a feature."""

    rules = ShiftRules.of(NUMERIC_RANGES, CATEGORIES, (*FEATURES, RACE), regression=True)


READMISSION = SyntheticDataset(
    entity=ENTITY,
    timestamp=TIMESTAMP,
    label=LABEL,
    columns=(*FEATURES, RACE),
    visits_per_entity=2,
    shift_type=Shift,
    simulate=simulate,
    finish=finish_column,
    outcome=_outcome,
)

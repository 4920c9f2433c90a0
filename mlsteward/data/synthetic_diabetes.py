"""Built-in ``diabetes`` data: adults screened for type-2 diabetes, and whether it starts within
a year of the visit.

Why this dataset: a second binary model whose protected attribute is measured but never an input
(``ethnicity``), as the law asks of many real models. Ethnicity moves several features, as it
does in real cohorts, but never the risk directly, so a model that learns the features well is
equally calibrated in every group and passes a fairness gate; one trained on a distorted label
for one group does not.

Structure
---------
``n_patients = ceil(n_rows / 2)`` patients with about two screening visits each over the
window (visits as in the heart-disease cohort: every patient at least once, times uniform,
``(patient_id, event_timestamp)`` unique). Stable traits are drawn once per patient; readings
are redrawn at every visit around them.

Columns (in this order)
-----------------------
``patient_id`` (int64), ``event_timestamp`` (datetime64[us, UTC]): entity and visit time.
``age`` (int64, 18-100): baseline ~ Normal(50, 13) clipped to [18, 92], plus years elapsed.
``sex`` ("F" / "M"): P(M) = 0.48.
``bmi`` (kg/m2, one decimal, 12-70): baseline ~ LogNormal(log 28, 0.17) + 0.03 (age - 50)
    + 0.8 black + 0.6 hispanic - 1.5 asian, clipped to [16, 60]; each visit adds N(0, 0.5).
``waist_cm`` (whole cm, 50-200): ``22 + 2.4 bmi + 7 male + 0.12 (age - 50) + 4 asian`` plus a
    personal N(0, 5) and visit N(0, 1.5) (South and East Asian adults carry more fat centrally
    at the same BMI).
``fasting_glucose`` (whole mg/dl, 50-400): a personal level ``92 + 0.7 (bmi - 28) + 0.12 (age -
    50) + 6 ir`` plus a personal N(0, 6), and visit noise N(0, 5); about 30 % are >= 100.
``hba1c`` (%, one decimal, 3.5-15): ``2.1 + 0.035 glucose level + 0.15 ir + 0.2 black`` plus a
    personal N(0, 0.18) and visit N(0, 0.08) (HbA1c runs higher in black adults at the same
    glycaemia, a known non-glycaemic difference).
``systolic_bp`` (whole mmHg, 70-250): ``118 + 0.5 (age - 50) + 0.8 (bmi - 28) + 4 male
    + 4 black`` plus a personal N(0, 10) and visit N(0, 7).
``triglycerides`` (whole mg/dl, 20-1500): ``125 exp(0.02 (bmi - 28) + 0.25 ir - 0.2 black
    + 0.1 male)`` times a personal LogNormal(0, 0.3) and a visit LogNormal(0, 0.15).
``hdl_cholesterol`` (whole mg/dl, 10-150): ``56 - 9 male - 0.5 (bmi - 28) - 3 ir + 3 black
    + 0.5 (activity - 3)`` plus a personal N(0, 9) and visit N(0, 3).
``family_history`` (bool): P = sigmoid(-1.2 + 0.2 black + 0.25 hispanic + 0.3 asian).
``physical_activity_hours`` (hours/week, one decimal, 0-40): Gamma(1.6, 2.2) scaled by
    ``exp(-0.04 (bmi - 28) - 0.01 (age - 50))`` and 0.75 for current smokers; each visit
    multiplies it by LogNormal(0, 0.3).
``smoking`` ("never" / "former" / "current"): multinomial logit against never: former
    ``-0.9 + 0.03 (age - 50) + 0.2 male``, current ``-1.3 - 0.02 (age - 50) + 0.3 male``.
``ethnicity`` ("white" / "black" / "hispanic" / "asian" / "other"; 48 / 18 / 18 / 11 / 5 %):
    sensitive, **not a feature**.
``diabetes_onset`` (int64 0/1): the label.

``ir`` (insulin resistance, never output) is a per-patient ``0.8 N(0, 1) + 0.08 (bmi - 28)
+ 0.4 family_history + 0.15 asian + 0.1 hispanic - 0.05 (activity - 3)``: it is what makes
glucose, HbA1c, triglycerides and HDL move together, as they do in real metabolic data.

The label's known risk function
-------------------------------
``logit = RISK.intercept + sum(coefficient * term)`` over the features only (see :data:`RISK`:
numeric terms measured from their centres, e.g. ``hba1c - 5.4``), plus an unobserved
per-patient frailty ~ N(0, 0.4) and visit noise N(0, 0.3); ``diabetes_onset ~
Bernoulli(sigmoid(logit))``. Prevalence is about 17 %. Neither ethnicity nor ``ir`` enters:
ethnicity matters only through the features it moves. At full concept shift glycaemia stops
mattering and adiposity matters more (:data:`RISK`'s shifted coefficients).
"""

from __future__ import annotations

import math

import numpy as np

from mlsteward.data.synthetic_draws import (
    bernoulli,
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
LABEL = "diabetes_onset"
#: The sensitive column that is measured but never a model input.
ETHNICITY = "ethnicity"

#: Feature columns and their config dtype, in the order of ``config/models/diabetes.yaml``.
FEATURE_DTYPES: dict[str, str] = {
    "age": "int",
    "sex": "category",
    "bmi": "float",
    "waist_cm": "float",
    "fasting_glucose": "float",
    "hba1c": "float",
    "systolic_bp": "float",
    "triglycerides": "float",
    "hdl_cholesterol": "float",
    "family_history": "bool",
    "physical_activity_hours": "float",
    "smoking": "category",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DTYPES)
COLUMNS: tuple[str, ...] = (ENTITY, TIMESTAMP, *FEATURES, ETHNICITY, LABEL)

#: Value ranges of the numeric features; identical to the config's min/max (tested).
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (18, 100),
    "bmi": (12, 70),
    "waist_cm": (50, 200),
    "fasting_glucose": (50, 400),
    "hba1c": (3.5, 15),
    "systolic_bp": (70, 250),
    "triglycerides": (20, 1500),
    "hdl_cholesterol": (10, 150),
    "physical_activity_hours": (0, 40),
}
#: Decimal places of the float features: what the instrument or lab reports.
DECIMALS: dict[str, int] = {
    "bmi": 1,
    "waist_cm": 0,
    "fasting_glucose": 0,
    "hba1c": 1,
    "systolic_bp": 0,
    "triglycerides": 0,
    "hdl_cholesterol": 0,
    "physical_activity_hours": 1,
}
#: Allowed values of the categorical columns (ethnicity too), in the config's order (tested).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "sex": ("F", "M"),
    "smoking": ("never", "former", "current"),
    ETHNICITY: ("white", "black", "hispanic", "asian", "other"),
}
_ETHNICITY_SHARES = (0.48, 0.18, 0.18, 0.11, 0.05)

#: The known risk function (log-odds of onset within a year); see the module doc.
#: Log-odds per unit (year, kg/m2, cm, mg/dl, %, mmHg, hour) or per indicator, at concept 0.
_COEFFICIENTS: dict[str, float] = {
    "age": 0.025,
    "sex=M": 0.25,
    "bmi": 0.05,
    "waist_cm": 0.02,
    "fasting_glucose": 0.05,
    "hba1c": 1.1,
    "systolic_bp": 0.008,
    "triglycerides": 0.003,
    "hdl_cholesterol": -0.02,
    "family_history": 0.6,
    "physical_activity_hours": -0.08,
    "smoking=former": 0.1,
    "smoking=current": 0.35,
}
RISK = LinearTerms(
    intercept=-2.95,
    coefficients=_COEFFICIENTS,
    centers={
        "age": 50.0,
        "bmi": 28.0,
        "waist_cm": 92.0,
        "fasting_glucose": 95.0,
        "hba1c": 5.4,
        "systolic_bp": 125.0,
        "triglycerides": 130.0,
        "hdl_cholesterol": 55.0,
        "physical_activity_hours": 3.0,
    },
    # At full concept shift glycaemia predicts onset the wrong way round, family history
    # stops mattering and adiposity predicts it twice as strongly; the intercept keeps the
    # prevalence in the same range, so the shift does not show in the positive rate alone.
    shifted_intercept=-2.35,
    shifted_coefficients={
        **_COEFFICIENTS,
        "age": -0.03,
        "sex=M": -0.3,
        "bmi": 0.12,
        "waist_cm": 0.04,
        "fasting_glucose": -0.03,
        "hba1c": -0.8,
        "triglycerides": 0.008,
        "family_history": 0.0,
        "physical_activity_hours": 0.05,
    },
)
RISK_PATIENT_NOISE_SD = 0.4
RISK_VISIT_NOISE_SD = 0.3

_SECONDS_PER_YEAR = 365.25 * 24 * 3600


def finish_column(col: str, x: np.ndarray) -> np.ndarray:
    """Round to the column's precision and clip into its config range (age: whole years)."""
    return finish_numeric(x, NUMERIC_RANGES[col], DECIMALS.get(col))


def _patients(rp: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Stable per-patient traits (see the module doc for every formula)."""
    male = rp.random(n) < 0.48
    eth = categorical(rp, np.tile(np.log(_ETHNICITY_SHARES), (n, 1)))
    black, hispanic, asian = eth == 1, eth == 2, eth == 3
    age0 = np.clip(rp.normal(50.0, 13.0, n), 18.0, 92.0)
    a50 = age0 - 50.0
    family = rp.random(n) < sigmoid(-1.2 + 0.2 * black + 0.25 * hispanic + 0.3 * asian)
    zeros = np.zeros(n)
    smoking = categorical(
        rp,
        np.column_stack([zeros, -0.9 + 0.03 * a50 + 0.2 * male, -1.3 - 0.02 * a50 + 0.3 * male]),
    )
    bmi0 = np.exp(rp.normal(math.log(28.0), 0.17, n)) + 0.03 * a50
    bmi0 = np.clip(bmi0 + 0.8 * black + 0.6 * hispanic - 1.5 * asian, 16.0, 60.0)
    activity0 = (
        rp.gamma(1.6, 2.2, n)
        * np.exp(-0.04 * (bmi0 - 28.0) - 0.01 * a50)
        * np.where(smoking == 2, 0.75, 1.0)
    )
    ir = (
        0.8 * rp.normal(0.0, 1.0, n)
        + 0.08 * (bmi0 - 28.0)
        + 0.4 * family
        + 0.15 * asian
        + 0.1 * hispanic
        - 0.05 * (activity0 - 3.0)
    )
    return {
        "male": male, "eth": eth, "age0": age0, "family": family, "smoking": smoking,
        "bmi0": bmi0, "activity0": activity0, "ir": ir,
        "waist_off": rp.normal(0.0, 5.0, n), "gluc_off": rp.normal(0.0, 6.0, n),
        "a1c_off": rp.normal(0.0, 0.18, n), "bp_off": rp.normal(0.0, 10.0, n),
        "tg_off": rp.normal(0.0, 0.3, n), "hdl_off": rp.normal(0.0, 9.0, n),
        "frailty": rp.normal(0.0, RISK_PATIENT_NOISE_SD, n),
    }  # fmt: skip


def _readings(
    rm: np.random.Generator, p: dict[str, np.ndarray], t: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-visit readings around the patient's traits (``p`` already indexed per visit)."""
    n = len(t)
    male, ir = p["male"], p["ir"]
    black, asian = p["eth"] == 1, p["eth"] == 3
    age = finish_column("age", np.floor(p["age0"] + t / _SECONDS_PER_YEAR))
    bmi = finish_column("bmi", p["bmi0"] + rm.normal(0.0, 0.5, n))
    activity = finish_column(
        "physical_activity_hours", p["activity0"] * np.exp(rm.normal(0.0, 0.3, n))
    )
    level = 92.0 + 0.7 * (bmi - 28.0) + 0.12 * (age - 50.0) + 6.0 * ir + p["gluc_off"]
    tg_log = 0.02 * (bmi - 28.0) + 0.25 * ir - 0.2 * black + 0.1 * male + p["tg_off"]
    return {
        "age": age,
        "bmi": bmi,
        "waist_cm": finish_column(
            "waist_cm",
            22.0 + 2.4 * bmi + 7.0 * male + 0.12 * (age - 50.0) + 4.0 * asian + p["waist_off"]
            + rm.normal(0.0, 1.5, n),
        ),
        "fasting_glucose": finish_column("fasting_glucose", level + rm.normal(0.0, 5.0, n)),
        "hba1c": finish_column(
            "hba1c",
            2.1 + 0.035 * level + 0.15 * ir + 0.2 * black + p["a1c_off"] + rm.normal(0, 0.08, n),
        ),
        "systolic_bp": finish_column(
            "systolic_bp",
            118.0 + 0.5 * (age - 50.0) + 0.8 * (bmi - 28.0) + 4.0 * male + 4.0 * black
            + p["bp_off"] + rm.normal(0.0, 7.0, n),
        ),
        "triglycerides": finish_column(
            "triglycerides", 125.0 * np.exp(tg_log + rm.normal(0.0, 0.15, n))
        ),
        "hdl_cholesterol": finish_column(
            "hdl_cholesterol",
            56.0 - 9.0 * male - 0.5 * (bmi - 28.0) - 3.0 * ir + 3.0 * black
            + 0.5 * (activity - 3.0) + p["hdl_off"] + rm.normal(0.0, 3.0, n),
        ),
        "physical_activity_hours": activity,
    }  # fmt: skip


def simulate(
    n_rows: int, n_patients: int, streams: list[np.random.SeedSequence], span: int
) -> tuple[Columns, np.ndarray, np.ndarray, np.ndarray]:
    """Draw the unshifted columns: visits, then traits, then readings (streams 0-2)."""
    pidx, t, p, rm = entities_at_visits(streams, n_rows, n_patients, span, _patients)
    cols: Columns = {
        **_readings(rm, p, t),
        "sex": labels_of(p["male"].astype(np.int64), CATEGORIES["sex"]),
        "family_history": p["family"].astype(bool),
        "smoking": labels_of(p["smoking"], CATEGORIES["smoking"]),
        ETHNICITY: labels_of(p["eth"], CATEGORIES[ETHNICITY]),
    }
    return cols, pidx, t, p["frailty"]


def _outcome(
    cols: Columns, frailty: np.ndarray, concept: float, rng: np.random.Generator
) -> np.ndarray:
    """Bernoulli onset from the known risk function, the patient's frailty and visit noise."""
    return bernoulli(rng, RISK.evaluate(cols, concept) + frailty, RISK_VISIT_NOISE_SD)


class Shift(BaseShift):
    """A controlled shift of the diabetes data (see :class:`BaseShift`): covariate shift of a
    numeric feature, ``prevalence`` (label shift), ``concept`` and a ``label_distortion``
    that may select its group by ``ethnicity`` as well as by a feature."""

    rules = ShiftRules.of(NUMERIC_RANGES, CATEGORIES, (*FEATURES, ETHNICITY))


DIABETES = SyntheticDataset(
    entity=ENTITY,
    timestamp=TIMESTAMP,
    label=LABEL,
    columns=(*FEATURES, ETHNICITY),
    visits_per_entity=2,
    shift_type=Shift,
    simulate=simulate,
    finish=finish_column,
    outcome=_outcome,
    pool_shares=(0.12, 0.8),
)

"""The ground truth of the built-in cohort: a known logistic risk function for its label.

``logit = RISK_INTERCEPT + sum(RISK_COEFFICIENTS[t] * x_t)`` where numeric terms are measured
from :data:`RISK_CENTERS` (e.g. ``age - 55``), booleans are 0/1 and ``column=value`` terms are
one-hot indicators (the reference levels are F, never, typical and normal). Two noise terms are
added: an unobserved per-patient frailty ~ N(0, :data:`RISK_PATIENT_NOISE_SD`) and a per-visit
N(0, :data:`RISK_VISIT_NOISE_SD`); then ``heart_disease ~ Bernoulli(sigmoid(logit))``. The
prevalence is about 39 % and the noise-free logit alone has a ROC-AUC of about 0.88, so a plain
logistic regression on one-hot features learns it well (held-out AUC about 0.88 on 10k rows).
:func:`risk_logit` evaluates the noise-free logit on any frame, so tests and docs can use the
ground truth directly.

A concept shift (``Shift(concept=...)`` in ``synthetic``) interpolates between
:data:`RISK_COEFFICIENTS` and :data:`CONCEPT_SHIFTED_COEFFICIENTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mlsteward.data.synthetic_linear import LinearTerms

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


#: The whole ground truth as one object (the other built-in datasets have the same shape).
RISK = LinearTerms(
    RISK_INTERCEPT,
    RISK_COEFFICIENTS,
    RISK_CENTERS,
    CONCEPT_SHIFTED_INTERCEPT,
    CONCEPT_SHIFTED_COEFFICIENTS,
)


def risk_coefficients(concept: float = 0.0) -> tuple[float, dict[str, float]]:
    """Intercept and coefficients of the risk function at a given concept-shift strength.

    Args:
        concept: 0 = reference (:data:`RISK_COEFFICIENTS`), 1 = fully shifted.

    Returns:
        ``(intercept, {term: coefficient})``.
    """
    return RISK.at(concept)


def risk_logit(data: Mapping[str, Any] | pd.DataFrame, concept: float = 0.0) -> np.ndarray:
    """The noise-free log-odds of heart disease for every row of ``data`` (the ground truth).

    Args:
        data: A frame (or mapping of arrays) with the feature columns.
        concept: Concept-shift strength, see :class:`mlsteward.data.synthetic.Shift`.

    Returns:
        float64 array, one log-odds per row.
    """
    return RISK.evaluate(data, concept)

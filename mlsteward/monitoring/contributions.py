"""SHAP contributions in the target's units, for models that predict through a log link.

XGBoost explains the margin: for ``count:poisson`` and ``reg:tweedie`` that is the log of the
predicted count, so a raw contribution of 0.2 means "times 1.22", which nobody reading a
length-of-stay explanation in days expects. Batch scoring and the prediction service both
restate such contributions here: each row's log-scale contributions are scaled by one factor so
that they add up, with the base value ``exp(base)``, to the prediction itself. The ranking and
signs within a row are kept; for an identity link (squared error, Huber, absolute error,
classification's log-odds) nothing changes.
"""

from __future__ import annotations

import numpy as np

from mlsteward.config.sections.training import LOG_LINK_OBJECTIVES


def has_log_link(objective: str) -> bool:
    return objective in LOG_LINK_OBJECTIVES


def in_target_units(
    contributions: np.ndarray, base_values: np.ndarray, objective: str
) -> tuple[np.ndarray, np.ndarray]:
    """Contributions and base values in the prediction's units.

    Args:
        contributions: Rows x features, on the margin scale (XGBoost's ``pred_contribs``).
        base_values: One base margin per row.
        objective: The model's objective; only a log link changes anything.

    Returns:
        ``(contributions, base_values)`` with, per row, ``base + sum(contributions)`` equal to
        the predicted value (``exp`` of the margin) for a log link; the inputs otherwise.
    """
    if not has_log_link(objective):
        return contributions, base_values
    base = np.asarray(base_values, dtype=np.float64).reshape(-1)
    raw = np.asarray(contributions, dtype=np.float64)
    total = raw.sum(axis=1)
    base_units = np.exp(base)
    gap = np.exp(base + total) - base_units
    # d exp(x) at the base when the contributions cancel out: the first-order scale
    tiny = np.abs(total) < 1e-12
    scale = np.where(tiny, base_units, gap / np.where(tiny, 1.0, total))
    return raw * scale[:, None], base_units

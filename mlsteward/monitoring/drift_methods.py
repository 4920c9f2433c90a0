"""Which drift test a column gets, by its kind and by how many rows each side has.

A distance with a fixed threshold (Wasserstein normed at 0.1) judges a sample of a few hundred
rows by its sampling noise: an unshifted 319-row window against an 80-row reference scores
about 0.1 on most numeric columns, so half of them "drift". A p-value test allows for the
sample size instead. Evidently's own default (``_get_default_stattest``) therefore switches on
the sample size: p-value tests up to 1,000 rows, distances above. ``auto`` does the same, with
three differences, each for the same reason (a verdict must not depend on chance):

- the switch reads the *smaller* side's non-null rows, not the reference's alone: a small
  current window against a large reference is as noisy as the other way round;
- the p-value tests flag at ``drift.p_value`` (0.01), not Evidently's 0.05: every test flags
  that share of unshifted columns, and a drift check runs one test per column;
- more than two categories get a two-sample chi-square test of homogeneity
  (``chisquare_two_sample``) instead of Evidently's ``chisquare``, which compares the current
  counts with the reference's shares as if those were exact: with a reference no larger than
  the current window it flags unshifted columns several times more often than its p-value
  says. Two categories get Evidently's ``z`` (the same test, as a pooled two-proportion Z).

Numeric columns get K-S (``ks``) at small sizes, whatever their number of distinct values
(Evidently moves numeric columns with at most five values to chi-square; here a numeric
column stays judged in standard deviations).
"""

from __future__ import annotations

from typing import Literal

from mlsteward.config.sections.monitoring import DriftConfig

Kind = Literal["numeric", "categorical"]

AUTO = "auto"
TWO_SAMPLE_CHISQUARE = "chisquare_two_sample"

P_VALUE_METHODS = frozenset(
    {
        "ks", "chisquare", "z", "anderson", "mannw", "es", "t_test", "empirical_mmd",
        "cramer_von_mises", "fisher_exact", "g_test", "TVD", TWO_SAMPLE_CHISQUARE,
    }
)  # fmt: skip
"""Methods whose score is a p-value (drift when it is below the threshold); every other method
is a distance (drift when the score reaches the threshold)."""


def is_p_value(method: str) -> bool:
    return method in P_VALUE_METHODS


def pick_method(
    choice: str, kind: Kind, rows: int | None, categories: int | None, policy: DriftConfig
) -> str:
    """``choice`` itself, or for ``auto`` the method for this many rows on the smaller side.

    ``rows`` None (not known yet) counts as large: the distances, as before sizes were read.
    ``categories``: distinct values seen on both sides (None: more than two).
    """
    if choice != AUTO:
        return choice
    small = rows is not None and rows <= policy.small_sample_rows
    if kind == "numeric":
        return "ks" if small else "wasserstein"
    if not small:
        return "jensenshannon"
    return "z" if categories is not None and categories <= 2 else TWO_SAMPLE_CHISQUARE


def pick_threshold(
    choice: str, method: str, threshold: float | None, policy: DriftConfig
) -> float | None:
    """The threshold ``method`` is judged by: ``drift.p_value`` for the p-value test ``auto``
    chose; otherwise the configured one (None: Evidently's default for the method), which
    with ``auto`` is the distance's."""
    if choice == AUTO and is_p_value(method):
        return policy.p_value
    return threshold

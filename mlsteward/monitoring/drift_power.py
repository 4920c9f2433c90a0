"""What a drift test can see at the sample sizes it was given, and PSI beside its verdict.

A verdict of "no drift" on 80 rows says little: the test may not see a shift of half a standard
deviation. So each column's result carries its *minimum detectable shift*: the smallest shift
whose statistic, in the population, reaches the test's critical value or threshold at the
column's row counts on both sides. Such a shift is flagged at least half the time (measured:
about half for the distances, ``z`` and the chi-square tests, about 4 times in 5 for ``ks``,
whose sample statistic runs above the population's); a shift twice as large almost always.
Numeric columns: a shift of every value by that many standard deviations of the reference.
Categorical columns: a rise of one category's share by that much (the other categories
shrinking in proportion), the smallest over the reference's categories (a rare category's
share is the most sensitive).

How, per method:

- ``ks``: analytic. The two-sample critical value ``c(a) * sqrt((n + m) / (n m))`` with
  ``c(a) = sqrt(-ln(a / 2) / 2)``, against the K-S statistic of the reference's own distribution
  shifted by ``s`` (its shape as measured, each value read as rounded to its grid);
- ``wasserstein`` (normed by the reference's SD): a shift of ``s`` SDs moves the distance by
  exactly ``s``, so the threshold itself; sampling noise only adds to the score;
- ``z`` and ``chisquare_two_sample``: analytic, the non-centrality whose chi-square statistic
  reaches the critical value half the time (``z`` is the two-category case, df 1);
- ``jensenshannon`` (categorical): the change whose distance equals the threshold;
- any other method: a small seeded simulation with the method itself (:func:`simulated_shift`,
  given by the caller that holds the method), or nothing for the permutation tests, whose single
  run already costs what a simulation may (``UNSIMULATED``).

PSI (population stability index) is recorded beside every verdict and never changes it: bins
from the reference's deciles (numeric) or the categories of both sides, each share floored at
``EPSILON`` so an empty bin counts instead of dividing by zero. All of it is vectorised numpy: a
million rows cost a few milliseconds per column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2, ncx2

from mlsteward.monitoring.drift_methods import TWO_SAMPLE_CHISQUARE, is_p_value
from mlsteward.monitoring.drift_result import ColumnDriftResult

EPSILON = 1e-4
"""The smallest share a PSI bin counts with (an empty bin would make PSI infinite)."""
DECILES = np.linspace(0.1, 0.9, 9)
QUANTILE_ROWS = 100_000
"""Reference values the PSI deciles are read from at most (evenly strided above it)."""
MAX_SHIFT_SD = 10.0
"""Numeric shifts are looked for up to this many SDs; beyond, the test sees none."""
SHAPE_POINTS = 20_000
"""Reference values (evenly spaced in sorted order) that describe its shape for K-S."""
SIMULATED_ROWS = 5_000
"""Rows per side in a simulation; beyond it a p-value test's answer is scaled by sqrt(n)."""
REPLICATES = 9
UNSIMULATED = frozenset({"TVD", "empirical_mmd", "fisher_exact"})
"""Not simulated: the permutation tests (TVD: 1,000 permutations in Python; empirical_mmd: a
kernel matrix over both sides, 100 permutations) and Fisher's test (equal sizes only)."""

Flags = Callable[[np.ndarray, np.ndarray], bool]
"""``(reference sample, current sample) -> drifted``: the method itself, at its threshold."""

ANALYTIC = {
    "numeric": frozenset({"ks", "wasserstein"}),
    "categorical": frozenset({"z", TWO_SAMPLE_CHISQUARE, "jensenshannon"}),
}


# -- PSI -------------------------------------------------------------------------------------
def category_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per category seen on either side (nulls left out): the count on each side."""
    if isinstance(reference.dtype, pd.CategoricalDtype) and reference.dtype == current.dtype:
        k = len(reference.dtype.categories)  # shared categories: the codes mean the same
        counts = []
        for side in (reference, current):
            codes = side.cat.codes.to_numpy()
            counts.append(np.bincount(codes[codes >= 0], minlength=k))
        return counts[0], counts[1]
    if reference.dtype == bool and current.dtype == bool:  # numpy bools, no nulls: counted
        r, c = np.count_nonzero(reference.to_numpy()), np.count_nonzero(current.to_numpy())
        return np.array([len(reference) - r, r]), np.array([len(current) - c, c])
    r_counts, c_counts = reference.value_counts(dropna=True), current.value_counts(dropna=True)
    keys = r_counts.index.union(c_counts.index, sort=False)
    return (
        r_counts.reindex(keys, fill_value=0).to_numpy(np.int64),
        c_counts.reindex(keys, fill_value=0).to_numpy(np.int64),
    )


def _numeric(series: pd.Series) -> np.ndarray:
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def _psi_of(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float | None:
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return None
    r = np.maximum(ref_counts / ref_counts.sum(), EPSILON)
    c = np.maximum(cur_counts / cur_counts.sum(), EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin ``[edge i-1, edge i)`` (open at both ends): one comparison pass per edge,
    several times faster than ``searchsorted`` on a million rows with nine edges."""
    below = [np.count_nonzero(values < e) for e in edges]
    return np.diff(np.concatenate([[0], below, [len(values)]]))


def psi(
    reference: pd.Series,
    current: pd.Series,
    kind: str,
    counts: tuple[np.ndarray, np.ndarray] | None = None,
) -> float | None:
    """PSI of one column (None when a side has no values): numeric in the reference's decile
    bins (ties merge bins; above ``QUANTILE_ROWS`` values, the deciles of an evenly strided
    subset of them), categorical per category (``counts``: :func:`category_counts`, when the
    caller has them)."""
    if kind == "categorical":
        return _psi_of(*(counts or category_counts(reference, current)))
    r, c = _numeric(reference), _numeric(current)
    if len(r) == 0 or len(c) == 0:
        return None
    step = max(1, len(r) // QUANTILE_ROWS)
    edges = np.unique(np.quantile(r[::step], DECILES))
    return _psi_of(_bin_counts(r, edges), _bin_counts(c, edges))


# -- minimum detectable shift ----------------------------------------------------------------
def min_detectable_shift(
    method: str,
    kind: str,
    threshold: float,
    reference: pd.Series,
    n_ref: int,
    n_cur: int,
    ref_counts: np.ndarray | None = None,
    flags: Flags | None = None,
) -> float | None:
    """The shift ``method`` at ``threshold`` flags at least half the time with ``n_ref`` and
    ``n_cur`` rows (see the module's docstring): reference SDs (numeric) or one category's
    share (categorical).

    ``ref_counts``: the reference's count per category (categorical; from
    :func:`category_counts`). ``flags``: the method itself, for a simulation when no formula
    applies. None: no shift up to ``MAX_SHIFT_SD`` (or the whole share) is flagged, or the
    method is neither analytic nor simulated (:func:`how_detectable`).
    """
    if n_ref < 1 or n_cur < 1:
        return None
    if kind == "numeric":
        values = _numeric(reference)
        if method == "ks":
            return _ks_shift(values, n_ref, n_cur, threshold)
        if method == "wasserstein":
            return threshold
        if flags is None or method in UNSIMULATED or len(values) < 2:
            return None
        return simulated_shift(flags, values, None, n_ref, n_cur, is_p_value(method))
    if ref_counts is None or ref_counts.sum() == 0:
        return None
    shares = ref_counts / ref_counts.sum()
    if method in ("z", TWO_SAMPLE_CHISQUARE):
        return _chisquare_shift(shares, len(shares) - 1, n_ref, n_cur, threshold)
    if method == "jensenshannon":
        return _js_shift(shares, threshold)
    if flags is None or method in UNSIMULATED:
        return None
    return simulated_shift(flags, None, shares, n_ref, n_cur, is_p_value(method))


def how_detectable(method: str, kind: str) -> str | None:
    """ "analytic", "simulated", or None when no minimum detectable shift is computed."""
    if method in ANALYTIC.get(kind, ()):
        return "analytic"
    return None if method in UNSIMULATED else "simulated"


def _shape(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The reference's CDF at its distinct values (up to ``SHAPE_POINTS`` evenly spaced in
    sorted order), linear in between and from one step below the lowest value: values rounded
    to a grid read as the continuous quantity they round. Without that a pile of equal values
    (many zeros) would make any shift at all, moving the whole pile, look detectable. None for
    a single value (a constant has no SD to shift by)."""
    x = np.sort(values)
    if len(x) > SHAPE_POINTS:
        x = x[np.linspace(0, len(x) - 1, SHAPE_POINTS).round().astype(np.int64)]
    v, counts = np.unique(x, return_counts=True)
    if len(v) < 2:
        return None
    below = v[0] - (v[1] - v[0])
    return np.concatenate([[below], v]), np.concatenate([[0.0], np.cumsum(counts) / len(x)])


def _ks_shift(values: np.ndarray, n_ref: int, n_cur: int, alpha: float) -> float | None:
    critical = math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n_ref + n_cur) / (n_ref * n_cur))
    shape = _shape(values) if critical < 1 else None
    if shape is None:
        return None
    v, cdf = shape
    sd = float(np.std(values))

    def statistic(s: float) -> float:
        x = np.concatenate([v, v + s])
        f = np.interp(x, v, cdf, left=0.0, right=1.0)
        moved = np.interp(x - s, v, cdf, left=0.0, right=1.0)
        return float(np.max(f - moved))

    hi = MAX_SHIFT_SD * sd
    if statistic(hi) < critical:
        return None
    lo = 0.0
    for _ in range(60):  # bisection: the statistic never falls as the shift grows
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if statistic(mid) >= critical else (mid, hi)
        if hi - lo < 1e-4 * sd:
            break
    return hi / sd


def _moved(shares: np.ndarray, c: int, delta: float) -> np.ndarray:
    """Category ``c``'s share up by ``delta``, the others shrinking in proportion."""
    rest = 1.0 - shares[c]
    q = shares * ((rest - delta) / rest) if rest > 0 else shares.copy()
    q[c] = shares[c] + delta
    return q


def _smallest_rise(shares: np.ndarray, reached: Callable[[np.ndarray], float]) -> float | None:
    """The smallest rise of one category's share at which ``reached`` (negative below the
    test's line, positive above) crosses zero, over the categories the reference has."""
    best: float | None = None
    for c in np.flatnonzero((shares > 0) & (shares < 1)):
        room = 1.0 - float(shares[c])
        if reached(_moved(shares, int(c), room)) <= 0:
            continue
        delta = float(brentq(lambda d, c=c: reached(_moved(shares, int(c), d)), 0.0, room))
        best = delta if best is None else min(best, delta)
    return best


def _chisquare_shift(
    shares: np.ndarray, df: int, n_ref: int, n_cur: int, alpha: float
) -> float | None:
    if df < 1:
        return None
    critical = float(chi2.isf(alpha, df))
    # the non-centrality whose statistic reaches the critical value half the time
    target = float(brentq(lambda lam: ncx2.ppf(0.5, df, lam) - critical, 1e-9, 1e4))
    harmonic = n_ref * n_cur / (n_ref + n_cur)

    def reached(q: np.ndarray) -> float:
        pooled = (n_ref * shares + n_cur * q) / (n_ref + n_cur)
        keep = pooled > 0
        lam = harmonic * float(np.sum((shares[keep] - q[keep]) ** 2 / pooled[keep]))
        return lam - target

    return _smallest_rise(shares, reached)


def _js_shift(shares: np.ndarray, threshold: float) -> float | None:
    return _smallest_rise(shares, lambda q: float(jensenshannon(shares, q)) - threshold)


def simulated_shift(
    flags: Flags,
    values: np.ndarray | None,
    shares: np.ndarray | None,
    n_ref: int,
    n_cur: int,
    p_value: bool,
    seed: int = 0,
) -> float | None:
    """The median over ``REPLICATES`` seeded draws of the smallest shift ``flags`` flags.

    Both sides are drawn from the reference (its values, or its shares as category codes
    0..k-1), with ``n_ref`` and ``n_cur`` rows up to ``SIMULATED_ROWS``; each draw is shifted
    along a geometric grid, searched by bisection (the same draw at every shift, so the answer
    moves with the shift, not the noise). Above ``SIMULATED_ROWS`` a p-value test's shift is
    scaled by the square root of the effective sizes' ratio (how a location test's resolution
    grows); a distance's is kept, the noise it reads being smaller with more rows.
    """
    rng = np.random.default_rng(seed)
    n_r, n_c = min(n_ref, SIMULATED_ROWS), min(n_cur, SIMULATED_ROWS)
    draws: Callable[[], tuple[np.ndarray, Callable[[float], np.ndarray]]]
    if values is not None:
        sd = float(np.std(values))
        if not sd > 0:
            return None
        grid = np.geomspace(0.01, MAX_SHIFT_SD, 31)
        draws = partial(_numeric_draws, rng, values, sd, n_r, n_c)
    else:
        assert shares is not None
        target = int(np.argmax(np.abs(shares - 0.5) * (shares > 0)))  # rarest, or most common
        room = 1.0 - float(shares[target])
        if room <= 0:
            return None
        grid = np.geomspace(min(1e-3, room), room, 31)
        draws = partial(_category_draws, rng, shares, target, n_r, n_c)
    found = [_smallest_flagged(flags, *draws(), grid) for _ in range(REPLICATES)]
    shift = float(np.median(found))
    if not math.isfinite(shift):
        return None
    if p_value and (n_r, n_c) != (n_ref, n_cur):
        shift *= math.sqrt((n_r * n_c / (n_r + n_c)) / (n_ref * n_cur / (n_ref + n_cur)))
    return shift


def _numeric_draws(
    rng: np.random.Generator, values: np.ndarray, sd: float, n_r: int, n_c: int
) -> tuple[np.ndarray, Callable[[float], np.ndarray]]:
    """A reference draw, and a current draw shifted by ``g`` SDs (the same rows at every g)."""
    ref, base = rng.choice(values, n_r), rng.choice(values, n_c)
    return ref, lambda g: base + g * sd


def _category_draws(
    rng: np.random.Generator, shares: np.ndarray, target: int, n_r: int, n_c: int
) -> tuple[np.ndarray, Callable[[float], np.ndarray]]:
    """Category codes drawn from ``shares``, and a current draw with ``target``'s share up by
    ``g`` (the same uniforms at every g)."""
    ref = np.searchsorted(np.cumsum(shares)[:-1], rng.random(n_r), side="right")
    u = rng.random(n_c)

    def draw(g: float) -> np.ndarray:
        return np.searchsorted(np.cumsum(_moved(shares, target, g))[:-1], u, side="right")

    return ref, draw


def _smallest_flagged(
    flags: Flags, ref: np.ndarray, draw: Callable[[float], np.ndarray], grid: np.ndarray
) -> float:
    """The smallest shift ``flags`` flags for one draw (inf: not even the grid's largest):
    bisection over the grid, then three steps between its two neighbours (to about 3%)."""
    if not flags(ref, draw(float(grid[-1]))):
        return math.inf
    lo, hi = -1, len(grid) - 1  # grid[hi] is flagged; grid[lo] (if any) is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if flags(ref, draw(float(grid[mid]))) else (mid, hi)
    if lo < 0:
        return float(grid[0])
    low, high = float(grid[lo]), float(grid[hi])
    for _ in range(3):
        between = math.sqrt(low * high)
        low, high = (low, between) if flags(ref, draw(between)) else (between, high)
    return high


# -- in words ----------------------------------------------------------------------------------
def sensitivity_lines(columns: Iterable[ColumnDriftResult]) -> list[str]:
    """One sentence per column: the test, its threshold and row counts, the smallest shift it
    flags at least half the time, and the PSI recorded beside it; so "no drift" on a few dozen
    rows is read as "nothing this large", not as "nothing"."""
    lines = []
    for c in columns:
        rule = f"p < {c.threshold:.3g}" if is_p_value(c.method) else f"score >= {c.threshold:.3g}"
        sizes = (
            f" on {c.reference_rows:,} reference and {c.current_rows:,} current rows"
            if c.reference_rows is not None and c.current_rows is not None
            else ""
        )
        shift = c.min_detectable_shift
        if shift is not None and c.kind == "numeric":
            sees = f"sees a shift of {shift:.3g} reference SDs (flagged at least half the time)"
        elif shift is not None:
            sees = (
                f"sees a rise of {shift:.3g} in one category's share "
                "(flagged at least half the time)"
            )
        elif how_detectable(c.method, c.kind) is None:
            sees = f"no minimum detectable shift is computed for {c.method}"
        else:
            sees = "sees no shift at these sizes" + (
                f" (up to {MAX_SHIFT_SD:g} SDs)" if c.kind == "numeric" else ""
            )
        psi_text = f"; PSI {c.psi:.3g}" if c.psi is not None else ""
        lines.append(f"{c.column}: {c.method} ({rule}){sizes} {sees}{psi_text}")
    return lines

"""Draws every built-in dataset makes the same way: visits of entities over a time window,
category codes from logits, binary outcomes from log-odds, readings rounded like an instrument.

Why shared: the built-in datasets differ in what they measure, not in how a seeded generator
turns a window into visits or log-odds into labels; one copy of each keeps their behaviour (and
the tests that pin it) the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise: log-odds to probabilities."""
    return 1.0 / (1.0 + np.exp(-x))


def categorical(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Vectorised multinomial-logit draw: one category code per row of ``logits`` (n, k)."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    u = rng.random(len(logits)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), logits.shape[1] - 1)


def labels_of(codes: np.ndarray, levels: tuple[str, ...]) -> np.ndarray:
    """Category codes as their string levels (object array, the config's categories)."""
    return np.asarray(levels, dtype=object)[codes]


def bernoulli(rng: np.random.Generator, logit: np.ndarray, visit_noise_sd: float) -> np.ndarray:
    """0/1 outcomes from log-odds plus per-visit noise ~ N(0, ``visit_noise_sd``): the same
    person is not equally likely to be labelled at every visit."""
    noisy = logit + rng.normal(0.0, visit_noise_sd, len(logit))
    return (rng.random(len(logit)) < sigmoid(noisy)).astype(np.int64)


def finish_numeric(x: np.ndarray, bounds: tuple[float, float], decimals: int | None) -> np.ndarray:
    """Round as the instrument reports (``decimals`` None: a whole-number int column) and clip
    into the config's range, so generated data passes the contract with zero bad rows."""
    lo, hi = bounds
    if decimals is None:
        return np.clip(np.rint(x), lo, hi).astype(np.int64)
    return np.clip(np.round(x, decimals), lo, hi).astype(np.float64)


def unique_times(pidx: np.ndarray, t: np.ndarray, span: int) -> np.ndarray:
    """Move same-second visits of one entity on by a second until every pair is unique."""
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


def draw_visits(
    rv: np.random.Generator, n_rows: int, n_entities: int, span: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every entity at least once, the rest uniformly; uniform whole-second times.

    Returns:
        ``(entity_index, seconds_from_start)``, one per row; ``(entity, second)`` is unique.
    """
    pidx = np.concatenate(
        [np.arange(n_entities), rv.integers(0, n_entities, n_rows - n_entities)]
    ).astype(np.int64)
    return pidx, unique_times(pidx, rv.integers(0, span, n_rows), span)


def entities_at_visits(
    streams: list[np.random.SeedSequence],
    n_rows: int,
    n_entities: int,
    span: int,
    traits: Callable[[np.random.Generator, int], dict[str, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.random.Generator]:
    """Visits (stream 0), each entity's stable traits (stream 1, one value per entity) repeated
    for each of its rows, and the generator for per-visit draws (stream 2).

    Returns:
        ``(entity_index, seconds_from_start, traits_per_row, visit_rng)``.
    """
    rv, rp, rr = (np.random.default_rng(s) for s in streams[:3])
    pidx, t = draw_visits(rv, n_rows, n_entities, span)
    per_row = {k: v[pidx] for k, v in traits(rp, n_entities).items()}
    return pidx, t, per_row, rr

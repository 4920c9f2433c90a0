"""How every built-in dataset becomes a frame: visits in a window, shifts, outcome, layout.

A dataset (:class:`SyntheticDataset`) says what it measures -- how its entities and their
readings are drawn, how its outcome follows from them, its columns -- and this module does the
rest the same way for all of them, in this order: covariate shift of the features, outcome from
the (possibly concept-shifted) ground truth, label distortion, label-shift resampling, then ids,
event times and sorting. Each stage draws from its own stream of one seeded
:class:`numpy.random.SeedSequence`, so the same seed always gives the same frame and a shift
changes only what it is meant to change: the same seed with and without a concept shift gives
identical features.

Streams: 0-3 the dataset's own draws (visits, entities, readings, ...), 4 the outcome,
5 the label distortion, 6 the label-shift resampling, 7 spare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlsteward.data.synthetic_shift import BaseShift, distort_label, pick_mean, pick_prevalence

DEFAULT_START = "2024-01-01"
DEFAULT_MONTHS = 18
#: The day the default 18-month reference window ends: the natural start of a monitoring batch.
DEFAULT_BATCH_START = "2025-07-01"
#: Batch entities are new entities: their ids start far above any reference cohort's.
BATCH_ID_OFFSET = 1_000_000_000
N_STREAMS = 8

Columns = dict[str, np.ndarray]


#: Draws the unshifted features: ``(n_rows, n_entities, streams, span)`` ->
#: ``(columns, entity_index, seconds_from_start, latent)``, ``latent`` an unobserved per-row
#: term the outcome adds (e.g. a patient's frailty).
Simulate = Callable[
    [int, int, list[np.random.SeedSequence], int],
    tuple[Columns, np.ndarray, np.ndarray, np.ndarray],
]
#: Draws every row's outcome: ``(columns, latent, concept, rng)`` -> outcome array.
Outcome = Callable[[Columns, np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class SyntheticDataset:
    """One built-in dataset: what it measures, and the public ways to draw it.

    Attributes:
        entity, timestamp, label: Column names (the config's ``source`` and ``label``).
        columns: The data columns between timestamp and label, in the config's order: the
            features, then sensitive columns that are not features.
        visits_per_entity: Rows per entity on average (``n_entities = ceil(n_rows / this)``).
        shift_type: The dataset's ``Shift`` (a :class:`BaseShift` bound to its columns).
        simulate: Draws the unshifted features.
        finish: Rounds and clips one numeric column into its config range (after a shift).
        outcome: Draws the outcome.
        pool_shares: Binary labels: the smallest positive and negative shares an unshifted
            sample has, which sizes the pool prevalence resampling draws from.
    """

    entity: str
    timestamp: str
    label: str
    columns: tuple[str, ...]
    visits_per_entity: int
    shift_type: type[BaseShift]
    simulate: Simulate
    finish: Callable[[str, np.ndarray], np.ndarray]
    outcome: Outcome
    pool_shares: tuple[float, float] = (0.35, 0.55)

    def generate_cohort(
        self,
        n_rows: int = 50_000,
        seed: int = 0,
        start: str | pd.Timestamp = DEFAULT_START,
        months: int = DEFAULT_MONTHS,
        shift: BaseShift | None = None,
        id_offset: int = 0,
    ) -> pd.DataFrame:
        """The reference cohort: ``n_rows`` rows of about ``n_rows / visits_per_entity``
        entities over ``months`` calendar months from ``start`` (naive times are UTC).

        Returns:
            A frame with the entity, timestamp, data columns and label, sorted by time then
            entity, with a fresh RangeIndex; entity ids are ``id_offset + 1 ...``.
        """
        begin, end = window(start, months, "months")
        return self._generate(n_rows, seed, begin, end, shift, id_offset)

    def generate_batch(
        self,
        n_rows: int = 5_000,
        seed: int = 1,
        start: str | pd.Timestamp = DEFAULT_BATCH_START,
        days: int = 30,
        shift: BaseShift | None = None,
        id_offset: int = BATCH_ID_OFFSET,
    ) -> pd.DataFrame:
        """A later batch of new entities (ids above ``id_offset``) over ``days`` days from
        ``start``; shaped exactly like :meth:`generate_cohort`'s frame. Use a seed other than
        the cohort's, or the batch replays it."""
        begin, end = window(start, days, "days")
        return self._generate(n_rows, seed, begin, end, shift, id_offset)

    # -- the shared steps ------------------------------------------------------------------------
    def _labelled_pool(
        self,
        n_rows: int,
        n_entities: int,
        streams: list[np.random.SeedSequence],
        span: int,
        shift: BaseShift,
    ) -> tuple[Columns, np.ndarray, np.ndarray]:
        """Features with covariate shift applied, then the outcome (concept, distortion)."""
        cols, pidx, t, latent = self.simulate(n_rows, n_entities, streams, span)
        for col, k in shift.covariate.items():
            x = cols[col]
            cols[col] = self.finish(col, x + float(k) * float(np.std(x)))
        y = self.outcome(cols, latent, shift.concept, np.random.default_rng(streams[4]))
        if shift.label_distortion is not None:
            y = distort_label(y, cols, shift.label_distortion, np.random.default_rng(streams[5]))
        cols[self.label] = y
        return cols, pidx, t

    def _resampled(
        self,
        n_rows: int,
        n_entities: int,
        streams: list[np.random.SeedSequence],
        span: int,
        shift: BaseShift,
    ) -> tuple[Columns, np.ndarray, np.ndarray]:
        """Label shift: draw a big enough pool, then pick rows to the target (see
        :mod:`mlsteward.data.synthetic_shift`); a pool too small is drawn again, twice as big."""
        if shift.prevalence is not None:
            target = float(shift.prevalence)
            pos, neg = self.pool_shares
            factor = 1.3 * max(target / pos, (1.0 - target) / neg, 1.0)
        else:
            target = float(shift.outcome_scale or 1.0)
            factor = 4.0 * max(target, 1.0 / target)
        while True:
            pool = math.ceil(n_rows * factor) + 200
            cols, pidx, t = self._labelled_pool(pool, n_entities, streams, span, shift)
            rng = np.random.default_rng(streams[6])
            pick = pick_prevalence if shift.prevalence is not None else pick_mean
            keep = pick(cols[self.label], n_rows, target, rng)
            if keep is not None:
                return {c: v[keep] for c, v in cols.items()}, pidx[keep], t[keep]
            factor *= 2

    def _generate(
        self,
        n_rows: int,
        seed: int,
        start: pd.Timestamp,
        end: pd.Timestamp,
        shift: BaseShift | None,
        id_offset: int,
    ) -> pd.DataFrame:
        if int(n_rows) < 1:
            raise ValueError(f"n_rows must be at least 1, got {n_rows}")
        n_rows = int(n_rows)
        span = int((end - start).total_seconds())
        if span < 1:
            raise ValueError(f"the time window {start} .. {end} is empty")
        shift = shift or self.shift_type()
        if not isinstance(shift, self.shift_type):
            raise ValueError(
                f"a shift of {type(shift).__module__} cannot shift the {self.label} data: "
                f"use {self.shift_type.__module__}.Shift"
            )
        streams = np.random.SeedSequence(int(seed)).spawn(N_STREAMS)
        n_entities = max(1, math.ceil(n_rows / self.visits_per_entity))

        if shift.label_shift is None:
            cols, pidx, t = self._labelled_pool(n_rows, n_entities, streams, span, shift)
        else:
            cols, pidx, t = self._resampled(n_rows, n_entities, streams, span, shift)

        entity_id = (int(id_offset) + 1 + pidx).astype(np.int64)
        micros = start.value // 1_000 + t.astype(np.int64) * 1_000_000
        order = np.lexsort((entity_id, micros))
        timestamps = pd.Series(micros[order].astype("datetime64[us]")).dt.tz_localize("UTC")
        frame = pd.DataFrame({self.entity: entity_id[order], self.timestamp: timestamps})
        for col in (*self.columns, self.label):
            frame[col] = cols[col][order]
        return frame


def window(start: str | pd.Timestamp, length: int, unit: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, start + length unit)`` in UTC; ``unit`` is calendar ``months`` or ``days``."""
    if int(length) < 1:
        raise ValueError(f"{unit} must be at least 1, got {length}")
    begin = to_utc(start)
    step = pd.DateOffset(months=int(length)) if unit == "months" else pd.Timedelta(days=int(length))
    return begin, begin + step


def to_utc(ts: str | pd.Timestamp) -> pd.Timestamp:
    """A window bound in UTC, whole seconds; naive times are taken as UTC."""
    out = pd.Timestamp(ts)
    out = out.tz_localize("UTC") if out.tz is None else out.tz_convert("UTC")
    return out.floor("s")

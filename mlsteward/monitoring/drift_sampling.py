"""Cutting large drift windows down to size, and saying in plain words which rows were compared.

A side larger than ``cfg.drift.max_rows`` is sampled (seeded, stratified by the label when
present: by class, or by quantile bins of a regression model's numeric outcome); a
prediction-log window may already arrive pre-sampled by
:func:`mlsteward.monitoring.window_sample.sample_window`, and the record then says how both
cuts were drawn. ``sampling_lines`` turns that record into the sentences the HTML report, the
Prefect artifact and the model card show; ``reference_lines`` says what the reference is (the
champion's holdout, or its training window when the holdout is small) and why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILE_STRATA = 10
"""Strata of a numeric outcome: its deciles (a stratum per distinct value would be one per row)."""


def _strata(values: pd.Series, quantiles: int | None) -> np.ndarray:
    """Stratum codes 0..k-1: each distinct value, or with ``quantiles`` the value's quantile
    bin (ties merge bins; a missing outcome is a stratum of its own either way)."""
    if quantiles is None:
        codes, _ = pd.factorize(values, use_na_sentinel=False)
        return np.asarray(codes)
    bins = pd.qcut(values, q=quantiles, labels=False, duplicates="drop")
    known = bins.notna().to_numpy()
    codes = np.zeros(len(values), dtype=np.int64)
    codes[known] = bins[known].to_numpy(dtype=np.int64)
    codes[~known] = codes[known].max() + 1 if known.any() else 0
    return np.unique(codes, return_inverse=True)[1]


def sample_side(
    frame: pd.DataFrame,
    max_rows: int,
    seed: int,
    side: str,
    label: str | None,
    *,
    quantiles: int | None = None,
) -> tuple[pd.DataFrame, dict | None]:
    """A seeded random sample of ``max_rows`` rows, stratified by ``label`` when present: by
    its values (a class label), or with ``quantiles`` by its quantile bins (a numeric outcome)."""
    n = len(frame)
    if n <= max_rows:
        return frame, None
    rng = np.random.default_rng([seed, 0 if side == "reference" else 1])
    if label is not None and label in frame.columns:
        codes = _strata(frame[label], quantiles)
        counts = np.bincount(codes)
        exact = counts * (max_rows / n)
        take = np.floor(exact).astype(np.int64)
        # largest remainders get the rows that flooring left over
        for g in np.argsort(-(exact - take), kind="stable")[: max_rows - int(take.sum())]:
            take[g] += 1
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        parts = [
            rng.choice(order[s : s + c], size=k, replace=False)
            for s, c, k in zip(starts, counts, take, strict=True)
        ]
        idx = np.sort(np.concatenate(parts))
        method = (
            f"stratified by {label}"
            if quantiles is None
            else f"stratified by {quantiles} quantile bins of {label}"
        )
    else:
        idx = np.sort(rng.choice(n, size=max_rows, replace=False))
        method = "uniform random"
    info = {"rows_before": n, "rows_after": len(idx), "method": method, "seed": seed}
    return frame.iloc[idx], info


def with_presample(
    info: dict | None, rows: int, seed: int, presample: dict, window_rows: int
) -> dict:
    """The final cut's record (``info``, None when it kept every row) on top of the reader's
    pre-sample, so one entry says: the window's rows, how the pre-sample was drawn, the cut."""
    base = info or {"rows_before": rows, "rows_after": rows, "method": "every row", "seed": seed}
    drawn = {k: presample[k] for k in ("rows", "rate", "seed", "key", "method") if k in presample}
    return {"rows_in_window": window_rows, "presample": drawn, **base}


def sampling_lines(sampling: dict, rows: dict[str, int] | None = None) -> list[str]:
    """One plain sentence per side saying how many rows were compared out of how many, and how
    they were drawn: the line the HTML report, the Prefect artifact and the model card show, so
    a reader never takes a sample's statistics for the whole window's."""
    lines = []
    for side in ("reference", "output_reference", "current", "current_labelled"):
        info = sampling.get(side)
        if not isinstance(info, dict):
            continue
        name = side.replace("_", " ")
        after = int(info.get("rows_after", 0))
        cut = f"{info.get('method', '?')}, seed {info.get('seed', '?')}"
        pre = info.get("presample")
        if isinstance(pre, dict):
            rate = pre.get("rate")
            how = f"rate {rate:.4g}, " if isinstance(rate, int | float) else ""
            lines.append(
                f"{name}: {after:,} of {int(info.get('rows_in_window', 0)):,} rows; seeded "
                f"pre-sample of {int(pre.get('rows', 0)):,} read from the log ({how}seed "
                f"{pre.get('seed', '?')}, key: {pre.get('key', '?')}), then sample ({cut})"
            )
        else:
            lines.append(
                f"{name}: {after:,} of {int(info.get('rows_before', 0)):,} rows, "
                f"seeded sample ({cut})"
            )
    if not lines and rows:
        counts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in rows.items())
        lines.append(f"no sampling: every row compared ({counts})")
    return lines


def reference_lines(reference: dict) -> list[str]:
    """What the features and the outcome were compared with, and what the model's output and
    the quality were compared with when that differs, from a result's ``reference`` record
    (:meth:`mlsteward.monitoring.drift_reference.DriftReference.info`); none for an empty one."""
    if not reference:
        return []
    rows = int(reference.get("rows", 0))
    what = reference.get("what") or reference.get("source", "?")
    lines = [f"features and outcome: {what}, {rows:,} rows"]
    if reference.get("why"):
        lines[0] += f" ({reference['why']})"
    held = reference.get("holdout_rows")
    if reference.get("source") != "holdout" and isinstance(held, int):
        lines.append(
            f"model output and quality: the holdout's {held:,} rows with out-of-sample predictions"
        )
    return lines

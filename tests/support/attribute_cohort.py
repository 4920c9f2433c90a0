"""A small cohort whose sensitive columns are not model inputs, for either task.

``region`` (a declared category) and ``age_years`` (type left to inference, cut into buckets)
are what the fairness gate groups by; the model trains on ``income``, ``visits`` and ``plan``
alone. The label depends on the features only, so a model that never sees the sensitive
columns loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlsteward.config.models import ModelConfig

Task = Literal["classification", "regression"]
FEATURES = ["income", "visits", "plan"]
ATTRIBUTES = ["region", "age_years"]
REGIONS = ["north", "south", "west"]


def config_doc(task: Task, source: Path | str, name: str = "members") -> dict[str, Any]:
    """The model's config as its YAML would say it (``count:poisson`` for regression)."""
    doc: dict[str, Any] = {
        "name": name,
        "description": "Members whose outcome is predicted without their region or age.",
        "owner": "tests",
        "task": "binary_classification" if task == "classification" else "regression",
        "source": {"path": str(source), "entity": "member_id", "timestamp": "seen_at"},
        "label": "claims" if task == "regression" else "lapsed",
        "features": [
            {"name": "income", "dtype": "float", "min": 0},
            {"name": "visits", "dtype": "int", "min": 0},
            "plan",
        ],
        "sensitive_attributes": [
            {"column": "region", "dtype": "category", "categories": REGIONS},
            {"column": "age_years", "min": 18, "max": 100, "buckets": [40, 60]},
        ],
        "tuning": {"max_evals": 2, "num_boost_round": 40, "early_stopping_rounds": 10},
    }
    if task == "regression":
        doc["tuning"]["objective"] = "count:poisson"
    return doc


def config(task: Task, source: Path | str, name: str = "members") -> ModelConfig:
    return ModelConfig.model_validate(config_doc(task, source, name))


def cohort(task: Task, n: int = 1_500, seed: int = 3) -> pd.DataFrame:
    """One row per member visit: features, the two sensitive columns and the label."""
    rng = np.random.default_rng(seed)
    income = np.round(rng.gamma(3.0, 15.0, n), 2)
    visits = rng.poisson(2.0, n)
    plan = rng.choice(["basic", "plus", "premium"], n, p=[0.5, 0.3, 0.2])
    signal = 0.03 * income - 0.4 * visits + 0.8 * (plan == "premium")
    if task == "regression":
        label = rng.poisson(np.exp(0.2 + 0.3 * np.tanh(signal - 0.5)))
    else:
        label = (rng.random(n) < 1 / (1 + np.exp(-(signal - 0.5)))).astype(int)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "member_id": np.arange(n) % (n // 3),
            "seen_at": start + pd.to_timedelta(np.arange(n) * 3_600, unit="s"),
            "income": income,
            "visits": visits,
            "plan": plan,
            "region": rng.choice(REGIONS, n),
            "age_years": rng.integers(18, 90, n),
            "claims" if task == "regression" else "lapsed": label,
        }
    )


def permuted(frame: pd.DataFrame, seed: int = 11) -> pd.DataFrame:
    """The same rows with the sensitive columns shuffled across them."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    for column in ATTRIBUTES:
        out[column] = rng.permutation(out[column].to_numpy())
    return out

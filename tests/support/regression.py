"""A small regression model built inline: a length-of-stay-like count, its config, a real
XGBRegressor saved and reloaded as the registry does, and frames shaped like a holdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from mlsteward.config.models import ModelConfig
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance import registry

MODEL = "stay"
ENTITY, TIMESTAMP, LABEL = "stay_id", "discharged_at", "days"


def regression_cfg(objective: str = "count:poisson", **drift: Any) -> ModelConfig:
    """A regression config with numeric, integer and categorical inputs."""
    return ModelConfig.model_validate(
        {
            "name": MODEL,
            "task": "regression",
            "source": {"path": "x.parquet", "entity": ENTITY, "timestamp": TIMESTAMP},
            "label": LABEL,
            "features": [
                {"name": "age", "dtype": "float"},
                {"name": "prior_visits", "dtype": "int"},
                {"name": "ward", "dtype": "category", "categories": ["a", "b", "c"]},
            ],
            "tuning": {"objective": objective},
            "drift": drift,
        }
    )


def expected_days(frame: pd.DataFrame) -> np.ndarray:
    """The true mean stay of each row."""
    ward = frame["ward"].map({"a": 0.0, "b": 0.4, "c": -0.3}).to_numpy(dtype=np.float64)
    return np.exp(0.6 + 0.02 * (frame["age"].to_numpy() - 50) + 0.15 * frame["prior_visits"] + ward)


def stays(n: int, seed: int, *, age_shift: float = 0.0, start: str = "2025-01-01") -> pd.DataFrame:
    """Raw rows with a Poisson outcome around :func:`expected_days`."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            ENTITY: np.arange(seed * 100_000, seed * 100_000 + n, dtype=np.int64),
            TIMESTAMP: pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n), unit="min"),
            "age": rng.normal(50 + age_shift, 12, n),
            "prior_visits": rng.poisson(1.5, n).astype(np.int64),
            "ward": rng.choice(["a", "b", "c"], n).astype(object),
        }
    )
    frame[LABEL] = rng.poisson(expected_days(frame)).astype(np.int64)
    return frame


def fit_verified(cfg: ModelConfig, frame: pd.DataFrame, directory: Path) -> registry.VerifiedModel:
    """A real XGBRegressor on ``frame``, saved and loaded back, as a verified version."""
    enc = make_encoding(cfg, {f.name: f.dtype for f in cfg.features}, frame)
    model = xgb.XGBRegressor(
        objective=cfg.tuning.objective,
        n_estimators=40,
        max_depth=3,
        tree_method="hist",
        enable_categorical=True,
        feature_types=enc.feature_types,
        random_state=0,
        n_jobs=1,
    )
    model.fit(encode(frame, enc), frame[LABEL].to_numpy(dtype=np.float64))
    path = directory / "model.ubj"
    model.save_model(path)
    loaded = xgb.XGBRegressor()
    loaded.load_model(path)
    info = registry.VersionInfo(
        name=cfg.name,
        version="1",
        run_id="r",
        source="s",
        tags={
            "feature_encoding": json.dumps(enc.to_dict()),
            "model_artifact_sha256": "x",
            "task": "regression",
            "objective": cfg.tuning.objective,
        },
    )
    return registry.VerifiedModel(
        info=info, model=loaded, sha256="x", objective=cfg.tuning.objective
    )

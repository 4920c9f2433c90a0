"""How raw feature columns become the model's numeric matrix, recorded with every version.

Training makes the encoding, the registry stores it beside the model, and scoring and serving
apply it: it lives with the features (not with training) so serving never imports training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlsteward.config.models import ModelConfig


@dataclass(frozen=True)
class FeatureEncoding:
    """How raw feature columns become the model's numeric matrix.

    Categories become integer codes in a fixed, recorded order and are declared categorical to
    XGBoost, so the model splits on categories natively and scoring can reproduce the exact
    input from the recorded encoding alone.
    """

    columns: list[str]
    dtypes: dict[str, str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def feature_types(self) -> list[str]:
        return ["c" if self.dtypes[c] == "category" else "q" for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "dtypes": self.dtypes, "categories": self.categories}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoding:
        return cls(
            columns=list(d["columns"]),
            dtypes=dict(d["dtypes"]),
            categories={k: list(v) for k, v in d.get("categories", {}).items()},
        )


def undeclared_categories(cfg: ModelConfig, dtypes: dict[str, str]) -> list[str]:
    """Category features whose categories the config does not list: the training rows decide
    them (``make_encoding``)."""
    return [
        f.name
        for f in cfg.features
        if dtypes.get(f.name, f.dtype) == "category" and not f.categories
    ]


def make_encoding(cfg: ModelConfig, dtypes: dict[str, str], frame: pd.DataFrame) -> FeatureEncoding:
    """Declared categories win; undeclared ones are taken, sorted, from the training frame.

    Only ``cfg.features`` are encoded: a sensitive column that is not a feature rides in the
    training frame for the fairness gate, and ``encode`` selects the recorded columns by name,
    so it never reaches the model's matrix.
    """
    observed = set(undeclared_categories(cfg, dtypes))
    cats: dict[str, list[str]] = {}
    for spec in cfg.features:
        if spec.name in observed:
            cats[spec.name] = sorted(frame[spec.name].dropna().astype(str).unique().tolist())
        elif dtypes.get(spec.name, spec.dtype) == "category":
            cats[spec.name] = list(spec.categories or [])
    resolved = {f.name: dtypes.get(f.name) or f.dtype or "float" for f in cfg.features}
    return FeatureEncoding(columns=cfg.feature_names, dtypes=resolved, categories=cats)


def encode(frame: pd.DataFrame, enc: FeatureEncoding) -> pd.DataFrame:
    """Numeric float32 matrix in the recorded column order (selected by name, never position)."""
    out: dict[str, np.ndarray] = {}
    for col in enc.columns:
        values = frame[col]
        if enc.dtypes[col] == "category":
            codes = pd.Categorical(values.astype("string"), categories=enc.categories[col]).codes
            out[col] = np.where(codes < 0, np.nan, codes).astype(np.float32)
        else:
            # Numeric and boolean columns (numpy or nullable) convert in one step; anything else
            # (e.g. numbers as text) is parsed first.
            if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
                values = pd.to_numeric(values, errors="coerce")
            out[col] = values.to_numpy(dtype=np.float32, na_value=np.nan)
    return pd.DataFrame(out, index=frame.index)

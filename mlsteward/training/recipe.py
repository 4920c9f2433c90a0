"""The training recipe: everything a registered version was built from, in one signed document.

Lineage tags say *what* produced a version (data digest, commit, lock hash); the recipe adds
*how*, in enough detail to rebuild it without reading today's config: the effective model config
at training time, the snapshot's recorded facts (inferred dtypes, assigned timestamps), the
feature service's definition, the training set's digest, the search space, seed and result.
It is logged as ``lineage/recipe.json`` on the training run, and its SHA-256 (of the canonical
JSON) is a version tag, so an edited recipe is detected before anything is rebuilt from it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from mlsteward.config.models import ModelConfig
from mlsteward.data.state import SnapshotInfo

RECIPE_FORMAT = 1
RECIPE_ARTIFACT = "lineage/recipe.json"
RECIPE_SHA_TAG = "lineage.recipe_sha256"
TRAINING_SET_TAG = "lineage.training_set_digest"


def canonical_json(doc: Any) -> bytes:
    """One byte form per document, so a digest survives MLflow's re-formatting of the file."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()


def recipe_sha256(doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content: column names, dtypes and every value in row order.

    Values go through pandas' stable per-value hash (``hash_pandas_object``), which treats
    nulls, nullable dtypes and strings consistently, so two frames with equal content and types
    get one digest whatever their memory layout; the index is ignored.
    """
    h = hashlib.sha256()
    h.update(canonical_json([[str(c), str(t)] for c, t in frame.dtypes.items()]))
    h.update(len(frame).to_bytes(8, "little"))
    for name in frame.columns:
        values = pd.util.hash_pandas_object(frame[name], index=False).to_numpy()
        h.update(values.tobytes())
    return h.hexdigest()


def feature_service_definition(
    cfg: ModelConfig, feature_dtypes: dict[str, str], entity_dtype: str
) -> dict[str, Any]:
    """What the feature service serves, in terms that decide a point-in-time join's result.

    Feast's own protobuf carries registry timestamps that change on every apply, so the
    definition is ours: names, typed features in order, join key, TTL and time columns. The
    sensitive columns that are not features are joined beside the service from the same view
    and decide the training set too: they are listed under ``attributes``, a key present only
    when the model has such columns, so every other definition keeps its recorded bytes.
    """
    definition: dict[str, Any] = {
        "feature_service": cfg.feature_service_name,
        "feature_view": cfg.feature_view_name,
        "entity": cfg.entity_name,
        "join_key": cfg.source.entity,
        "entity_dtype": entity_dtype,
        "features": [
            [f.name, f.dtype or feature_dtypes.get(f.name, "float")] for f in cfg.features
        ],
        "ttl_days": cfg.feast.ttl_days,
        "timestamp_field": cfg.timestamp_column,
    }
    if cfg.attribute_columns:
        definition["attributes"] = [
            [c.name, c.dtype or feature_dtypes.get(c.name, "float")] for c in cfg.attribute_columns
        ]
    return definition


def build_recipe(
    *,
    cfg: ModelConfig,
    snapshot: SnapshotInfo,
    feature_service: dict[str, Any],
    entity_rows: int,
    training_set_digest: str,
    split_sizes: dict[str, int],
    seed: int,
    max_evals: int,
    best_params: dict[str, Any],
    best_iteration: int,
    best_loss: float,
    decision_threshold: float | None,
) -> dict[str, Any]:
    config = cfg.model_dump(mode="json")
    return {
        "format": RECIPE_FORMAT,
        "model": cfg.name,
        "config": config,
        "snapshot": snapshot.model_dump(),
        "feature_service": feature_service,
        "training_set": {
            "digest": training_set_digest,
            "rows": entity_rows,
            "split_sizes": split_sizes,
        },
        "tuning": {
            "seed": seed,
            "max_evals": max_evals,
            "search_space": config["tuning"]["search_space"],
            "best_params": best_params,
            "best_iteration": best_iteration,
            "best_loss": best_loss,
        },
        "decision_threshold": decision_threshold,
    }


def recorded_config(recipe: dict[str, Any]) -> ModelConfig:
    """The model config as it was when the version trained (today's file may differ)."""
    return ModelConfig.model_validate(recipe["config"])


def recorded_snapshot(recipe: dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo.model_validate(recipe["snapshot"])


def config_differences(
    recorded: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[dict[str, Any]]:
    """Dotted keys whose value differs between two config documents, with both values."""
    out: list[dict[str, Any]] = []
    for key in sorted(set(recorded) | set(current)):
        path = f"{prefix}{key}"
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{path}.")
        elif a != b:
            out.append({"key": path, "recorded": a, "current": b})
    return out

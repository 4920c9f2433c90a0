"""Validation reports as the gates record them, from small real models on the built-in data.

A classifier on the heart-disease cohort and a count model on the readmission cohort are
fitted in well under a second, saved and loaded back as the registry does, scored on a
holdout with ``score_holdout`` (which computes the evaluation the pictures are drawn from),
and judged by the three gates against a weaker champion: the report is the one a training
flow would store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xgboost as xgb

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.data.builtin import builtin
from mlsteward.features.encoding import encode, make_encoding
from mlsteward.governance.fairness import fairness_gate
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.registry import VerifiedModel, VersionInfo
from mlsteward.governance.run_gates import champion_gate
from mlsteward.governance.validation import HoldoutScore, holdout_metrics_gate, score_holdout

TRAIN_ROWS = 2_000
HOLDOUT_ROWS = 1_200


def fit(
    cfg: ModelConfig, train: pd.DataFrame, version: str, trees: int, depth: int, path: Path
) -> VerifiedModel:
    """A real XGBoost model of the config's task, saved and loaded back as a verified version
    (a classifier's decision threshold tagged as training tags it)."""
    enc = make_encoding(cfg, {f.name: f.dtype for f in cfg.features}, train)
    kind = xgb.XGBRegressor if cfg.is_regression else xgb.XGBClassifier
    extra = {"objective": cfg.tuning.objective} if cfg.is_regression else {}
    model = kind(
        n_estimators=trees,
        max_depth=depth,
        tree_method="hist",
        enable_categorical=True,
        feature_types=enc.feature_types,
        random_state=0,
        n_jobs=1,
        **extra,
    )
    model.fit(encode(train, enc), train[cfg.label].to_numpy())
    model.save_model(path)
    loaded = kind()
    loaded.load_model(path)
    tags = {"feature_encoding": json.dumps(enc.to_dict())}
    if not cfg.is_regression:
        tags["decision_threshold"] = "0.45"
    info = VersionInfo(name=cfg.name, version=version, run_id="r", source="s", tags=tags)
    return VerifiedModel(info=info, model=loaded, sha256="x", objective=cfg.tuning.objective)


@dataclass(frozen=True)
class Scored:
    """A built-in model's challenger (v2, scored with SHAP) and weaker champion (v1, scored
    without) on one holdout."""

    cfg: ModelConfig
    challenger: HoldoutScore
    champion: HoldoutScore
    holdout: pd.DataFrame
    model: VerifiedModel
    """The challenger's model."""


def scored(model: str, directory: Path) -> Scored:
    """Fit, score and keep both versions of the built-in ``model`` (see :class:`Scored`)."""
    cfg = get_model_config(model)
    frame = builtin(model).generate_cohort(n_rows=TRAIN_ROWS + HOLDOUT_ROWS, seed=3)
    train = frame.iloc[:TRAIN_ROWS]
    holdout = frame.iloc[TRAIN_ROWS:].reset_index(drop=True)
    champion = fit(cfg, train, "1", trees=5, depth=2, path=directory / f"{model}-v1.ubj")
    challenger = fit(cfg, train, "2", trees=30, depth=3, path=directory / f"{model}-v2.ubj")
    return Scored(
        cfg,
        score_holdout(cfg, challenger, holdout),
        score_holdout(cfg, champion, holdout, explain=False),
        holdout,
        challenger,
    )


def stored_report(case: Scored) -> dict[str, Any]:
    """The three gates' report on the challenger, as stored on its run (JSON round trip)."""
    cfg, challenger, champion = case.cfg, case.challenger, case.champion
    report = ValidationReport(
        model=cfg.name,
        version=challenger.version,
        gates=[
            holdout_metrics_gate(cfg, challenger),
            fairness_gate(challenger.fairness, cfg),
            champion_gate(cfg, challenger, champion),
        ],
        created_at="2025-03-14T09:26:53+00:00",
    )
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


def without_evaluation(report: dict[str, Any]) -> dict[str, Any]:
    """The same report as a version validated before evaluations were stored would have."""
    old = json.loads(json.dumps(report))
    for gate in old["gates"]:
        gate["details"].pop("evaluation", None)
    return old

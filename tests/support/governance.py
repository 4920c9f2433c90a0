"""Helpers for governance tests: per-test model configs and reading the registry/audit state."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

MODEL = "heart_disease"

# A deliberately weak model: stumps, few slow rounds. Still above the ROC-AUC floor on the
# cohort, clearly below what the default search finds.
WEAK_TUNING = {
    "max_evals": 1,
    "num_boost_round": 40,
    "early_stopping_rounds": 10,
    "search_space": {
        "max_depth": {"dist": "choice", "options": [1]},
        "learning_rate": {"dist": "choice", "options": [0.1]},
    },
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "search_space":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# The test cohorts have 600-row holdouts, where a group's TPR moves by ~0.08 between two
# equally good models; the demo's 0.05 tolerance is calibrated on 7,500 rows. The comparison
# rule itself is unit-tested (tests/unit/test_gates.py).
SMALL_HOLDOUT = {"promotion": {"fairness_tolerance": 0.2}}


def write_config(config_dir: Path, **overrides: Any) -> Path:
    """The demo model's config with overrides, in a directory MLSTEWARD_CONFIG_DIR points at."""
    base = yaml.safe_load((REPO_ROOT / "config/models/heart_disease.yaml").read_text())
    base = deep_merge(base, SMALL_HOLDOUT)
    (config_dir / "models").mkdir(parents=True, exist_ok=True)
    path = config_dir / "models" / "heart_disease.yaml"
    path.write_text(yaml.safe_dump(deep_merge(base, overrides), sort_keys=False))
    return path


def run_in_background(fn: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``fn(**kwargs)`` on a daemon thread, for a flow that pauses while the test answers it;
    the box gets ``result`` or ``error`` (raised by the test, not lost on the thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(**kwargs)
        except BaseException as exc:  # surfaced by the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box

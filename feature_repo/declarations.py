"""Shared source of this repo's Feast objects: built once per process from the model configs.

Feast imports every ``.py`` file here and collects module-level Feast objects by identity, so
the four declaration files (``entities.py``, ``data_sources.py``, ``feature_views.py``,
``feature_services.py``) must expose the *same* instances: a feature view's source that is equal
to, but not the same object as, the one in ``data_sources.py`` would be registered twice. This
module builds them once (cached) via ``mlsteward.features.repo`` and holds no Feast object at
module level itself.

Models whose config has no current snapshot yet are skipped, so ``feast plan`` works before the
first ingestion.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from mlsteward.config.models import load_all_model_configs
from mlsteward.config.paths import config_dir
from mlsteward.config.settings import feast_dir
from mlsteward.data.state import current_snapshot
from mlsteward.errors import ConfigError
from mlsteward.features.repo import ModelFeastObjects, repo_declarations

REPO_DIR = Path(__file__).resolve().parent


def _models_dir() -> Path:
    """config/models of this checkout, unless the environment points elsewhere.

    Feast runs with this folder as the working directory, where ``settings.project_root()``'s
    cwd fallback would look for ``feature_repo/config``; the project root is this folder's
    parent.
    """
    if os.environ.get("MLSTEWARD_CONFIG_DIR") or os.environ.get("MLSTEWARD_PROJECT_ROOT"):
        return config_dir() / "models"
    return REPO_DIR.parent / "config" / "models"


def _check_home() -> None:
    """feature_store.yaml reads ${MLSTEWARD_HOME}; unset, Feast would write to a literal path."""
    home = os.environ.get("MLSTEWARD_HOME", "")
    if not home or not Path(home).expanduser().is_absolute():
        raise ConfigError(
            "MLSTEWARD_HOME must be set to an absolute path when Feast loads feature_repo/ "
            f"(feature_store.yaml puts the registry under it); got {home!r}"
        )
    feast_dir()  # create <home>/feast so the registry and online store can be written


@cache
def declared_models() -> dict[str, ModelFeastObjects]:
    """Feast objects per model name, for every model with a current snapshot."""
    _check_home()
    configs = load_all_model_configs(_models_dir())
    snapshots = {name: current_snapshot(name) for name in configs}
    paths = {name: info.path if info else None for name, info in snapshots.items()}
    dtypes = {name: info.feature_dtypes for name, info in snapshots.items() if info}
    return repo_declarations(configs, paths, dtypes)

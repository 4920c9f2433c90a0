"""Where the project's files are: the checkout and its ``config/`` folder.

Kept apart from ``settings`` (where state lives) because the profiles and the model configs
need these two and ``settings`` needs the profiles.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    return Path(os.environ.get("MLSTEWARD_PROJECT_ROOT", os.getcwd())).resolve()


def config_dir() -> Path:
    env = os.environ.get("MLSTEWARD_CONFIG_DIR")
    return Path(env).resolve() if env else project_root() / "config"

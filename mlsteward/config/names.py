"""What a model name may be: the one rule every way in checks (CLI, flows, gateway, config
files), because a name becomes part of file paths, table names and deployment names.

Without it a name such as ``../../elsewhere/heart_disease`` loads a YAML file from outside
``config/models/`` and writes state beside it. At most 63 characters: PostgreSQL cuts longer
identifiers, and a model's offline tables carry its name.
"""

from __future__ import annotations

import re

from mlsteward.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
NAME_RULE = "lower_snake_case (a-z, 0-9, _), starting with a letter, at most 63 characters"


def check_model_name(name: str) -> str:
    """``name`` itself, if it is a model name.

    Raises:
        ConfigError: it is not (and so is never used as a path).
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{name!r} is not a model name: it must be {NAME_RULE}")
    return name

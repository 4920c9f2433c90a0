"""The gateway's settings, read once from the environment when the app is created.

| variable | meaning |
| --- | --- |
| ``MLSTEWARD_WEBHOOK_SECRET`` | the shared HMAC secret |
| ``MLSTEWARD_WEBHOOK_SECRET_BLOCK`` | or: the name of a Prefect ``Secret`` block holding it |
| ``MLSTEWARD_WEBHOOK_BRANCHES`` | comma list of branches whose pushes train (default ``main``) |
| ``MLSTEWARD_WEBHOOK_MAX_BYTES`` | largest body accepted (default 1 MiB) |
| ``MLSTEWARD_WEBHOOK_MAX_AGE_SECONDS`` | largest age (or lead) of a signed timestamp (300) |
| ``MLSTEWARD_WEBHOOK_DATA_ROOTS`` | ``os.pathsep`` list of where file parameters may point |
| ``PREFECT_API_URL`` / ``PREFECT_UI_URL`` | the Prefect server runs are created on, and its UI |

The data roots default to the project's ``data/`` and ``MLSTEWARD_HOME/data``; a relative root
is under the project root (the deployments' working directory); a URL root (``s3://bucket/in``)
is what lets a parameter be a URL at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator

from mlsteward.config.paths import project_root
from mlsteward.config.settings import home
from mlsteward.errors import MlstewardError

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_AGE_SECONDS = 300
DATA_ROOTS_VARIABLE = "MLSTEWARD_WEBHOOK_DATA_ROOTS"
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def default_data_roots() -> list[str]:
    """The project's ``data/`` folder and ``MLSTEWARD_HOME/data``: where batches to score and
    drift windows are put for the runs a webhook starts."""
    return [str(project_root() / "data"), str(home() / "data")]


def local_path(value: str) -> Path:
    """``value`` as a flow run opens it: ``~`` expanded, relative to the project root (the
    deployments' working directory), symlinks and ``..`` resolved."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else project_root() / path).resolve()


class GatewayConfigError(MlstewardError):
    """The gateway cannot start: no secret, or a setting that does not parse."""


class GatewaySettings(BaseModel):
    """What the gateway needs; ``from_env`` builds it the way ``python -m mlsteward.gateway``
    and ``make up`` run it, tests pass values directly."""

    secret: SecretStr
    branches: list[str] = Field(default_factory=lambda: ["main"])
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    max_age_seconds: float = Field(default=DEFAULT_MAX_AGE_SECONDS, gt=0)
    data_roots: list[str] = Field(default_factory=default_data_roots)
    api_url: str | None = None
    ui_url: str | None = None

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the webhook secret must not be empty")
        return value

    @field_validator("branches")
    @classmethod
    def _branch_names(cls, value: list[str]) -> list[str]:
        names = [b.strip().removeprefix("refs/heads/") for b in value if b.strip()]
        if not names:
            raise ValueError("at least one branch is needed")
        return names

    @field_validator("data_roots")
    @classmethod
    def _roots(cls, value: list[str]) -> list[str]:
        """Local roots are made absolute and resolved once (symlinks included), so a path is
        compared with what the run will really open; URL roots are kept as text."""
        roots = []
        for raw in (v.strip() for v in value):
            if not raw:
                continue
            if "://" in raw:
                if not raw.split("://", 1)[1].strip("/"):
                    raise ValueError(f"URL data root {raw!r} names no bucket or host")
                roots.append(raw.rstrip("/"))
            else:
                roots.append(str(local_path(raw)))
        if not roots:
            raise ValueError("at least one data root is needed")
        return roots

    @classmethod
    def from_env(cls) -> GatewaySettings:
        """Settings from the environment (and Prefect's settings for the API and UI URLs).

        Raises:
            GatewayConfigError: no secret is configured, or a value does not parse.
        """
        from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

        try:
            # Values come as text from the environment: pydantic parses them.
            return cls.model_validate(
                {
                    "secret": _secret_from_env(),
                    "branches": os.environ.get("MLSTEWARD_WEBHOOK_BRANCHES", "main").split(","),
                    "max_bytes": os.environ.get("MLSTEWARD_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES),
                    "max_age_seconds": os.environ.get(
                        "MLSTEWARD_WEBHOOK_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS
                    ),
                    **_data_roots_from_env(),
                    "api_url": PREFECT_API_URL.value() or None,
                    "ui_url": PREFECT_UI_URL.value() or None,
                }
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise GatewayConfigError(f"invalid webhook gateway setting: {exc}") from exc


def split_roots(raw: str) -> list[str]:
    """An ``os.pathsep`` list of roots; on POSIX the ``:`` of a URL's ``scheme://`` is not a
    separator (``data:s3://bucket/in`` is two roots)."""
    roots: list[str] = []
    for part in raw.split(os.pathsep):
        if roots and part.startswith("//") and _SCHEME_RE.fullmatch(roots[-1]):
            roots[-1] += os.pathsep + part
        else:
            roots.append(part)
    return roots


def _data_roots_from_env() -> dict[str, list[str]]:
    raw = os.environ.get(DATA_ROOTS_VARIABLE)
    return {} if raw is None else {"data_roots": split_roots(raw)}


def _secret_from_env() -> str:
    secret = os.environ.get("MLSTEWARD_WEBHOOK_SECRET", "")
    block = os.environ.get("MLSTEWARD_WEBHOOK_SECRET_BLOCK", "")
    if secret:
        return secret
    if block:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(block, _sync=True).get()  # type: ignore[union-attr,call-arg]
        except Exception as exc:  # a missing block or an unreachable API: say which
            raise GatewayConfigError(
                f"cannot read the webhook secret from Prefect Secret block {block!r}: {exc}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise GatewayConfigError(f"Prefect Secret block {block!r} holds no text secret")
        return value
    raise GatewayConfigError(
        "no webhook secret: set MLSTEWARD_WEBHOOK_SECRET, or MLSTEWARD_WEBHOOK_SECRET_BLOCK to "
        "the name of a Prefect Secret block; the gateway does not run unauthenticated"
    )

"""The gateway's settings, read once from the environment when the app is created.

| variable | meaning |
| --- | --- |
| ``MLSTEWARD_WEBHOOK_SECRET`` | the shared HMAC secret |
| ``MLSTEWARD_WEBHOOK_SECRET_BLOCK`` | or: the name of a Prefect ``Secret`` block holding it |
| ``MLSTEWARD_WEBHOOK_BRANCHES`` | comma list of branches whose pushes train (default ``main``) |
| ``MLSTEWARD_WEBHOOK_MAX_BYTES`` | largest body accepted (default 1 MiB) |
| ``MLSTEWARD_WEBHOOK_MAX_AGE_SECONDS`` | largest age (or lead) of a signed timestamp (300) |
| ``PREFECT_API_URL`` / ``PREFECT_UI_URL`` | the Prefect server runs are created on, and its UI |
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, SecretStr, field_validator

from mlsteward.errors import MlstewardError

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_AGE_SECONDS = 300


class GatewayConfigError(MlstewardError):
    """The gateway cannot start: no secret, or a setting that does not parse."""


class GatewaySettings(BaseModel):
    """What the gateway needs; ``from_env`` builds it the way ``python -m mlsteward.gateway``
    and ``make up`` run it, tests pass values directly."""

    secret: SecretStr
    branches: list[str] = Field(default_factory=lambda: ["main"])
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    max_age_seconds: float = Field(default=DEFAULT_MAX_AGE_SECONDS, gt=0)
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
                    "api_url": PREFECT_API_URL.value() or None,
                    "ui_url": PREFECT_UI_URL.value() or None,
                }
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise GatewayConfigError(f"invalid webhook gateway setting: {exc}") from exc


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

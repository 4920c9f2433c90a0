"""The service's settings, read once from the environment when the app is created.

| variable | meaning |
| --- | --- |
| ``MLSTEWARD_SERVING_MODELS`` | comma list of models to serve (default: every configured one) |
| ``MLSTEWARD_SERVING_FAULTS`` | JSON fault injection per arm, to rehearse rollbacks (below) |
| ``MLSTEWARD_SERVING_AUTH`` | ``on`` (default) or ``off``: whether requests need a token (below) |
| ``MLSTEWARD_SERVING_METRICS_AUTH`` | ``true``: ``/metrics`` needs one too (default ``false``) |

With authentication on, predict, a model's description and the API docs need a token
(``mlsteward.serving.auth``); ``off`` asks nobody, for experiments on one machine, and the
service logs a warning at start. ``/metrics`` stays open to scrapers unless
``MLSTEWARD_SERVING_METRICS_AUTH`` is true; then it needs a token with ``read`` (Prometheus
sends it as ``Authorization: Bearer``).

Fault injection, as service meshes offer it, makes an arm fail or slow down on purpose so a
team can watch a rollout roll back before a real bad model does it for them, e.g.
``{"challenger": {"error_rate": 0.5, "delay_ms": 40}}``: half the challenger's rows fail (by a
hash of the routing key, so the same ones every time) and its answers wait 40 ms longer.
Unset, nothing is injected; the service logs a warning at start when it is set.
"""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlsteward.errors import MlstewardError


class ServingConfigError(MlstewardError):
    """The service cannot start: a setting that does not parse."""


class ArmFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1)
    delay_ms: float = Field(default=0.0, ge=0, le=60_000)


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    faults: dict[str, ArmFaults] = Field(default_factory=dict)
    auth: bool = True
    metrics_auth: bool = False

    @classmethod
    def from_env(cls) -> ServingSettings:
        raw_models = os.environ.get("MLSTEWARD_SERVING_MODELS", "").strip()
        return cls(
            models=[m.strip() for m in raw_models.split(",") if m.strip()] or None,
            faults=_faults(os.environ.get("MLSTEWARD_SERVING_FAULTS", "").strip()),
            auth=_switch("MLSTEWARD_SERVING_AUTH", default=True),
            metrics_auth=_switch("MLSTEWARD_SERVING_METRICS_AUTH", default=False),
        )


def _faults(raw: str) -> dict[str, ArmFaults]:
    try:
        faults = json.loads(raw) if raw else {}
        unknown = sorted(set(faults) - {"champion", "challenger"})
        if unknown:
            raise ServingConfigError(
                f"MLSTEWARD_SERVING_FAULTS: unknown arm(s) {unknown}; use champion, challenger"
            )
        return {arm: ArmFaults.model_validate(value) for arm, value in faults.items()}
    except (ValueError, ValidationError, TypeError, AttributeError) as exc:
        raise ServingConfigError(f"MLSTEWARD_SERVING_FAULTS: {exc}") from exc


_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}  # fmt: skip


def _switch(variable: str, *, default: bool) -> bool:
    """An on/off setting; a value that is neither stops the start rather than guess (a typo in
    ``MLSTEWARD_SERVING_AUTH`` must not open the service)."""
    raw = os.environ.get(variable, "").strip().lower()
    if not raw:
        return default
    if raw not in _SWITCH:
        raise ServingConfigError(
            f"{variable}={raw!r}: use on or off (also true/false, 1/0, yes/no)"
        )
    return _SWITCH[raw]

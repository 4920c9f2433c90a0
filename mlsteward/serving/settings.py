"""The service's settings, read once from the environment when the app is created.

| variable | meaning |
| --- | --- |
| ``MLSTEWARD_SERVING_MODELS`` | comma list of models to serve (default: every configured one) |
| ``MLSTEWARD_SERVING_FAULTS`` | JSON fault injection per arm, to rehearse rollbacks (below) |

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

    @classmethod
    def from_env(cls) -> ServingSettings:
        raw_models = os.environ.get("MLSTEWARD_SERVING_MODELS", "").strip()
        raw_faults = os.environ.get("MLSTEWARD_SERVING_FAULTS", "").strip()
        try:
            faults = json.loads(raw_faults) if raw_faults else {}
            unknown = sorted(set(faults) - {"champion", "challenger"})
            if unknown:
                raise ServingConfigError(
                    f"MLSTEWARD_SERVING_FAULTS: unknown arm(s) {unknown}; use champion, challenger"
                )
            return cls(
                models=[m.strip() for m in raw_models.split(",") if m.strip()] or None,
                faults=faults,
            )
        except (ValueError, ValidationError) as exc:
            raise ServingConfigError(f"MLSTEWARD_SERVING_FAULTS: {exc}") from exc

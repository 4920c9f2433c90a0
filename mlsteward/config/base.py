"""The one rule every config model shares: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A typo in YAML must not silently fall back to a default, so unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

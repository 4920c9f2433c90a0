"""Config sections for the data a model reads: its source, features, contract and Feast."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mlsteward.config.base import StrictModel
from mlsteward.config.paths import project_root

FeatureDtype = Literal["int", "float", "bool", "category"]


class FeatureSpec(StrictModel):
    """One feature column. ``dtype`` may be omitted: ingestion infers and records it."""

    name: str = Field(description="Column name in the source.")
    dtype: FeatureDtype | None = Field(
        default=None, description="int, float, bool or category; unset: inferred and recorded."
    )
    min: float | None = Field(default=None, description="Contract rule: the smallest value.")
    max: float | None = Field(default=None, description="Contract rule: the largest value.")
    categories: list[str] | None = Field(
        default=None, description="Contract rule: the allowed values (dtype category)."
    )
    nullable: bool = Field(default=False, description="Contract rule: missing values allowed.")
    description: str = Field(default="", description="What the column means (on the Feast field).")

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"feature {self.name!r}: min {self.min} is greater than max {self.max}"
            )
        if self.categories is not None:
            if self.dtype not in (None, "category"):
                raise ValueError(
                    f"feature {self.name!r}: categories are only allowed for dtype 'category'"
                )
            if len(set(self.categories)) != len(self.categories) or not self.categories:
                raise ValueError(f"feature {self.name!r}: categories must be non-empty and unique")
        if self.dtype == "category" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max make no sense for a category")
        return self


class SourceConfig(StrictModel):
    """Where the model's data comes from: one CSV or parquet file."""

    path: str = Field(description="CSV or parquet file; relative paths start at the project root.")
    entity: str = Field(description="Entity id column (the Feast entity's join key).")
    timestamp: str | None = Field(
        default=None,
        description="Event-time column. When absent, ingestion stamps every row with the "
        "ingestion time (UTC, whole seconds) and records that it did.",
    )
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="Unset: from the file's suffix (.parquet and .pq are parquet)."
    )

    def resolved_path(self, base: Path | None = None) -> Path:
        """Relative paths are relative to the project root, so configs stay portable."""
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else (base or project_root()) / p

    def file_format(self, path: Path | None = None) -> str:
        if self.format:
            return self.format
        suffix = (path or Path(self.path)).suffix.lower()
        return "parquet" if suffix in (".parquet", ".pq") else "csv"


class ContractConfig(StrictModel):
    """What the data contract tolerates besides the per-column rules."""

    max_bad_row_share: float = Field(
        default=0.05, ge=0, le=1, description="Above this share of bad rows nothing is ingested."
    )
    future_tolerance_seconds: int = Field(
        default=300, ge=0, description="Clock skew allowed before a timestamp counts as future."
    )


class FeastConfig(StrictModel):
    """The model's Feast objects."""

    ttl_days: float | None = Field(
        default=None, gt=0, description="Feature freshness limit; None keeps values forever."
    )
    online: bool = Field(
        default=True,
        description="Whether the feature view is online (materialized into the online store "
        "serving reads); false: offline only.",
    )

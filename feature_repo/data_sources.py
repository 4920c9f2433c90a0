"""Data sources: each model's current immutable snapshot parquet (absolute path, digest tag)."""

from __future__ import annotations

from declarations import declared_models

# Module-level names are what Feast's repo parser collects; one per model, named as registered.
globals().update({objs.source.name: objs.source for objs in declared_models().values()})

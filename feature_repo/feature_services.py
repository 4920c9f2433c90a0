"""Feature services: one per model, named like the model; training and serving ask for it."""

from __future__ import annotations

from declarations import declared_models

# Module-level names are what Feast's repo parser collects; one per model, named as registered.
globals().update(
    {objs.feature_service.name: objs.feature_service for objs in declared_models().values()}
)

"""Entities: one per model, named ``<model>__<entity column>``, keyed by the entity column."""

from __future__ import annotations

from declarations import declared_models

# Module-level names are what Feast's repo parser collects; one per model, named as registered.
globals().update({objs.entity.name: objs.entity for objs in declared_models().values()})

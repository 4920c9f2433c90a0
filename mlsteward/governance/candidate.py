"""A version proposed for promotion: is its validation still current, and may it go ahead?

A validation report compares the version with the champion of its day
(``validated_against_champion``); once another version became champion the comparison is
stale and the gates must run again. The promote flow, the rollout checks and the rollout's
final promotion all ask here, so they agree on what "current" means.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlsteward.config.models import ModelConfig
from mlsteward.errors import PromotionError
from mlsteward.governance import champion as champion_record
from mlsteward.governance import ledger, registry
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.promotion import NO_CHAMPION, open_audit, override_needed
from mlsteward.governance.registry import CHAMPION, VersionInfo
from mlsteward.governance.specs import PromotionSpec


def needs_validation(info: VersionInfo) -> bool:
    """Gates re-run when a version was never validated or its champion comparison is stale."""
    if info.validation_status is None:
        return True
    with open_audit() as audit:
        recorded, _ = champion_record.recorded(info.name, audit)
    return info.tags.get("validated_against_champion") != (recorded or NO_CHAMPION)


def stored_report(info: VersionInfo) -> ValidationReport:
    """The validation report ``record_validation`` stored on the version's run."""
    with tempfile.TemporaryDirectory() as d:
        path = registry.download_run_file(
            info.run_id, f"validation/validation-v{info.version}.json", Path(d)
        )
        return ValidationReport.from_dict(json.loads(path.read_text()))


def current_report(model: str, version: str) -> ValidationReport | None:
    """The version's stored report while its champion comparison holds; None when the gates
    must run again (never validated, or the champion changed since)."""
    info = registry.get_version(model, version)
    return None if needs_validation(info) else stored_report(info)


def check_candidate(
    cfg: ModelConfig, version: str, *, revalidate: bool = False, blocked: str | None = None
) -> tuple[VersionInfo, bool]:
    """The version a promote request names, and whether its gates must run (again) first.

    ``blocked`` is why the version needs an override (a person's rejection, a rollback away
    from it), already read from the audit trail; None when it does not or an override came
    with the request.

    Raises:
        NotFoundError: no such version.
        PromotionError: the version is already champion, needs an override, or its current
            report says it failed (a gate-failed version is never promotable).
    """
    info = registry.get_version(cfg.name, version)
    if CHAMPION in info.aliases:
        raise PromotionError(f"{cfg.name} v{info.version} is already the champion")
    if blocked:
        raise PromotionError(override_needed(cfg.name, info.version, blocked))
    if revalidate or needs_validation(info):
        return info, True
    if info.validation_status != "passed":
        raise PromotionError(
            f"{cfg.name} v{version} failed validation: "
            f"{info.tags.get('validation_reasons', '')}; use --revalidate after changing "
            "the config or data"
        )
    return info, False


def promotion_candidate(spec: PromotionSpec) -> tuple[VersionInfo, ValidationReport | None]:
    """The version a promote run names, with its stored report when that is current (None:
    the gates run again). A run carries no override: a version a person rejected or that was
    rolled back from is refused here (an admin overrides through the CLI or the API).

    Raises:
        NotFoundError: no such version.
        PromotionError: as :func:`check_candidate`.
    """
    with open_audit() as audit:
        blocked = ledger.standing(spec.cfg.name, spec.version, audit).blocked
    info, stale = check_candidate(
        spec.cfg, spec.version, revalidate=spec.revalidate, blocked=blocked
    )
    return info, None if stale else stored_report(info)

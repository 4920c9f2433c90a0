"""Promotion, rejection and rollback: the registry changes governance allows, and their audit.

Plain functions (no Prefect) so the CLI, flows and tests share one implementation. Every change
of the ``champion`` alias happens under a per-model lock held in the audit store, after
re-reading the record and the registry, so two promotions racing cannot both win and a
promotion never acts on a stale view.

The champion is what the governance record says (``mlsteward.governance.champion``). A change
of champion is written as an intent record, then the alias moves (after checking the lock's
fencing token: a promoter that lost its lock stops here), then the lifecycle tags, then the
signed completion record. If a step fails the change is undone and the intent closed as
abandoned; if the process dies in between, the intent stays open and the next governance call
on the model (or ``mlsteward audit reconcile``) finishes or undoes it: the alias never names a
champion that no record explains.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlsteward.audit import Action, AuditStore, Fence, audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.governance import REGRESSION_METRICS
from mlsteward.errors import (
    ChampionChangedError,
    IntegrityError,
    PromotionError,
    SignatureError,
)
from mlsteward.governance import champion, ledger, registry
from mlsteward.governance.attestations import sign_promotion
from mlsteward.governance.canary import read_target
from mlsteward.governance.gates import ValidationReport
from mlsteward.governance.registry import CHALLENGER, CHAMPION, VersionInfo
from mlsteward.governance.specs import RollbackSpec

log = logging.getLogger("mlsteward.governance")
LOCK_TIMEOUT_SECONDS = 120.0
NO_CHAMPION = "none"


class Lifecycle:
    CANDIDATE = "candidate"
    CHALLENGER = "challenger"
    CHAMPION = "champion"
    RETIRED = "retired"
    REJECTED = "rejected"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def open_audit(store: AuditStore | None = None) -> Iterator[AuditStore]:
    """Use the caller's store, or open the configured one for the duration of a call."""
    if store is not None:
        yield store
        return
    own = audit_store()
    try:
        yield own
    finally:
        own.close()


def promotion_lock_name(model: str) -> str:
    return f"promote:{model}"


class PromotionResult(BaseModel):
    """A change of champion: the promotion or rollback flow's result."""

    model_config = ConfigDict(frozen=True)

    model: str
    action: str  # "promoted" or "rolled_back"
    version: str
    previous_champion: str | None
    artifact_sha256: str
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# -- validation -------------------------------------------------------------------------------


def record_validation(
    cfg: ModelConfig,
    version: str,
    report: ValidationReport,
    *,
    actor: str,
    champion_version: str | None,
    store: AuditStore | None = None,
) -> VersionInfo:
    """Store the report on the version (JSON + markdown artifacts, tags, description) and audit
    the decision. A passing version becomes the ``challenger``; a failing one is ``rejected``
    and can never be aliased champion (promotion checks ``validation_status``).

    MLflow sets a version's tags one call at a time, so the order is what keeps an interruption
    (the tracking server gone between two calls) safe: the old verdict is taken away first, the
    report's tags and the audit record follow, and the verdict (``validation_status``) is
    written last. A version left half-way has no verdict, and a promote request runs its gates
    again; no version passes without its ``validation_passed`` record."""
    info = registry.get_version(cfg.name, version)
    if CHAMPION in info.aliases or info.lifecycle == Lifecycle.CHAMPION:
        # its lifecycle and aliases say champion; a fresh report must not demote it
        raise PromotionError(f"{cfg.name} v{version} is the champion; it is not re-validated")
    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / f"validation-v{version}"
        base.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=2))
        base.with_suffix(".md").write_text(report.to_markdown())
        report_uri = registry.log_version_artifact(info, base.with_suffix(".json"), "validation")
        registry.log_version_artifact(info, base.with_suffix(".md"), "validation")
    reasons = report.reasons()
    status = "passed" if report.passed else "failed"
    with (
        open_audit(store) as audit,
        audit.lock(promotion_lock_name(cfg.name), LOCK_TIMEOUT_SECONDS) as fence,
    ):
        recover(audit, fence, cfg.name, actor=actor)
        if info.validation_status is not None:
            registry.delete_tag(cfg.name, version, "validation_status")
        registry.set_tags(
            cfg.name,
            version,
            {
                "validation_reasons": json.dumps(reasons)[:4000],
                "validation_report": report_uri,
                "validated_at": now(),
                "validated_against_champion": champion_version or NO_CHAMPION,
            },
        )
        registry.set_description(cfg.name, version, report.summary())
        audit.append(
            Action.VALIDATION_PASSED if report.passed else Action.VALIDATION_FAILED,
            model=cfg.name,
            version=version,
            actor=actor,
            reason="all gates passed" if report.passed else "; ".join(reasons)[:2000],
            details={
                "gates": {g.name: g.passed for g in report.gates},
                "violations": [v.to_dict() for v in report.violations],
                "champion": champion_version,
                "report": report_uri,
            },
        )
        registry.set_tags(
            cfg.name,
            version,
            {
                "lifecycle": Lifecycle.CHALLENGER if report.passed else Lifecycle.REJECTED,
                "validation_status": status,  # the verdict, once it is on record
            },
        )
        if report.passed:
            previous = registry.version_by_alias(cfg.name, CHALLENGER)
            registry.set_alias(cfg.name, CHALLENGER, version)
            if previous is not None and previous.version != version:
                # one challenger at a time: the one it replaces never became champion
                registry.set_tags(
                    cfg.name,
                    previous.version,
                    {
                        "lifecycle": Lifecycle.RETIRED,
                        "retired_at": now(),
                        "retired_reason": f"superseded by challenger v{version}",
                    },
                )
            _audit_alias(audit, cfg.name, CHALLENGER, previous, version, actor)
        else:
            _clear_challenger(audit, cfg.name, version, actor)
    return registry.get_version(cfg.name, version)


def _audit_alias(
    audit: AuditStore,
    model: str,
    alias: str,
    previous: VersionInfo | None,
    version: str | None,
    actor: str,
) -> None:
    """MLflow keeps no alias history; this record is it."""
    before = previous.version if previous else None
    if before == version:
        return
    audit.append(
        Action.ALIAS_CHANGED,
        model=model,
        version=version,
        actor=actor,
        reason=f"{alias}: {before or '-'} -> {version or '-'}",
        details={"alias": alias, "from": before, "to": version},
    )


def _clear_challenger(audit: AuditStore, model: str, version: str, actor: str) -> None:
    current = registry.version_by_alias(model, CHALLENGER)
    if current is not None and current.version == str(version):
        registry.delete_alias(model, CHALLENGER)
        _audit_alias(audit, model, CHALLENGER, current, None, actor)


# -- approval outcomes --------------------------------------------------------------------


def reject(
    cfg: ModelConfig,
    version: str,
    *,
    actor: str,
    reason: str,
    action: Action = Action.APPROVAL_REJECTED,
    details: dict[str, Any] | None = None,
    store: AuditStore | None = None,
) -> int:
    """A person (or a timeout) said no: the version is ``rejected`` and loses the challenger
    alias; the champion is untouched. Returns the audit record's sequence number."""
    with (
        open_audit(store) as audit,
        audit.lock(promotion_lock_name(cfg.name), LOCK_TIMEOUT_SECONDS) as fence,
    ):
        recover(audit, fence, cfg.name, actor=actor)
        registry.set_tags(
            cfg.name,
            version,
            {"lifecycle": Lifecycle.REJECTED, "rejected_at": now(), "rejected_reason": reason},
        )
        record = audit.append(
            action, model=cfg.name, version=version, actor=actor, reason=reason, details=details
        )
        _clear_challenger(audit, cfg.name, version, actor)
    return record.seq


# -- promotion -------------------------------------------------------------------------------


def _refuse(
    audit: AuditStore,
    model: str,
    version: str | None,
    actor: str,
    message: str,
    error: type[PromotionError] = PromotionError,
    **details: Any,
) -> PromotionError:
    audit.append(
        Action.PROMOTION_REFUSED,
        model=model,
        version=version,
        actor=actor,
        reason=message,
        details=details or None,
    )
    return error(message)


def _audit_integrity_failure(
    audit: AuditStore, info: VersionInfo, actor: str, purpose: str, exc: IntegrityError
) -> None:
    audit.append(
        Action.SIGNATURE_FAILED if isinstance(exc, SignatureError) else Action.INTEGRITY_FAILED,
        model=info.name,
        version=info.version,
        actor=actor,
        reason=f"{purpose} refused: {exc}",
        details={"expected_sha256": info.artifact_sha256, "purpose": purpose},
    )


def verify_integrity(info: VersionInfo, audit: AuditStore, actor: str, purpose: str) -> str:
    """Recompute the artifact's SHA-256; a mismatch is audited and refuses the action."""
    try:
        with tempfile.TemporaryDirectory(prefix="mlsteward-verify-") as d:
            _, digest = registry.check_artifact(info, Path(d))
        return digest
    except IntegrityError as exc:
        _audit_integrity_failure(audit, info, actor, purpose, exc)
        raise


def load_verified(
    info: VersionInfo, audit: AuditStore, actor: str, purpose: str
) -> registry.VerifiedModel:
    """Hash and load in one download (:func:`registry.load_verified`); a mismatch is audited."""
    try:
        return registry.load_verified(info)
    except IntegrityError as exc:
        _audit_integrity_failure(audit, info, actor, purpose, exc)
        raise


def promote(
    cfg: ModelConfig,
    version: str,
    *,
    actor: str,
    reason: str,
    approval: dict[str, Any] | None = None,
    override: dict[str, Any] | None = None,
    store: AuditStore | None = None,
) -> PromotionResult:
    """Make a validated version the champion; the previous champion is retired (kept for
    rollback).

    ``override`` (an admin's, with its reason) lets a version a person rejected or that was
    rolled back from become champion again; it is recorded with the promotion.

    Raises:
        PromotionError: the version did not pass validation, is already champion, a person
            rejected it or it was rolled back from (without ``override``), or the champion
            changed since it was validated (its comparison is stale: re-run the gates). The
            refusal is audited and the registry is unchanged.
        IntegrityError: the artifact's SHA-256 differs from the registered one.
    """
    version = str(version)
    with (
        open_audit(store) as audit,
        audit.lock(promotion_lock_name(cfg.name), LOCK_TIMEOUT_SECONDS) as fence,
    ):
        current = settled_champion(audit, fence, cfg.name, actor=actor, purpose="promotion")
        info = registry.get_version(cfg.name, version)
        if info.validation_status != "passed":
            raise _refuse(
                audit,
                cfg.name,
                version,
                actor,
                f"{cfg.name} v{version} has validation status "
                f"{info.validation_status or 'none'}; only a version that passed every gate "
                "may become champion",
            )
        current_v = current.version if current else None
        if current_v == version:
            raise _refuse(
                audit, cfg.name, version, actor, f"{cfg.name} v{version} is already the champion"
            )
        _refuse_blocked(audit, cfg.name, version, actor, override)
        validated_against = info.tags.get("validated_against_champion", NO_CHAMPION)
        if validated_against != (current_v or NO_CHAMPION):
            raise _refuse(
                audit,
                cfg.name,
                version,
                actor,
                f"{cfg.name} v{version} was compared with champion {validated_against}, but the "
                f"champion is now {current_v or NO_CHAMPION}; re-run the gates "
                f"(mlsteward promote {cfg.name} {version})",
                error=ChampionChangedError,
                validated_against=validated_against,
                champion=current_v,
            )
        digest = verify_integrity(info, audit, actor, "promotion")
        record = _switch_champion(
            audit,
            fence,
            cfg.name,
            new=info,
            old=current,
            actor=actor,
            action=Action.PROMOTED,
            reason=reason,
            details={
                "approval": approval,
                **_override_details(override),
                "artifact_sha256": digest,
                "validation_report": info.tags.get("validation_report"),
                "test_metrics": _metrics(info),
                "previous_test_metrics": _metrics(current) if current else None,
            },
        )
    return PromotionResult(
        model=cfg.name,
        action="promoted",
        version=version,
        previous_champion=current_v,
        artifact_sha256=digest,
        audit_seq=record.seq,
    )


def override_needed(model: str, version: str, blocked: str) -> str:
    """The refusal for a version a person rejected or that was rolled back from."""
    return (
        f"{model} v{version} was {blocked}; making it champion again needs an admin's "
        "override with a reason (--override --reason TEXT, or override: true in the API; "
        "permission 'override')"
    )


def _refuse_blocked(
    audit: AuditStore, model: str, version: str, actor: str, override: dict[str, Any] | None
) -> None:
    """Refuse (audited) a version a person rejected or that was rolled back from, unless an
    override lifted that since or comes with this request."""
    if override is not None:
        return
    blocked = ledger.standing(model, version, audit).blocked
    if blocked:
        raise _refuse(
            audit, model, version, actor, override_needed(model, version, blocked), blocked=blocked
        )


def _override_details(override: dict[str, Any] | None) -> dict[str, Any]:
    return {"override": True, **override} if override is not None else {}


def _metrics(info: VersionInfo) -> dict[str, float]:
    keys = (
        REGRESSION_METRICS
        if info.task == "regression"
        else ("roc_auc", "pr_auc", "log_loss", "brier", "f1")
    )
    return {k: v for k in keys if (v := info.metric(k)) is not None}


def load_version(
    model: str, alias_or_version: str, *, actor: str, store: AuditStore | None = None
) -> registry.VerifiedModel:
    """Load a model for scoring by alias (``champion``) or version number, from bytes whose
    SHA-256 matched the registered one; a mismatch is audited and refuses the load."""
    if alias_or_version.isdigit():
        info = registry.get_version(model, alias_or_version)
    elif alias_or_version == CHAMPION:
        with open_audit(store) as audit:
            info = champion.resolve(model, audit, actor=actor, purpose="loading the champion")
    else:
        found = registry.version_by_alias(model, alias_or_version)
        if found is None:
            raise PromotionError(f"{model} has no {alias_or_version} to load")
        info = found
    try:
        return registry.load_verified(info)
    except IntegrityError as exc:  # the audit store is opened only when there is news
        with open_audit(store) as audit:
            _audit_integrity_failure(audit, info, actor, "loading", exc)
        raise


def settled_champion(
    audit: AuditStore, fence: Fence, model: str, *, actor: str, purpose: str
) -> VersionInfo | None:
    """The champion a change of champion starts from, under the promotion lock: an interrupted
    promotion is finished or undone first, and a registry that disagrees with the record is
    refused (audited) rather than acted on.

    Raises:
        AliasMismatchError: the alias was moved outside governance; reconcile first.
    """
    recover(audit, fence, model, actor=actor)
    version = champion.require_consistent(model, audit, actor=actor, purpose=purpose)
    return registry.get_version(model, version) if version else None


def _switch_champion(
    audit: AuditStore,
    fence: Fence,
    model: str,
    *,
    new: VersionInfo,
    old: VersionInfo | None,
    actor: str,
    action: Action,
    reason: str,
    details: dict[str, Any],
) -> Any:
    """Intent record, alias, tags, signed completion record; undone (and the intent closed)
    if any step fails. A process killed in between leaves the intent open for ``recover``."""
    before = old.version if old else None
    new_tags_before = {
        k: new.tags.get(k) for k in ("lifecycle", "promoted_at", "promoted_by", "retired_at")
    }
    fence.check()
    intent = audit.append(
        Action.PROMOTION_INTENT,
        model=model,
        version=new.version,
        actor=actor,
        reason=f"{action}: champion {before or '-'} -> {new.version}",
        details={
            "action": str(action),
            "from": before,
            "to": new.version,
            "fence": fence.token,
            "artifact_sha256": details.get("artifact_sha256"),
        },
    )
    challenger_cleared = False
    try:
        fence.check()  # nobody took the lock while the intent was written
        registry.set_alias(model, CHAMPION, new.version)
        challenger_cleared = _settle_tags(model, new, old, actor)
        record = _complete(
            audit, model, str(action), new.version, actor, reason,
            {**details, "from": before, "intent_seq": intent.seq, "fence": fence.token},
        )  # fmt: skip
    except BaseException as exc:
        try:
            _undo_switch(model, new, old, new_tags_before)
            if challenger_cleared:
                registry.set_alias(model, CHALLENGER, new.version)
            audit.append(
                Action.PROMOTION_ABANDONED,
                model=model,
                version=new.version,
                actor=actor,
                reason=f"{action} failed and was undone: {type(exc).__name__}: {exc}",
                details={"intent_seq": intent.seq, "from": before, "to": new.version},
            )
        except Exception as undo_exc:  # MLflow or the store still failing: recover() ends it
            log.error(
                "%s: %s could not be undone (%s); the intent #%d stays open until the next "
                "governance call or `mlsteward audit reconcile` finishes or undoes it",
                model, action, undo_exc, intent.seq,
            )  # fmt: skip
        raise
    _checkpoint(audit, actor, f"{action} of {model} v{new.version}")
    return record


def _complete(
    audit: AuditStore,
    model: str,
    action: str,
    version: str,
    actor: str,
    reason: str,
    details: dict[str, Any],
) -> Any:
    """The signed completion record of a change of champion to ``version`` (details carry
    ``from`` and the ``intent_seq`` it closes)."""
    completion = {**details, "alias": CHAMPION, "to": version}
    completion["signature"] = sign_promotion(
        model=model, action=action, actor=actor, details=completion
    )
    return audit.append(
        action, model=model, version=version, actor=actor, reason=reason, details=completion
    )


def _settle_tags(model: str, new: VersionInfo, old: VersionInfo | None, actor: str) -> bool:
    """The lifecycle tags of a change of champion; True when the challenger alias was the new
    champion's and was removed."""
    stamp = now()
    registry.set_tags(
        model,
        new.version,
        {"lifecycle": Lifecycle.CHAMPION, "promoted_at": stamp, "promoted_by": actor},
    )
    if "retired_at" in new.tags:  # a former champion coming back
        registry.delete_tag(model, new.version, "retired_at")
    if old is not None:
        registry.set_tags(model, old.version, {"lifecycle": Lifecycle.RETIRED, "retired_at": stamp})
    challenger = registry.version_by_alias(model, CHALLENGER)
    if challenger is not None and challenger.version == new.version:
        registry.delete_alias(model, CHALLENGER)
        return True
    return False


def _checkpoint(audit: AuditStore, actor: str, reason: str) -> None:
    """Anchor the chain head after a change of champion; the change stands if this fails (the
    scheduled checkpoint covers it later), and the failure is logged."""
    try:
        # Imported here: the checkpoint module signs with the governance key and writes to the
        # anchor, which only a change of champion needs.
        from mlsteward.audit.checkpoints import write_checkpoint

        write_checkpoint(audit, actor=actor, reason=reason)
    except Exception as exc:
        log.warning("the audit checkpoint after %s was not written: %s", reason, exc)


def recover(audit: AuditStore, fence: Fence, model: str, *, actor: str) -> str | None:
    """Finish or undo an interrupted change of champion (caller holds the promotion lock).

    The alias already moved to the intent's version: the change passed every check before its
    intent was written, so it is finished (tags, completion record marked ``recovered``). The
    alias did not move: the change is undone (``promotion_abandoned``) and the alias, if it
    points elsewhere, is put back where the record says. Returns what was done, or None.
    """
    open_intent = champion.pending(model, audit)
    if open_intent is None:
        return None
    alias = registry.version_by_alias(model, CHAMPION)
    at = alias.version if alias else None
    new = registry.get_version(model, open_intent.to_version)
    old = (
        registry.get_version(model, open_intent.from_version) if open_intent.from_version else None
    )
    base: dict[str, Any] = {
        "intent_seq": open_intent.seq,
        "from": open_intent.from_version,
        "to": open_intent.to_version,
        "recovered_by": actor,
        "alias_found": at,
    }
    fence.check()
    if at == open_intent.to_version:
        _settle_tags(model, new, old, open_intent.actor)
        _complete(
            audit, model, open_intent.action, open_intent.to_version, open_intent.actor,
            f"finished after an interruption: {open_intent.describe()}",
            {**base, "recovered": True, "fence": fence.token},
        )  # fmt: skip
        _checkpoint(audit, actor, f"recovered {open_intent.action} of {model}")
        return "finished"
    if at != open_intent.from_version:
        registry.point_alias(model, CHAMPION, open_intent.from_version)
    audit.append(
        Action.PROMOTION_ABANDONED,
        model=model,
        version=open_intent.to_version,
        actor=actor,
        reason=f"undone after an interruption: {open_intent.describe()}",
        details=base,
    )
    return "undone"


def _undo_switch(
    model: str, new: VersionInfo, old: VersionInfo | None, new_tags_before: dict[str, str | None]
) -> None:
    registry.point_alias(model, CHAMPION, old.version if old else None)
    if old is not None:
        registry.set_tags(model, old.version, {"lifecycle": Lifecycle.CHAMPION})
        if "retired_at" not in old.tags:
            registry.delete_tag(model, old.version, "retired_at")
        else:
            registry.set_tags(model, old.version, {"retired_at": old.tags["retired_at"]})
    for key, value in new_tags_before.items():
        if value is None:
            registry.delete_tag(model, new.version, key)
        else:
            registry.set_tags(model, new.version, {key: value})


# -- rollback --------------------------------------------------------------------------------


def champion_history(model: str, audit: AuditStore) -> list[dict[str, Any]]:
    """Every change of the champion alias, oldest first (from the audit trail: MLflow keeps
    no alias history). Read by action: a model's other records (scoring, drift) can number
    tens of thousands."""
    records = sorted(
        (r for a in (Action.PROMOTED, Action.ROLLBACK) for r in audit.query(model=model, action=a)),
        key=lambda r: r.seq,
    )
    return [
        {
            "seq": rec.seq,
            "ts": rec.ts,
            "action": rec.action,
            "from": rec.details.get("from"),
            "to": rec.details.get("to"),
            "actor": rec.actor,
            "reason": rec.reason,
        }
        for rec in records
    ]


def previous_champion(model: str, audit: AuditStore) -> str | None:
    """The champion before the current one, treating rollbacks as undoing a promotion:
    promote v1, v2, v3, roll back (→ v2), roll back again (→ v1)."""
    stack: list[str] = []
    for change in champion_history(model, audit):
        if change["action"] == Action.ROLLBACK and change["from"] in stack:
            stack.remove(change["from"])
        if change["to"] in stack:
            stack.remove(change["to"])
        stack.append(change["to"])
    return stack[-2] if len(stack) >= 2 else None


def rollback(
    cfg: ModelConfig,
    *,
    reason: str,
    actor: str,
    to_version: str | None = None,
    override: dict[str, Any] | None = None,
    store: AuditStore | None = None,
    only_from: str | None = None,
) -> PromotionResult:
    """Restore the previous (or a named earlier) champion; the current one is ``retired``.
    A target a person rejected or that was rolled back from needs ``override``, as a
    promotion does. With ``only_from``, only while that version is still the champion once
    the promotion lock is held: an automatic rollback never undoes a later decision."""
    RollbackSpec.check_request(reason)
    with (
        open_audit(store) as audit,
        audit.lock(promotion_lock_name(cfg.name), LOCK_TIMEOUT_SECONDS) as fence,
    ):
        current = settled_champion(audit, fence, cfg.name, actor=actor, purpose="rollback")
        if current is None:
            raise _refuse(audit, cfg.name, None, actor, f"{cfg.name} has no champion to roll back")
        if only_from is not None and current.version != str(only_from):
            raise _refuse(
                audit,
                cfg.name,
                current.version,
                actor,
                f"{cfg.name} champion is v{current.version} now, not v{only_from}: "
                f"a rollback of v{only_from} no longer applies",
            )
        target_v = str(to_version) if to_version else previous_champion(cfg.name, audit)
        if target_v is None:
            raise _refuse(
                audit,
                cfg.name,
                current.version,
                actor,
                f"{cfg.name} has no earlier champion to roll back to; name one with --to VERSION",
            )
        if target_v == current.version:
            raise _refuse(
                audit, cfg.name, target_v, actor, f"{cfg.name} v{target_v} is already the champion"
            )
        target = registry.get_version(cfg.name, target_v)
        _refuse_blocked(audit, cfg.name, target_v, actor, override)
        if target.validation_status != "passed":
            raise _refuse(
                audit,
                cfg.name,
                target_v,
                actor,
                f"{cfg.name} v{target_v} never passed validation "
                f"(status {target.validation_status or 'none'}); it cannot become champion",
            )
        digest = verify_integrity(target, audit, actor, "rollback")
        record = _switch_champion(
            audit,
            fence,
            cfg.name,
            new=target,
            old=current,
            actor=actor,
            action=Action.ROLLBACK,
            reason=reason,
            details={"artifact_sha256": digest, **_override_details(override)},
        )
    return PromotionResult(
        model=cfg.name,
        action="rolled_back",
        version=target_v,
        previous_champion=current.version,
        artifact_sha256=digest,
        audit_seq=record.seq,
    )


# -- status ----------------------------------------------------------------------------------


def status(
    model: str,
    *,
    recent: int = 10,
    store: AuditStore | None = None,
    versions: list[VersionInfo] | None = None,
) -> dict[str, Any]:
    """Champion (as the governance record says) and challenger with their numbers, whether the
    registry's alias agrees (``champion_check``), and the latest governance decisions.

    ``versions``: every version of the model, when the caller has just read them for itself
    (reading 50 versions' tags from MLflow takes tens of milliseconds)."""
    challenger = registry.version_by_alias(model, CHALLENGER)

    def describe(v: VersionInfo | None) -> dict[str, Any] | None:
        if v is None:
            return None
        return {
            **v.to_dict(),
            "metrics": {
                k.removeprefix("test_"): float(val)
                for k, val in v.tags.items()
                if k.startswith("test_")
            },
            "promoted_at": v.tags.get("promoted_at"),
            "validated_against_champion": v.tags.get("validated_against_champion"),
        }

    canary = read_target(model)
    with open_audit(store) as audit:
        decisions = [r.to_dict() for r in audit.query(model=model, limit=recent)]
        prev = previous_champion(model, audit)
        check = champion.compare(model, audit, canary.champion)
    current = registry.get_version(model, check.recorded) if check.recorded else None
    return {
        "model": model,
        "champion": describe(current),
        "champion_check": check.to_dict(),
        "challenger": describe(challenger),
        "previous_champion": prev,
        "canary": canary.canary.to_dict() if canary.canary else None,
        "versions": [
            v.to_dict() for v in (registry.list_versions(model) if versions is None else versions)
        ],
        "recent_decisions": decisions,
    }

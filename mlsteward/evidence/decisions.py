"""Who decided about the version, and what they were allowed to do: ``approvals.json`` and
``access_control.json``.

Both are read from the audit trail, the one place every channel writes (the command line, the
API, the Prefect pause form), with the ledger's rules for who an approval counts for
(``governance.ledger``). A principal's roles come from the identity store as they are now; the
trail's ``principal_added``/``principal_changed`` records (records about no model, in full in
the pack's audit slice) say when they were given. Token hashes and secrets are never read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mlsteward.audit import Action, AuditRecord
from mlsteward.evidence.manifest import write_json
from mlsteward.evidence.subject import Pieces, Subject
from mlsteward.governance import ledger
from mlsteward.identity import PERMISSION_HELP, PERMISSIONS, identity_store
from mlsteward.identity.principals import KINDS
from mlsteward.identity.roles import TEAM_FREE, Role

DECISIONS = frozenset(
    a.value
    for a in (
        Action.VERSION_REGISTERED,
        Action.VALIDATION_PASSED,
        Action.VALIDATION_FAILED,
        Action.APPROVAL_REQUESTED,
        Action.APPROVAL_TOKEN_ISSUED,
        Action.APPROVAL_GRANTED,
        Action.APPROVAL_REJECTED,
        Action.APPROVAL_TIMED_OUT,
        Action.APPROVAL_REFUSED,
        Action.PROMOTION_INTENT,
        Action.PROMOTED,
        Action.PROMOTION_REFUSED,
        Action.PROMOTION_RECOVERED,
        Action.PROMOTION_ABANDONED,
        Action.ROLLBACK,
        Action.ALIAS_CHANGED,
        Action.ALIAS_MISMATCH,
        Action.ALIAS_REPAIRED,
        Action.ROLLOUT_STARTED,
        Action.ROLLOUT_COMPLETED,
        Action.ROLLOUT_ROLLED_BACK,
        Action.ROLLOUT_ABORTED,
        Action.ROLLOUT_REFUSED,
    )
)
"""The records that decide (or try to decide) what becomes of a version; its submission
(``version_registered``) first, since four eyes is about who submitted."""

FOUR_EYES_RULE = (
    "Under promotion.policy manual, approvals.required distinct principals must approve in the "
    "current round, none of them the principal who trained or submitted the version. A round "
    "ends at a promotion, a rejection, a timed-out request, failed gates or a rollback away "
    "from the version. The local operator (single-user mode) is a claim, not an identity: its "
    "records say authenticated false."
)


def _authenticated(rec: AuditRecord, identity: str | None) -> bool | None:
    """Whether a verified principal acted: None when no principal did (a run on its own,
    ``system``), False for the local operator or a record that says so."""
    if identity is None:
        return None
    return rec.details.get("authenticated") is not False and not identity.startswith("local:")


def _who(rec: AuditRecord) -> str | None:
    if rec.action == Action.APPROVAL_GRANTED:
        return ledger.approver_identity(rec)
    named = rec.details.get("identity")
    if isinstance(named, str) and ledger.identity_of(named) == named:
        return named
    return ledger.identity_of(rec.actor)


def _concerns(rec: AuditRecord, version: str) -> bool:
    if rec.action not in DECISIONS:
        return False
    if rec.version == version:
        return True
    # a rollback is recorded on the version it restores; the one it left is details.from
    return rec.action == Action.ROLLBACK and str(rec.details.get("from")) == version


def _entry(rec: AuditRecord, version: str) -> dict[str, Any]:
    identity = _who(rec)
    via, sep, _ = rec.actor.rpartition(ledger.ACTING_FOR)
    return {
        "seq": rec.seq,
        "ts": rec.ts,
        "action": rec.action,
        "about": "rolled back from this version"
        if rec.action == Action.ROLLBACK and rec.version != version
        else "this version",
        "actor": rec.actor,
        "identity": identity,
        "acting_via": via if sep else None,
        "authenticated": _authenticated(rec, identity),
        "reason": rec.reason,
        "override": rec.details.get("override") is True,
        "details": rec.details,
    }


def _four_eyes(s: Subject, decisions: list[AuditRecord]) -> dict[str, Any]:
    """The submitter, each promotion with the approvals of its round, and the standing now."""
    own = s.version_records
    rollbacks = [r for r in s.own if r.action == Action.ROLLBACK]
    standing = ledger.standing_from(s.model, s.version, own, rollbacks)
    submitter = standing.submitter
    promotions: list[dict[str, Any]] = []
    approvals: list[str] = []
    for rec in decisions:
        left = rec.action == Action.ROLLBACK and str(rec.details.get("from")) == s.version
        if rec.action == Action.PROMOTED:
            promotions.append(
                {
                    "seq": rec.seq,
                    "promoted_by": _who(rec),
                    "approvals_in_round": list(approvals),
                    "approvers_other_than_submitter": len([a for a in approvals if a != submitter]),
                    "submitter_approved": submitter is not None and submitter in approvals,
                    "promoted_by_submitter": submitter is not None and _who(rec) == submitter,
                    "override": rec.details.get("override") is True,
                    "approval": rec.details.get("approval"),
                }
            )
        if left or rec.action in ledger.ROUND_ENDS:
            approvals = []
        if rec.action == Action.APPROVAL_GRANTED:
            who = ledger.approver_identity(rec)
            if who is not None and who not in approvals:
                approvals.append(who)
    cfg = s.cfg
    return {
        "rule": FOUR_EYES_RULE,
        "policy": cfg.promotion.policy if cfg is not None else None,
        "approvals_required": cfg.approvals.required if cfg is not None else None,
        "configuration": s.cfg_source,
        "submitter": submitter,
        "submitter_authenticated": _authenticated(s.registered, submitter),
        "promotions": promotions,
        "now": {
            "approvals_in_current_round": standing.approvals,
            "blocked": standing.blocked,
            "waiting_for_approval": standing.request is not None,
        },
    }


def collect_approvals(root: Path, s: Subject) -> Pieces:
    """``approvals.json``: every decision on the version in order, and the four-eyes facts."""
    out = Pieces()
    decisions = [r for r in s.own if _concerns(r, s.version)]
    write_json(
        root,
        "approvals.json",
        {
            "model": s.model,
            "version": s.version,
            "decisions": [_entry(r, s.version) for r in decisions],
            "four_eyes": _four_eyes(s, decisions),
        },
    )
    out.add("approvals", "approvals.json")
    return out


def collect_access(root: Path, s: Subject) -> Pieces:
    """``access_control.json``: the permission table and the principals that acted on the
    model, with their roles now (never a token or its hash)."""
    out = Pieces()
    acted: dict[str, Counter[str]] = {}
    span: dict[str, list[int]] = {}
    others: Counter[str] = Counter()
    for rec in s.own:
        who = _who(rec)
        if who is None:
            others[rec.actor.split(":", 1)[0]] += 1
            continue
        acted.setdefault(who, Counter())[rec.action] += 1
        first_last = span.setdefault(who, [rec.seq, rec.seq])
        first_last[1] = rec.seq
    with identity_store() as store:
        known = {p["identity"]: p for p in store.list_principals()}
    principals = [
        _principal(identity, known.get(identity), acted[identity], span[identity])
        for identity in sorted(acted)
    ]
    cfg = s.cfg
    write_json(
        root,
        "access_control.json",
        {
            "model": s.model,
            "owner_team": cfg.owner if cfg is not None else None,
            "roles": {role.value: sorted(p.value for p in PERMISSIONS[role]) for role in Role},
            "permissions": {p.value: text for p, text in PERMISSION_HELP.items()},
            "team_free_permissions": sorted(p.value for p in TEAM_FREE),
            "teams_rule": "a write on a model owned by a team needs membership of that team "
            "(a principal with no teams is not limited to any; admins never are)",
            "principals": principals,
            "actors_without_identity": dict(sorted(others.items())),
        },
    )
    out.add("access_control", "access_control.json")
    return out


def _principal(
    identity: str, stored: dict[str, Any] | None, actions: Counter[str], span: list[int]
) -> dict[str, Any]:
    kind, _, name = identity.partition(":")
    entry: dict[str, Any] = {
        "identity": identity,
        "kind": kind if kind in KINDS else None,
        "name": name,
        "acted": dict(sorted(actions.items())),
        "first_seq": span[0],
        "last_seq": span[1],
    }
    if kind == "local":
        return {
            **entry,
            "authenticated": False,
            "roles": [Role.ADMIN.value],
            "registered": False,
            "note": "the local operator of single-user mode: an admin by rule, never verified",
        }
    if stored is None:
        return {
            **entry,
            "authenticated": True,
            "roles": None,
            "registered": False,
            "note": "not in the identity store: an identity provider's user (roles from its "
            "token at the time) or a principal since removed",
        }
    roles = [str(r) for r in stored.get("roles") or []]
    permissions = sorted({p.value for r in roles for p in PERMISSIONS.get(Role(r), ())})
    return {
        **entry,
        "authenticated": True,
        "registered": True,
        "roles": roles,
        "permissions": permissions,
        "teams": stored.get("teams"),
        "created_at": stored.get("created_at"),
        "created_by": stored.get("created_by"),
        "disabled": stored.get("disabled"),
    }

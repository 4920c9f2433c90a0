"""What the audit trail says about one version's approvals: who submitted it, who approved it
in the current round, whether a person's rejection or a rollback blocks it, and whether a
request waits in the queue.

The trail is the one place every channel writes (the CLI and the API through
``governance.decisions``, the Prefect pause form through the promotion flow), so counting
approvals here makes an approval count the same whichever channel it came through.

A *round* of approvals ends when the version is promoted, rejected (by a person or a timeout),
fails its gates, or is rolled back from: approvals given before that are spent and count no
more. A *block* is a person's rejection or a rollback away from the version; only an admin's
override (a record with ``details.override`` true) lifts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlsteward.audit import Action, AuditRecord, AuditStore

ROUND_ENDS = frozenset(
    {
        Action.PROMOTED.value,
        Action.APPROVAL_REJECTED.value,
        Action.APPROVAL_TIMED_OUT.value,
        Action.VALIDATION_FAILED.value,
    }
)
"""Records of the version itself after which earlier approvals no longer count."""

ACTING_FOR = " for "
"""``flow-run:<id> for user:alice``: a run acting for a principal."""

PERSON_KINDS = ("user", "service", "local")


def identity_of(actor: str | None) -> str | None:
    """The principal an audit actor names (``user:alice``), or None when no principal acted:
    a flow run on its own (``flow-run:<id>``), ``system``, or an actor from before identities
    (a bare name)."""
    if not actor:
        return None
    _, sep, acting_for = actor.rpartition(ACTING_FOR)
    who = acting_for if sep else actor
    kind, colon, name = who.partition(":")
    if colon and kind in PERSON_KINDS and name:
        return who
    return None


@dataclass(frozen=True)
class Request:
    """A promotion waiting for approval: who asked, when, and the paused run (if any)."""

    seq: int
    requested_at: str
    requested_by: str
    flow_run_id: str | None


@dataclass(frozen=True)
class Standing:
    """One version as its audit records leave it."""

    model: str
    version: str
    submitter: str | None
    approvals: list[str] = field(default_factory=list)
    """Distinct identities that approved in the current round, in the order they did."""
    blocked: str | None = None
    """Why promoting it needs an override (a person's rejection, a rollback), or None."""
    request: Request | None = None
    """The latest approval request of the current round, or None: not in the queue."""
    flow_runs: list[str] = field(default_factory=list)
    """Flow runs that asked for approval in the current round, latest first."""


def submitter(records: list[AuditRecord]) -> str | None:
    """The principal that trained or submitted the version (its ``version_registered``
    record's actor); None when no principal did (four eyes then has nobody to exclude)."""
    for rec in records:
        if rec.action == Action.VERSION_REGISTERED:
            return identity_of(rec.actor)
    return None


def approver_identity(rec: AuditRecord) -> str | None:
    """Who an ``approval_granted`` record counts for: the identity its details name, else
    the principal its actor names. A record from before identities (a typed name) counts
    for nobody."""
    named = rec.details.get("identity") if isinstance(rec.details, dict) else None
    if isinstance(named, str) and identity_of(named) == named:
        return named
    return identity_of(rec.actor)


def _overrides(rec: AuditRecord) -> bool:
    return isinstance(rec.details, dict) and rec.details.get("override") is True


def standing_from(
    model: str, version: str, own: list[AuditRecord], rollbacks: list[AuditRecord]
) -> Standing:
    """The standing from the version's own records and the model's rollback records (a
    rollback record names the version it restored; the one it left is ``details.from``)."""
    version = str(version)
    left = [r for r in rollbacks if str(r.details.get("from")) == version]
    left_seqs = {r.seq for r in left}
    events = sorted([*own, *left], key=lambda r: r.seq)
    approvals: list[str] = []
    flow_runs: list[str] = []
    request: Request | None = None
    blocked: str | None = None
    for rec in events:
        action = rec.action
        if rec.seq in left_seqs or action in ROUND_ENDS:
            approvals, request, flow_runs = [], None, []
        if rec.seq in left_seqs:
            blocked = f"rolled back from (audit #{rec.seq}, by {rec.actor}: {rec.reason})"
            continue
        if action == Action.APPROVAL_REJECTED:
            blocked = f"rejected by {rec.actor} (audit #{rec.seq}: {rec.reason})"
        elif _overrides(rec):
            blocked = None
        if action == Action.APPROVAL_GRANTED:
            who = approver_identity(rec)
            if who is not None and who not in approvals:
                approvals.append(who)
        elif action == Action.APPROVAL_REQUESTED:
            run = rec.details.get("flow_run_id")
            request = Request(
                seq=rec.seq,
                requested_at=rec.ts,
                requested_by=str(rec.details.get("requested_by") or rec.actor),
                flow_run_id=str(run) if run else None,
            )
            if run and str(run) not in flow_runs:
                flow_runs.insert(0, str(run))
    return Standing(
        model=model,
        version=version,
        submitter=submitter(own),
        approvals=approvals,
        blocked=blocked,
        request=request,
        flow_runs=flow_runs,
    )


def standing(model: str, version: str, audit: AuditStore) -> Standing:
    """Read one version's standing from the trail (two indexed queries)."""
    own = audit.query(model=model, version=str(version))
    rollbacks = audit.query(model=model, action=Action.ROLLBACK)
    return standing_from(model, str(version), own, rollbacks)


def requested_versions(audit: AuditStore, model: str | None = None) -> list[tuple[str, str]]:
    """(model, version) of every approval request, oldest first, each once."""
    seen: dict[tuple[str, str], None] = {}
    for rec in audit.query(model=model, action=Action.APPROVAL_REQUESTED):
        if rec.model and rec.version:
            seen[(rec.model, rec.version)] = None
    return list(seen)


def open_requests(audit: AuditStore, model: str | None = None) -> list[tuple[str, str]]:
    """(model, version) of every version whose newest approval request is still open, in
    :func:`requested_versions`' order: no round end of the version and no rollback away from
    it came after that request. For every other version :func:`standing` has no ``request``.

    Read by action (indexed, a few records each), never a version's every record: a version
    that served as champion carries its scoring and drift records, thousands in a year.
    """
    newest: dict[tuple[str, str], int] = {}
    for rec in audit.query(model=model, action=Action.APPROVAL_REQUESTED):
        if rec.model and rec.version:
            newest[(rec.model, rec.version)] = rec.seq  # an update keeps the key's place
    closed: dict[tuple[str, str], int] = {}

    def close(key: tuple[str, str], seq: int) -> None:
        closed[key] = max(closed.get(key, 0), seq)

    for name in dict.fromkeys(m for m, _ in newest):
        for action in ROUND_ENDS:
            for rec in audit.query(model=name, action=action):
                if rec.version is not None:
                    close((name, str(rec.version)), rec.seq)
        for rec in audit.query(model=name, action=Action.ROLLBACK):
            close((name, str(rec.details.get("from"))), rec.seq)
    return [key for key, seq in newest.items() if seq > closed.get(key, 0)]


def run_request(audit: AuditStore, flow_run_id: str) -> tuple[str, str] | None:
    """(model, version) a flow run asked approval for, or None."""
    for rec in reversed(audit.query(action=Action.APPROVAL_REQUESTED)):
        if str(rec.details.get("flow_run_id")) == str(flow_run_id) and rec.model and rec.version:
            return rec.model, rec.version
    return None


def answered(
    audit: AuditStore, model: str, version: str, token_id: str, after: int
) -> AuditRecord | None:
    """The record a flow run wrote for the answer carrying approval token ``token_id``."""
    for rec in audit.query(model=model, version=version):
        if rec.seq > after and rec.details.get("token_id") == token_id:
            return rec
    return None


def latest(
    audit: AuditStore, model: str, version: str, actions: set[str], after: int
) -> AuditRecord | None:
    """The first record of one of ``actions`` for the version after ``after``."""
    for rec in audit.query(model=model, version=version):
        if rec.seq > after and rec.action in actions:
            return rec
    return None


def details(rec: AuditRecord | None) -> dict[str, Any]:
    return dict(rec.details) if rec is not None and isinstance(rec.details, dict) else {}

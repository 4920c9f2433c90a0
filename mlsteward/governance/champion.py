"""Which version is champion: what the governance record says, never what the alias says alone.

MLflow's ``champion`` alias is a pointer anyone with write access to the registry can move (one
click in its UI). The audit trail is where governance writes each promotion and rollback, under
the promotion lock, after the gates and the integrity check. So the champion is the ``to`` of
the newest ``promoted`` or ``rollback`` record; the alias is how the registry shows it, and a
disagreement between the two (``alias_mismatch``) means the registry was changed outside
governance, or a promotion was interrupted between its intent and its completion record.

Everything that uses the champion (serving, batch scoring, drift, rollouts, reproduce) resolves
it here and refuses to load a version the record does not name. ``reconcile`` compares the two
for a model, finishes or undoes an interrupted promotion, and with ``repair`` puts the alias
back where the record says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlsteward.audit import Action, AuditRecord, AuditStore
from mlsteward.errors import AliasMismatchError, NotFoundError
from mlsteward.governance import registry
from mlsteward.governance.attestations import verify_promotion
from mlsteward.governance.registry import CHAMPION, VersionInfo

COMPLETIONS = (Action.PROMOTED, Action.ROLLBACK, Action.PROMOTION_ABANDONED)
"""Records that close a promotion intent (their ``details.intent_seq`` names it)."""


@dataclass(frozen=True)
class Pending:
    """A promotion or rollback whose intent was recorded but whose completion was not: the
    process died, or MLflow failed and the change could not be undone."""

    seq: int
    action: str
    from_version: str | None
    to_version: str
    actor: str

    def describe(self) -> str:
        return (
            f"an interrupted {self.action} (audit #{self.seq}: {self.from_version or 'none'} -> "
            f"{self.to_version}, by {self.actor})"
        )


@dataclass(frozen=True)
class ChampionState:
    """The record and the registry side by side, for one model."""

    model: str
    recorded: str | None  # the champion per the newest promotion/rollback record
    record_seq: int | None
    alias: str | None  # what MLflow's champion alias points at
    pending: Pending | None
    ignored: tuple[int, ...] = ()  # newer promotion records without a valid signature

    @property
    def consistent(self) -> bool:
        return self.recorded == self.alias and self.pending is None

    def problem(self) -> str | None:
        """One sentence for ``status``, ``/readyz`` and the dashboard, or None."""
        if self.pending is not None:
            return (
                f"{self.model}: {self.pending.describe()} is not finished; "
                "`mlsteward audit reconcile --repair` finishes or undoes it"
            )
        if self.recorded != self.alias:
            return mismatch_message(self.model, self.alias, self.recorded)
        if self.ignored:
            seqs = ", ".join(f"#{n}" for n in self.ignored)
            return (
                f"{self.model}: audit record(s) {seqs} claim a change of champion without a "
                "valid governance signature (forged or edited); they are ignored"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "recorded_champion": self.recorded,
            "record_seq": self.record_seq,
            "alias_champion": self.alias,
            "consistent": self.consistent,
            "pending": None if self.pending is None else self.pending.__dict__,
            "ignored_records": list(self.ignored),
            "problem": self.problem(),
        }


def version_text(version: str | None, none: str = "none") -> str:
    """``v3``, or ``none`` for no version."""
    return f"v{version}" if version else none


def mismatch_message(model: str, alias: str | None, recorded: str | None) -> str:
    return (
        f"{model}: the MLflow alias @champion points at {version_text(alias, 'no version')} but "
        f"the governance record says {version_text(recorded, 'no champion')}; the registry was "
        "changed outside governance. Nothing is loaded from the alias; `mlsteward audit "
        "reconcile --repair` puts it back"
    )


def _newest(audit: AuditStore, model: str, actions: tuple[Action, ...]) -> AuditRecord | None:
    found = [r for a in actions if (r := audit.last(model=model, action=a)) is not None]
    return max(found, key=lambda r: r.seq, default=None)


CHANGES = (Action.PROMOTED, Action.ROLLBACK)
"""The records that change the champion."""


def _signed_newest(model: str, audit: AuditStore) -> tuple[AuditRecord | None, AuditRecord | None]:
    """The newest change-of-champion record, and the newest of them whose governance signature
    verifies (the same record unless newer ones are forged or edited)."""
    newest = _newest(audit, model, CHANGES)
    if newest is None or verify_promotion(newest):
        return newest, newest
    changes = sorted(
        (r for a in CHANGES for r in audit.query(model=model, action=a)), key=lambda r: r.seq
    )
    signed = [r for r in changes if verify_promotion(r)]
    return newest, (signed[-1] if signed else None)


def _to(record: AuditRecord | None) -> tuple[str | None, int | None]:
    if record is None:
        return None, None
    to = record.details.get("to", record.version)
    return (str(to) if to is not None else None), record.seq


def recorded(model: str, audit: AuditStore) -> tuple[str | None, int | None]:
    """The champion version per the newest *signed* promotion or rollback record, and that
    record's seq (``(None, None)`` when governance never made one).

    A record whose governance signature does not verify (appended by someone with write access
    to the store but without the key, or edited) is passed over: it cannot make a champion.
    """
    return _to(_signed_newest(model, audit)[1])


def unsigned_changes(model: str, audit: AuditStore, after: int | None) -> list[int]:
    """Seqs of promotion or rollback records after ``after`` that are not signed: forged or
    edited records the champion ignores (reported, never followed)."""
    return [
        r.seq
        for a in CHANGES
        for r in audit.query(model=model, action=a)
        if (after is None or r.seq > after) and not verify_promotion(r)
    ]


def pending(model: str, audit: AuditStore) -> Pending | None:
    """The newest promotion intent that no completion record closes, if any."""
    intent = audit.last(model=model, action=Action.PROMOTION_INTENT)
    if intent is None:
        return None
    closed = _newest(audit, model, COMPLETIONS)
    if closed is not None and closed.seq > intent.seq:
        closed_intent = closed.details.get("intent_seq")
        # records of the same model after the intent were written under the same lock: a
        # completion after it closes it (its intent_seq says so; older completions have none)
        if closed_intent is None or int(closed_intent) >= intent.seq:
            return None
    d = intent.details
    return Pending(
        seq=intent.seq,
        action=str(d.get("action", Action.PROMOTED)),
        from_version=None if d.get("from") is None else str(d["from"]),
        to_version=str(d["to"]),
        actor=intent.actor,
    )


def state(model: str, audit: AuditStore) -> ChampionState:
    """Record and alias for ``model``, the alias read now."""
    found = registry.version_by_alias(model, CHAMPION)
    return compare(model, audit, found.version if found else None)


def compare(model: str, audit: AuditStore, alias: str | None) -> ChampionState:
    """Record and an alias the caller has just read (serving reads the registry once a poll)."""
    newest, signed = _signed_newest(model, audit)
    version, seq = _to(signed)
    ignored = tuple(unsigned_changes(model, audit, seq)) if newest is not signed else ()
    return ChampionState(
        model=model,
        recorded=version,
        record_seq=seq,
        alias=alias,
        pending=pending(model, audit),
        ignored=ignored,
    )


def audit_mismatch(
    audit: AuditStore, found: ChampionState, *, actor: str, purpose: str, refused: bool = True
) -> None:
    """One ``alias_mismatch`` record: ``purpose`` was refused because of it, or (``refused``
    False) a check such as reconcile found it."""
    audit.append(
        Action.ALIAS_MISMATCH,
        model=found.model,
        version=found.alias,
        actor=actor,
        reason=f"{purpose} {'refused' if refused else 'found'}: {found.problem()}",
        details={
            "alias": found.alias,
            "recorded": found.recorded,
            "record_seq": found.record_seq,
            "pending_intent": None if found.pending is None else found.pending.seq,
            "purpose": purpose,
        },
    )


def require_consistent(model: str, audit: AuditStore, *, actor: str, purpose: str) -> str | None:
    """The recorded champion version (None: none yet), provided the alias agrees.

    Raises:
        AliasMismatchError: the alias disagrees with the record, or a promotion is unfinished
            (audited as ``alias_mismatch``: ``purpose`` refused until it is reconciled).
    """
    found = state(model, audit)
    if not found.consistent:
        audit_mismatch(audit, found, actor=actor, purpose=purpose)
        raise AliasMismatchError(
            f"{purpose} refused: {found.problem()}",
            model=model,
            alias=found.alias,
            recorded=found.recorded,
        )
    return found.recorded


def resolve(model: str, audit: AuditStore, *, actor: str, purpose: str) -> VersionInfo:
    """The champion to use for ``purpose`` (``scoring``, ``drift``, ...): the recorded one,
    provided the alias agrees.

    Raises:
        AliasMismatchError: see :func:`require_consistent`; nothing may be loaded.
        NotFoundError: governance never made a champion of this model.
    """
    version = require_consistent(model, audit, actor=actor, purpose=purpose)
    if version is None:
        raise NotFoundError(f"{model} has no champion yet: train and promote a version first")
    return registry.get_version(model, version)

"""Reconciling the registry with the governance record: ``mlsteward audit reconcile``.

The record says which version is champion (``governance.champion``); MLflow's alias is only
how the registry shows it. Reconciling reads both for each model. Without ``repair`` it reports
(and audits) each disagreement; with ``repair`` it also finishes or undoes an interrupted
promotion and moves the alias back where the record says, under the promotion lock, audited as
``alias_repaired``. A scheduled deployment runs it with ``repair`` so a moved alias does not
stand for long.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mlsteward.audit import Action, AuditStore
from mlsteward.governance import champion, registry
from mlsteward.governance.champion import version_text
from mlsteward.governance.promotion import (
    LOCK_TIMEOUT_SECONDS,
    Lifecycle,
    open_audit,
    promotion_lock_name,
    recover,
)
from mlsteward.governance.registry import CHAMPION


@dataclass(frozen=True)
class Reconciled:
    """One model: what the record and the alias said, and what was done."""

    model: str
    recorded: str | None
    alias: str | None
    outcome: str  # "consistent", "mismatch", "repaired", "finished", "undone"
    message: str

    @property
    def ok(self) -> bool:
        """Registry and record agree now (after any repair)."""
        return self.outcome != "mismatch"

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def reconcile_model(
    model: str, *, repair: bool, actor: str, store: AuditStore | None = None
) -> Reconciled:
    with (
        open_audit(store) as audit,
        audit.lock(promotion_lock_name(model), LOCK_TIMEOUT_SECONDS) as fence,
    ):
        recovered = recover(audit, fence, model, actor=actor) if repair else None
        found = champion.state(model, audit)
        if found.consistent:
            if recovered:
                return Reconciled(
                    model, found.recorded, found.alias, recovered,
                    f"{model}: an interrupted promotion was {recovered}; champion "
                    f"{version_text(found.recorded)}",
                )  # fmt: skip
            return Reconciled(
                model, found.recorded, found.alias, "consistent",
                f"{model}: registry and record agree (champion "
                f"{version_text(found.recorded)})",
            )  # fmt: skip
        champion.audit_mismatch(audit, found, actor=actor, purpose="reconcile", refused=False)
        if not repair or found.pending is not None:
            return Reconciled(model, found.recorded, found.alias, "mismatch", found.problem() or "")
        fence.check()
        registry.point_alias(model, CHAMPION, found.recorded)
        if found.recorded is not None:
            registry.set_tags(model, found.recorded, {"lifecycle": Lifecycle.CHAMPION})
        audit.append(
            Action.ALIAS_REPAIRED,
            model=model,
            version=found.recorded,
            actor=actor,
            reason=(
                f"@champion put back from {found.alias or 'none'} to "
                f"{found.recorded or 'none'}, as the governance record (#{found.record_seq}) says"
            ),
            details={"alias": CHAMPION, "from": found.alias, "to": found.recorded},
        )
        return Reconciled(
            model, found.recorded, found.recorded, "repaired",
            f"{model}: @champion was {version_text(found.alias)}; put back to "
            f"{version_text(found.recorded)} as the record says",
        )  # fmt: skip


def reconcile(
    models: list[str], *, repair: bool, actor: str, store: AuditStore | None = None
) -> list[Reconciled]:
    """Every named model in turn, on one audit store; the first error stops the rest."""
    with open_audit(store) as audit:
        return [reconcile_model(m, repair=repair, actor=actor, store=audit) for m in models]

"""The upkeep flow: the scheduled guard of the governance record.

Every run puts MLflow's champion aliases back where the record says (``repair``), then signs
the audit trail's head into the anchor, so a moved alias does not stand for longer than the
schedule's interval and the newest checkpoint is never older than it either.
"""

from __future__ import annotations

from prefect import flow

from mlsteward.governance.reconcile import Reconciled
from tasks.common import run_actor
from tasks.upkeep import checkpoint_audit, reconcile_registry


@flow(name="audit-upkeep", log_prints=True)
def upkeep_flow(repair: bool = True, requested_by: str | None = None) -> list[Reconciled]:
    """Reconcile every model's champion alias with the record, then checkpoint the trail.

    Args:
        repair: put a moved alias back and finish or undo an interrupted promotion (audited);
            false only reports (and audits) each mismatch.
        requested_by: the principal the run acts for (user:NAME or service:NAME), when a
            command or the API started it.
    """
    actor = run_actor(requested_by)
    # 1. the registry as the record says
    found = reconcile_registry(repair, actor)
    # 2. the chain head, signed, outside the store
    checkpoint_audit(actor)
    return found

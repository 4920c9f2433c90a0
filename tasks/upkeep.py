"""Upkeep tasks: reconcile the registry with the governance record, anchor the audit trail."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import audit_store
from mlsteward.audit.checkpoints import write_checkpoint
from mlsteward.config.models import model_names
from mlsteward.governance.reconcile import Reconciled, reconcile
from tasks.common import run_logger


@task(name="reconcile-registry", cache_policy=NO_CACHE)
def reconcile_registry(repair: bool, actor: str) -> list[Reconciled]:
    """Every configured model's champion alias against the record; with ``repair``, put back."""
    found = reconcile(model_names(), repair=repair, actor=actor)
    log = run_logger()
    for item in found:
        (log.info if item.outcome == "consistent" else log.warning)("%s", item.message)
    rows = "\n".join(
        f"| {r.model} | {r.recorded or '-'} | {r.alias or '-'} | {r.outcome} |" for r in found
    )
    create_markdown_artifact(
        key="audit-reconcile",
        markdown="# Registry against the governance record\n\n"
        "| model | record says | alias was | outcome |\n| --- | --- | --- | --- |\n" + rows,
        description="mlsteward audit reconcile",
    )
    return found


@task(name="audit-checkpoint", cache_policy=NO_CACHE)
def checkpoint_audit(actor: str) -> int:
    """Sign the chain head and write it to the anchor; returns the checkpointed seq."""
    with audit_store() as store:
        cp = write_checkpoint(store, actor=actor, reason="scheduled checkpoint")
    run_logger().info("audit checkpoint: record %d, key %s", cp.seq, cp.key_id)
    return cp.seq

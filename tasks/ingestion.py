"""Ingestion-stage tasks: a source into a data version, and the online store filled from it.

Apart from the feature-stage tasks (``tasks.features``) because ``mlsteward ingest`` and the
ingestion deployments start here: nothing of governance (MLflow) or training (XGBoost) is
imported on their way in.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action, AuditStore, audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.data.ingestion import IngestionSpec, IngestResult, ingest
from mlsteward.errors import MlstewardError
from mlsteward.features.materialize import MaterializeSpec, load_online
from mlsteward.features.repo import apply_model
from tasks.common import run_logger


@task(name="ingest-source", cache_policy=NO_CACHE)
def ingest_source(spec: IngestionSpec) -> IngestResult:
    """Ingest and audit the outcome: accepted data versions and refused sources alike."""
    cfg = spec.cfg
    with audit_store() as audit:
        try:
            result = ingest(cfg, spec.source, publish=apply_model)
        except MlstewardError as exc:
            _audit_rejected(audit, spec, exc)
            raise
        audit.append(
            Action.INGESTION_ACCEPTED,
            model=cfg.name,
            actor=spec.actor,
            reason=f"data version {result.snapshot.digest[:12]}",
            details={
                "data_version": result.snapshot.digest,
                "source": result.snapshot.source_path,
                "rows": result.snapshot.rows,
                "bad_rows": result.report.bad_rows,
                "quarantine_path": str(result.quarantine_path) if result.quarantine_path else None,
                **(
                    {"offline_table": result.offline_table.to_dict()}
                    if result.offline_table
                    else {}
                ),
            },
        )
    _log_ingested(cfg, result)
    return result


def _audit_rejected(audit: AuditStore, spec: IngestionSpec, exc: MlstewardError) -> None:
    """A refused source is recorded with the contract's counts, so the trail shows why."""
    report = getattr(exc, "report", None) or {}
    audit.append(
        Action.INGESTION_REJECTED,
        model=spec.cfg.name,
        actor=spec.actor,
        reason=str(exc)[:2000],
        details={
            "source": spec.source_label,
            **{
                k: report[k]
                for k in ("total_rows", "bad_rows", "bad_share", "violations")
                if k in report
            },
        },
    )


def _log_ingested(cfg: ModelConfig, result: IngestResult) -> None:
    log = run_logger()
    log.info(
        "ingested %s rows into %s (data version %s)",
        result.snapshot.rows,
        cfg.name,
        result.snapshot.digest[:12],
    )
    if result.offline_table:
        table = result.offline_table
        log.info(
            "offline table %s: %s (%s rows, %.2f s)",
            table.name,
            "loaded" if table.created else "reused after verifying its row count",
            table.rows,
            table.seconds,
        )
    if result.report.bad_rows:
        log.warning("%s rows quarantined in %s", result.report.bad_rows, result.quarantine_path)


@task(name="materialize", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def materialize_online(spec: MaterializeSpec) -> dict[str, Any]:
    """Retried because it is I/O against the stores; a retry loads the spec's same window."""
    return load_online(spec)

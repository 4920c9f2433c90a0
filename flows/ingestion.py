"""Ingestion and materialization flows: data enters the feature store only through these."""

from __future__ import annotations

from prefect import flow

from mlsteward.config.models import get_model_config
from mlsteward.data.ingestion import IngestionResult, IngestionSpec
from mlsteward.features.materialize import MaterializeResult, MaterializeSpec
from tasks.common import run_actor
from tasks.ingestion import ingest_source, materialize_online
from tasks.lineage import lineage_hooks


@flow(name="ingest-data", **lineage_hooks("ingestion"))
def ingestion_flow(
    model: str = "heart_disease", source: str | None = None, requested_by: str | None = None
) -> IngestionResult:
    """Contract-check SOURCE (default: the model's configured source) and snapshot it for Feast.

    Args:
        model: name of a model config in config/models.
        source: CSV or parquet path; defaults to the config's source.path.
        requested_by: the principal this run acts for (``user:alice``).
    """
    # 0. The run's settings: the model's config, the source it reads, who runs it
    spec = IngestionSpec.resolve(model, source=source, actor=run_actor(requested_by))

    # 1. Contract, quarantine, snapshot, Feast; accepted or refused, audited
    return IngestionResult.model_validate(ingest_source(spec).to_dict())


@flow(name="materialize-features")
def materialize_flow(model: str = "heart_disease") -> MaterializeResult:
    """Fill the online store with the latest feature values of MODEL's entities.

    Args:
        model: name of a model config in config/models.
    """
    # 0. The run's settings: an online-enabled model and the window it loads
    spec = MaterializeSpec.resolve(get_model_config(model))

    # 1. The latest value per entity inside the window, into the online store
    return MaterializeResult.model_validate(materialize_online(spec))

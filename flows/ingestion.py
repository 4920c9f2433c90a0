"""Ingestion and materialization flows: data enters the feature store only through these."""

from __future__ import annotations

from prefect import flow

from mlsteward.config.models import get_model_config
from mlsteward.data.ingestion import IngestionResult
from mlsteward.features.materialize import MaterializeResult
from tasks.common import run_actor
from tasks.ingestion import ingest_source, materialize_online


@flow(name="ingest-data")
def ingestion_flow(model: str = "heart_disease", source: str | None = None) -> IngestionResult:
    """Contract-check SOURCE (default: the model's configured source) and snapshot it for Feast.

    Args:
        model: name of a model config in config/models.
        source: CSV or parquet path; defaults to the config's source.path.
    """
    cfg = get_model_config(model)
    return IngestionResult.model_validate(ingest_source(cfg, source, run_actor()).to_dict())


@flow(name="materialize-features")
def materialize_flow(model: str = "heart_disease") -> MaterializeResult:
    """Fill the online store with the latest feature values of MODEL's entities.

    Args:
        model: name of a model config in config/models.
    """
    cfg = get_model_config(model)
    return MaterializeResult.model_validate({"model": cfg.name, **materialize_online(cfg)})

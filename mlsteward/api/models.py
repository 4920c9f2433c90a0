"""``/models``: what is configured and what serves; a model's status; its versions with
metrics, lineage, gates, fairness and approvals. Reading needs ``read``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mlsteward.api import views
from mlsteward.api.approvals import pending_approvals
from mlsteward.api.auth import VersionNumber, allowed, allowed_anywhere, check_version, path_model
from mlsteward.api.errors import responses
from mlsteward.api.schemas import ModelDetail, ModelList, VersionDetail, VersionList
from mlsteward.audit import audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.governance import registry
from mlsteward.identity import Permission, Principal

router = APIRouter(tags=["models"])
Reader = Annotated[Principal, Depends(allowed(Permission.READ))]
Model = Annotated[ModelConfig, Depends(path_model)]


@router.get("/models", response_model=ModelList, responses=responses(401, 403))
def list_models(
    _: Annotated[Principal, Depends(allowed_anywhere(Permission.READ))],
) -> dict[str, Any]:
    """Every configured model with its champion, challenger and open canary."""
    return {"models": [views.model_item(name) for name in views.configured_models()]}


@router.get("/models/{model}", response_model=ModelDetail, responses=responses(401, 403, 404, 422))
def get_model(_: Reader, cfg: Model) -> dict[str, Any]:
    """Champion and challenger with their numbers, the policy and owner, the last drift
    verdict, the rollout in progress and the versions waiting for approval."""
    pending = pending_approvals(cfg.name)
    with audit_store() as store:
        return views.model_detail(cfg, store, pending)


@router.get(
    "/models/{model}/versions",
    response_model=VersionList,
    responses=responses(401, 403, 404, 422),
)
def list_versions(_: Reader, cfg: Model) -> dict[str, Any]:
    """Every registered version, oldest first."""
    return {
        "model": cfg.name,
        "versions": [views.version_item(v) for v in registry.list_versions(cfg.name)],
    }


@router.get(
    "/models/{model}/versions/{version}",
    response_model=VersionDetail,
    responses=responses(401, 403, 404, 422),
)
def get_version(_: Reader, cfg: Model, version: VersionNumber) -> dict[str, Any]:
    """One version: metrics, lineage, its validation report (every gate, fairness
    included), approvals and its whole audit history."""
    number = check_version(version)
    with audit_store() as store:
        return views.version_detail(cfg.name, number, store)

"""``/health`` (open: liveness for ``make up`` and load balancers) and ``/whoami`` (any valid
token: who the API takes the caller for, with roles and permissions)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter

from mlsteward.api.auth import Caller
from mlsteward.api.errors import responses
from mlsteward.api.schemas import Health, Whoami

router = APIRouter(tags=["identity"])
SERVICE = "mlsteward-api"


def package_version() -> str:
    try:
        return version("mlsteward")
    except PackageNotFoundError:  # a checkout run without installing
        return "unknown"


@router.get("/health", response_model=Health)
def health() -> dict[str, Any]:
    """The service answers; needs no token and says nothing about the state it guards."""
    return {"ok": True, "service": SERVICE, "version": package_version()}


@router.get("/whoami", response_model=Whoami, responses=responses(401))
def whoami(who: Caller) -> dict[str, Any]:
    """The caller's identity, roles, teams and permissions."""
    return who.to_dict()

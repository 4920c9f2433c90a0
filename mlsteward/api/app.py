"""The governance API's app: every route under ``/api/v1``, one error shape, and an OpenAPI
schema with the bearer scheme, so ``/docs`` can call the routes with a token.

The schema and ``/docs`` are open: they describe routes, not data, and ``/docs`` needs them to
offer its "Authorize" button. Every route but ``/api/v1/health`` needs a token.
"""

from __future__ import annotations

from fastapi import FastAPI

from mlsteward.api import (
    alerts,
    approvals,
    audit,
    dashboard,
    decisions,
    errors,
    identity,
    models,
    outcomes,
    process,
    rollouts,
    runs,
)
from mlsteward.api.console import create_console
from mlsteward.api.identity import package_version

PREFIX = "/api/v1"

DESCRIPTION = """Who may do what with mlsteward's models: read their state, validate,
promote, approve, reject and roll back versions, start training, drift and scoring runs and
canary rollouts, post late outcomes, read and check the audit trail.

Send `Authorization: Bearer <token>` (a token from `mlsteward tokens create`, or your identity
provider's JWT when OIDC is configured). A refusal is a JSON body `{"error": ...}`: 401 without
a valid token, 403 naming the missing `permission`, 404 for an unknown model or version, 409
when the registry's state forbids the act, 422 naming the `field` at fault, 503 when Prefect
or the model's deployment is not there to start a run."""


def create_app() -> FastAPI:
    """The API app; settings (stores, Prefect server, identity provider) are read per
    request from the environment, as every command reads them."""
    app = FastAPI(
        title="mlsteward governance API",
        version=package_version(),
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    errors.install(app)
    groups = (
        identity,
        models,
        decisions,
        approvals,
        runs,
        rollouts,
        outcomes,
        alerts,
        process,
        audit,
        dashboard,
    )
    for group in groups:
        app.include_router(group.router, prefix=PREFIX)
    app.mount("/ui", create_console())
    return app

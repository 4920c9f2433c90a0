"""Who calls, and whether they may: the bearer token to a principal, then the one permission
check (``mlsteward.identity.authorize``) on the model a route acts on.

Order matters and is the same on every route: no or a bad token is a 401 before anything
else is looked at; then the model name (422 when it is not a name, 404 when no config
declares it); then the permission on that model (403 naming it, audited).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlsteward.api.errors import BadInput
from mlsteward.config.models import ModelConfig, get_model_config, model_config_paths
from mlsteward.config.names import NAME_PATTERN, NAME_RULE
from mlsteward.errors import AuthenticationError, NotFoundError
from mlsteward.identity import Permission, Principal, authenticate, authorize

bearer = HTTPBearer(
    auto_error=False,
    description="A token from `mlsteward tokens create` (msw_…), or an identity provider's "
    "JWT when OIDC is configured.",
)

VERSION_PATTERN = r"^[0-9]{1,9}$"

ModelName = Annotated[
    str,
    Path(
        description=f"A model name: {NAME_RULE}.",
        json_schema_extra={"pattern": NAME_PATTERN.pattern},
    ),
]
VersionNumber = Annotated[
    str,
    Path(
        description="A registered version number.",
        json_schema_extra={"pattern": VERSION_PATTERN},
    ),
]


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The principal the bearer token proves (kept on the request for the refusal record)."""
    if credentials is None:
        raise AuthenticationError("authentication required: send Authorization: Bearer <token>")
    who = authenticate(credentials.credentials)
    request.state.principal = who
    return who


Caller = Annotated[Principal, Depends(principal)]


def check_model_name(value: object, field: str = "model") -> str:
    """``value`` if it is a model name (never a path); else 422 naming ``field``."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise BadInput(field, f"{str(value)[:80]!r} is not a model name: it must be {NAME_RULE}")
    return value


def known_model(name: str, field: str = "model") -> ModelConfig:
    """The config of model ``name``: 422 for a name that is not one, 404 when no config
    declares it (a config that does not load is a 422 naming its file and key)."""
    check_model_name(name, field)
    known = sorted({p.stem for p in model_config_paths()})
    if name not in known:
        raise NotFoundError(
            f"{field}: unknown model {name!r} (known: {', '.join(known) or 'none'})"
        )
    return get_model_config(name)


def check_version(value: str) -> str:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise BadInput("version", f"{value[:40]!r} is not a version number (digits, e.g. 3)")
    return str(int(value))


def path_model(model: ModelName) -> ModelConfig:
    return known_model(model)


def allowed(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the caller, if it may ``permission`` on the route's ``{model}``."""

    def check(who: Caller, cfg: Annotated[ModelConfig, Depends(path_model)]) -> Principal:
        authorize(who, permission, cfg)
        return who

    check.__name__ = f"may_{permission.value}"
    return check


def allowed_anywhere(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the caller, if its roles grant ``permission`` (routes on no one model)."""

    def check(who: Caller) -> Principal:
        authorize(who, permission)
        return who

    check.__name__ = f"may_{permission.value}_anywhere"
    return check

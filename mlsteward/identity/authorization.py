"""``authorize``: the one check every command, API route and service request makes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsteward.errors import PermissionDeniedError
from mlsteward.identity.principals import Principal, model_owner
from mlsteward.identity.roles import PERMISSION_HELP, PERMISSIONS, Permission

if TYPE_CHECKING:
    from mlsteward.config.models import ModelConfig


def authorize(
    principal: Principal, permission: Permission, model: ModelConfig | str | None = None
) -> None:
    """Refuse, naming the permission and the roles that have it, unless ``principal`` may.

    Raises:
        PermissionDeniedError: with ``.permission`` set (HTTP 403).
    """
    if principal.may(permission, model):
        return
    name = model if isinstance(model, str) or model is None else model.name
    on = f" on {name}" if name else ""
    if permission in principal.permissions:
        owner = model_owner(model) if model is not None else None
        raise PermissionDeniedError(
            f"{principal.identity} may not {permission.value}{on}: the model belongs to team "
            f"{owner!r} and {principal.identity} is in {sorted(principal.teams)}",
            permission.value,
        )
    holders = ", ".join(r.value for r, perms in PERMISSIONS.items() if permission in perms)
    raise PermissionDeniedError(
        f"{principal.identity} may not {permission.value}{on} (needs permission "
        f"{permission.value!r}: {PERMISSION_HELP[permission]}; roles with it: {holders})",
        permission.value,
    )

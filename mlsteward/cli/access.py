"""Who runs a command, and whether they may: one call at the top of each command that acts.

The caller is ``MLSTEWARD_TOKEN``'s principal, or in single-user mode the local operator (an
admin, recorded as unauthenticated). Flows the command starts get the principal's identity as
``requested_by``, so their audit records read ``flow-run:<id> for user:alice``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlsteward.identity import Permission, Principal


def acting_as(permission: Permission, model: str | None = None) -> Principal:
    """The caller, if its roles grant ``permission`` (on ``model``, for a team's model).

    Raises:
        AuthenticationError: MLSTEWARD_TOKEN is not valid, or single-user mode is off.
        PermissionDeniedError: the caller may not; the message names the permission.
    """
    from mlsteward.identity import authorize, cli_principal

    principal = cli_principal()
    authorize(principal, permission, model)
    return principal

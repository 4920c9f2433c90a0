"""Who may do what: principals, roles, tokens and the one permission check.

    principal = authenticate(bearer_token)        # or cli_principal() in a command
    authorize(principal, Permission.PROMOTE, cfg)  # PermissionDeniedError names what is missing
    store.append(..., actor=principal.actor)       # user:alice, service:ci, local:bob

The permission table is ``roles.PERMISSIONS`` (rendered into docs/reference/permissions.md);
tokens are stored hashed (``tokens``, ``store``); an identity provider's JWTs are verified in
``oidc``.
"""

from __future__ import annotations

from mlsteward.identity.authentication import authenticate, clear_cache, cli_principal
from mlsteward.identity.authorization import authorize
from mlsteward.identity.principals import Principal, ci_principal, local_principal
from mlsteward.identity.roles import PERMISSION_HELP, PERMISSIONS, Permission, Role
from mlsteward.identity.store import ApprovalGrant, IdentityStore, TokenInfo, identity_store

__all__ = [
    "PERMISSIONS",
    "PERMISSION_HELP",
    "ApprovalGrant",
    "IdentityStore",
    "Permission",
    "Principal",
    "Role",
    "TokenInfo",
    "authenticate",
    "authorize",
    "ci_principal",
    "clear_cache",
    "cli_principal",
    "identity_store",
    "local_principal",
]

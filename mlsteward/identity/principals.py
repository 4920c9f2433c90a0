"""Who acts: a principal (user, service account or the local single-user operator) with roles.

The audit actor of every record is a principal's ``actor``: ``user:alice``, ``service:ci``,
``local:bob`` (single-user mode, never a verified identity), or ``flow-run:<id> for user:alice``
when a flow run acts for a person.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mlsteward.identity.roles import PERMISSIONS, TEAM_FREE, Permission, Role

if TYPE_CHECKING:
    from mlsteward.config.models import ModelConfig

KINDS = ("user", "service", "local")


@dataclass(frozen=True)
class Principal:
    """An identity with roles. ``authenticated`` is False only for the local operator, whom
    nothing has verified; ``via`` names a flow run acting on the principal's behalf."""

    kind: str
    name: str
    roles: frozenset[Role]
    teams: frozenset[str] = frozenset()
    authenticated: bool = True
    method: str = "token"
    via: str | None = None
    token_id: str | None = field(default=None, compare=False)

    @property
    def identity(self) -> str:
        """``kind:name``: what four eyes compares (a flow run acting for alice is alice)."""
        return f"{self.kind}:{self.name}"

    @property
    def actor(self) -> str:
        """The audit actor: the identity, or ``<via> for <identity>``."""
        return f"{self.via} for {self.identity}" if self.via else self.identity

    @property
    def permissions(self) -> frozenset[Permission]:
        out: frozenset[Permission] = frozenset()
        for role in self.roles:
            out |= PERMISSIONS[role]
        return out

    def may(self, permission: Permission, model: ModelConfig | str | None = None) -> bool:
        """Whether the roles grant ``permission`` and, for a write on a model owned by a team,
        whether the principal belongs to that team (a principal with no teams is not limited
        to any; admins never are)."""
        if permission not in self.permissions:
            return False
        if model is None or permission in TEAM_FREE or Role.ADMIN in self.roles:
            return True
        if not self.teams:
            return True
        owner = model_owner(model)
        return owner is None or owner in self.teams

    def acting_via(self, via: str) -> Principal:
        return replace(self, via=via)

    def to_dict(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "actor": self.actor,
            "kind": self.kind,
            "name": self.name,
            "roles": sorted(r.value for r in self.roles),
            "teams": sorted(self.teams),
            "authenticated": self.authenticated,
            "method": self.method,
            "permissions": sorted(p.value for p in self.permissions),
        }


def model_owner(model: ModelConfig | str) -> str | None:
    """The team that owns a model (its config's ``owner``), None when unknown."""
    if not isinstance(model, str):
        return _owner(getattr(model, "owner", None))
    from mlsteward.config.models import get_model_config
    from mlsteward.errors import MlstewardError

    try:
        return _owner(get_model_config(model).owner)
    except MlstewardError:
        return None  # an unknown model is refused by what follows, with the known ones listed


def _owner(value: str | None) -> str | None:
    """A config without an owner says ``unknown``: no team owns it."""
    return None if not value or value == "unknown" else value


def os_user() -> str:
    """The OS user running this process, or ``system`` when there is none (containers)."""
    try:
        name = getpass.getuser()
    except Exception:  # getpass raises KeyError/OSError when no user name can be found
        return "system"
    return name or "system"


def local_principal() -> Principal:
    """Single-user mode: the person at this machine, an admin, recorded as ``local:<os user>``
    and marked unauthenticated so nobody mistakes it for a verified identity."""
    return Principal(
        kind="local",
        name=os_user(),
        roles=frozenset({Role.ADMIN}),
        authenticated=False,
        method="local",
    )


def ci_principal() -> Principal:
    """The CI service account: a delivery signed with the webhook secret acts as it."""
    return Principal(kind="service", name="ci", roles=frozenset({Role.CI}), method="webhook")

"""Roles and the permission table: the one place that says who may do what.

The table is read by ``authorize`` (every command, API route and service request) and rendered
into the docs by ``docs/generate_reference.py``, so code and documentation cannot disagree.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a principal is for. A principal may hold several; its permissions are the union."""

    VIEWER = "viewer"
    TRAINER = "trainer"
    APPROVER = "approver"
    ADMIN = "admin"
    CI = "ci"


class Permission(StrEnum):
    """One kind of act. Routes and commands name the permission they need."""

    READ = "read"
    PREDICT = "predict"
    ROUTE = "route"
    INGEST = "ingest"
    TRAIN = "train"
    SCORE = "score"
    DRIFT = "drift"
    ROLLOUT = "rollout"
    OUTCOMES = "outcomes"
    VALIDATE = "validate"
    APPROVE = "approve"
    REJECT = "reject"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    OVERRIDE = "override"
    MANAGE = "manage"
    TRIGGER = "trigger"


P = Permission

PERMISSION_HELP: dict[Permission, str] = {
    P.READ: "read models, versions, reports, the audit trail and the dashboard",
    P.PREDICT: "call the prediction service",
    P.ROUTE: "choose routing keys on a prediction (aim traffic at a canary arm)",
    P.INGEST: "ingest data and materialize features",
    P.TRAIN: "start training runs",
    P.SCORE: "start batch scoring runs",
    P.DRIFT: "start drift checks",
    P.ROLLOUT: "start and stop canary rollouts",
    P.OUTCOMES: "record late outcomes (labels)",
    P.VALIDATE: "run a version's gates again",
    P.APPROVE: "approve a promotion waiting for a person",
    P.REJECT: "reject a version",
    P.PROMOTE: "promote a version to champion",
    P.ROLLBACK: "roll back to an earlier champion",
    P.OVERRIDE: "promote a rejected or rolled-back version, with a reason",
    P.MANAGE: "manage principals, tokens and policies",
    P.TRIGGER: "start runs through the CI webhook",
}

_READ = frozenset({P.READ, P.PREDICT})
_TRAIN = frozenset({P.INGEST, P.TRAIN, P.SCORE, P.DRIFT, P.ROLLOUT, P.OUTCOMES, P.VALIDATE})
_DECIDE = frozenset({P.VALIDATE, P.APPROVE, P.REJECT, P.PROMOTE, P.ROLLBACK})

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _READ,
    Role.TRAINER: _READ | _TRAIN,
    Role.APPROVER: _READ | _DECIDE,
    Role.ADMIN: frozenset(Permission),
    Role.CI: _READ | {P.TRIGGER, P.INGEST, P.TRAIN, P.SCORE, P.DRIFT, P.VALIDATE},
}
"""Role -> what it may do. Trainers prepare versions; approvers decide on them; neither does
the other's part, which is what makes four eyes possible. Only admins may override a rejection,
manage principals, or steer traffic with routing keys."""

TEAM_FREE = frozenset({P.READ, P.PREDICT})
"""Permissions that never depend on a model's owning team: everyone may read and predict."""


def parse_roles(names: str | list[str] | tuple[str, ...]) -> frozenset[Role]:
    """Role names (a list, or text separated by commas) as roles; an unknown name is refused
    with the valid ones."""
    from mlsteward.errors import MlstewardError

    items = names.split(",") if isinstance(names, str) else list(names)
    roles: set[Role] = set()
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        try:
            roles.add(Role(name))
        except ValueError:
            valid = ", ".join(r.value for r in Role)
            raise MlstewardError(f"unknown role {item.strip()!r}: use one of {valid}") from None
    if not roles:
        raise MlstewardError("at least one role is needed")
    return frozenset(roles)

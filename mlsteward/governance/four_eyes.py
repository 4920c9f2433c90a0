"""Four eyes: nobody approves a version they trained or submitted, and a pause-form answer
counts only with an approval token.

A name typed into the Prefect form proves nothing: the form is an open page. What proves who
decided is an approval token minted for a principal, a version and a decision
(``IdentityStore.issue_approval_token``, behind ``mlsteward approve`` and the API's approve
route); the flow redeems it here, once, and only then looks at who it names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from mlsteward.config.models import ModelConfig
from mlsteward.errors import AuthenticationError, PromotionError
from mlsteward.governance.policy import Answer, AnswerRefused, Approval
from mlsteward.identity import IdentityStore, Permission, Principal, Role, identity_store

SECOND_PRINCIPAL_HINT = (
    "in single-user mode there is only you: add a second person and approve as them "
    "(`mlsteward users add NAME --role approver`, `mlsteward tokens create NAME`, then "
    "MLSTEWARD_TOKEN=<that token> mlsteward approve MODEL VERSION --reason TEXT)"
)


def four_eyes_refusal(identity: str, submitted_by: str | None, model: str, version: str) -> str:
    """The refusal when ``identity`` submitted the version itself, else empty."""
    if submitted_by is None or identity != submitted_by:
        return ""
    message = (
        f"four eyes: {identity} trained or submitted {model} v{version} and may not approve "
        "it; another approver must"
    )
    if identity.startswith("local:"):
        message += f"; {SECOND_PRINCIPAL_HINT}"
    return message


def check_four_eyes(
    principal: Principal, submitted_by: str | None, model: str, version: str
) -> None:
    """Raises:
    PromotionError: ``principal`` submitted the version (HTTP 409).
    """
    message = four_eyes_refusal(principal.identity, submitted_by, model, version)
    if message:
        raise PromotionError(message)


def single_user_mode() -> bool:
    """Whether the local operator counts as a principal (``MLSTEWARD_AUTH=required`` turns
    single-user mode off)."""
    return os.environ.get("MLSTEWARD_AUTH", "").strip().lower() != "required"


def principal_for(identity: str, store: IdentityStore) -> Principal | None:
    """The principal an approval token names, as the identity store has it now (a principal
    disabled since the token was minted no longer counts). A ``local:`` identity is the
    single-user operator, an admin, while single-user mode is on."""
    kind, _, name = identity.partition(":")
    if kind == "local":
        if not single_user_mode() or not name:
            return None
        return Principal(
            kind="local",
            name=name,
            roles=frozenset({Role.ADMIN}),
            authenticated=False,
            method="local",
        )
    return store.get_principal(identity)


def redeem_answer(
    cfg: ModelConfig,
    version: str,
    answer: Answer,
    *,
    used_by: str,
    submitted_by: str | None,
    approved: Iterable[str],
    flow_run_id: str | None,
) -> Approval:
    """The decision a form answer carries, once its approval token is redeemed and the
    principal it names checked: the decision and the approver are the token's.

    Raises:
        AnswerRefused: no token, or one not valid for this version (unknown, used, expired,
            another version's), a decision other than the token's, a principal without the
            permission, the version's submitter, or an approver who approved already. The
            token, if valid, is spent either way.
    """
    token = (answer.approval_token or "").strip()
    typed = (answer.approver or "").strip()
    if not token:
        named = f" ({typed!r} typed into the form is a name, not an identity)" if typed else ""
        raise AnswerRefused(
            f"an answer counts only with an approval token{named}: get one with "
            f"`mlsteward approve {cfg.name} {version} --reason TEXT --print-token` or POST "
            f"/api/v1/models/{cfg.name}/versions/{version}/approve"
        )
    with identity_store() as store:
        try:
            grant = store.redeem_approval_token(
                token, model=cfg.name, version=str(version), used_by=used_by
            )
        except AuthenticationError as exc:
            raise AnswerRefused(str(exc)) from None
        principal = principal_for(grant.identity, store)
    if grant.decision != answer.decision:
        raise AnswerRefused(
            f"approval token {grant.token_id} was minted to {grant.decision}, but the form "
            f"says {answer.decision}"
        )
    if principal is None:
        raise AnswerRefused(
            f"approval token {grant.token_id} names {grant.identity}, who is not an enabled "
            "principal"
        )
    permission = Permission.APPROVE if grant.decision == "approve" else Permission.REJECT
    if not principal.may(permission, cfg):
        raise AnswerRefused(
            f"{grant.identity} may not {permission.value} {cfg.name} (needs permission "
            f"{permission.value!r})"
        )
    if grant.decision == "approve":
        refusal = four_eyes_refusal(grant.identity, submitted_by, cfg.name, str(version))
        if refusal:
            raise AnswerRefused(refusal)
        if grant.identity in set(approved):
            raise AnswerRefused(
                f"{grant.identity} approved {cfg.name} v{version} already; each approver "
                "counts once"
            )
    return Approval(
        approver=grant.identity,
        reason=grant.reason,
        decision=grant.decision,
        channel="prefect",
        flow_run_id=flow_run_id,
        token_id=grant.token_id,
    )


def eligible_approvers(cfg: ModelConfig, exclude: Iterable[str]) -> list[str]:
    """Identities in the identity store that may approve ``cfg``'s versions, minus
    ``exclude`` (the submitter, who approved already): whom a pending request waits for."""
    skip = set(exclude)
    out = []
    with identity_store() as store:
        for row in store.list_principals():
            if row["disabled"] or row["identity"] in skip:
                continue
            principal = store.get_principal(row["identity"])
            if principal is not None and principal.may(Permission.APPROVE, cfg):
                out.append(principal.identity)
    return out

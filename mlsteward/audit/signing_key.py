"""The governance key as its signers get it: ``keys.ensure_private_key``, and the creation of a
local key on first use recorded in the audit trail (who signs with a key nobody made on record
proves nothing)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from mlsteward.audit import audit_store
from mlsteward.audit.records import Action
from mlsteward.signing import keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from mlsteward.audit import AuditStore


def governance_key(actor: str, store: AuditStore | None = None) -> ec.EllipticCurvePrivateKey:
    """The governance private key; a key made now (local profile only) is recorded as
    ``signing_key_created`` in ``store``, or in the configured trail (opened only then).

    Raises:
        SigningError: no key is configured outside the local profile, or it cannot be read.
    """
    key, made = keys.ensure_private_key()
    if made is not None:
        with contextlib.ExitStack() as stack:
            target = store if store is not None else stack.enter_context(audit_store())
            target.append(
                Action.SIGNING_KEY_CREATED,
                actor=actor,
                reason=f"governance signing key {made.key_id} created on first use",
                details={"key_id": made.key_id, "public_key": str(made.public)},
            )
    return key

"""Signed decisions: each change of champion carries the governance key's signature.

The audit record of a promotion or rollback holds a signature over the decision's own fields
(model, action, actor, from, to, the artifact's SHA-256, the intent it closes). A record whose
fields were edited, or one written by someone without the key, no longer verifies, whatever the
hash chain around it says; and the key, unlike the store, is not writable by whoever runs the
database.
"""

from __future__ import annotations

import json
from typing import Any

from mlsteward.audit import AuditRecord
from mlsteward.governance.signatures import signing_key_for_use
from mlsteward.signing import keys

SIGNED_FIELDS = ("from", "to", "artifact_sha256", "intent_seq", "recovered")


def statement(*, model: str, action: str, actor: str, details: dict[str, Any]) -> bytes:
    """The canonical bytes a promotion signature covers."""
    body = {
        "type": "mlsteward.promotion/v1",
        "model": model,
        "action": str(action),
        "actor": actor,
        **{k: details.get(k) for k in SIGNED_FIELDS},
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_promotion(*, model: str, action: str, actor: str, details: dict[str, Any]) -> dict:
    """``{"key_id", "signature", "fields"}`` for the completion record's details."""
    key = signing_key_for_use()
    data = statement(model=model, action=action, actor=actor, details=details)
    return {
        "key_id": keys.key_id(key.public_key()),
        "signature": keys.sign_bytes(data, key),
        "fields": list(SIGNED_FIELDS),
    }


def verify_promotion(record: AuditRecord) -> bool:
    """True when a promotion or rollback record carries a valid governance signature."""
    sig = record.details.get("signature")
    if not isinstance(sig, dict) or not record.model:
        return False
    data = statement(
        model=record.model, action=record.action, actor=record.actor, details=record.details
    )
    return keys.verify_bytes(data, str(sig.get("signature", "")))

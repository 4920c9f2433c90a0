"""The audit trail in a pack: a contiguous slice of the chain that ends at a signed checkpoint,
and the check of such a slice that needs nothing but the slice.

Where the slice starts: at the model's first record, not the version's. What a version is
judged by begins before it exists: the ingestion of the data version it was trained on, and the
champions it was compared with, were recorded before its registration. A model's own records
are few next to the whole trail (one record per decision, check or run), and everything between
is carried as three hashes per record.

Where it ends: at the head a signed checkpoint covers, at or after the model's last record (an
earlier pack's own ``evidence_packed`` record aside: it is not evidence). When the newest
checkpoint in the anchor is older than that record, packing writes a fresh one first (as
``mlsteward audit checkpoint`` does), so every record of the model the pack draws on is covered
by a signature. The checkpoint's own ``audit_checkpoint`` record and the ``evidence_packed`` record
of the pack land after the slice's end, so neither is in it.

What is in the slice: this model's records and records about no model in full, as
``AuditRecord.to_dict()``; another model's record as ``{seq, hash, prev_hash, redacted: true}``
only. Its content is not this auditor's business, but its hashes keep every link checkable:
each full record's hash is recomputed with the canonical form of ``mlsteward.audit.records``,
each record's ``prev_hash`` must be the hash of the record before it, and the last record must
carry the checkpoint's ``head_hash``. A record altered in the pack breaks its own hash (or a
link); the slice as a whole is bound to the signed head, so no record can be changed, removed,
added or moved without the checkpoint's signature failing to match.

What it cannot show: which model a redacted record was about. The trail's holder can show any
of them by seq; their hashes in the pack fix what such a record must contain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlsteward.audit import Action, AuditRecord, AuditStore
from mlsteward.audit.checkpoints import (
    Checkpoint,
    latest_checkpoint,
    verify_with_checkpoint,
    write_checkpoint,
)
from mlsteward.audit.records import FORMAT as RECORD_FORMAT
from mlsteward.audit.records import GENESIS_HASH, AuditError, compute_hash, record_row
from mlsteward.evidence.manifest import write_json, write_text
from mlsteward.signing import keys

SLICE = "audit/slice.jsonl"
VERIFICATION = "audit/verification.json"
CHECKPOINT = "audit/checkpoint.json"
PUBLIC_KEY = "audit/governance.pub"
REDACTED_KEYS = frozenset({"seq", "hash", "prev_hash", "redacted"})
RECORD_KEYS = frozenset(
    {"seq", "ts", "actor", "action", "model", "version", "reason", "details", "prev_hash", "hash"}
)


# ------------------------------------------------------------------------------ checking


@dataclass(frozen=True)
class SliceCheck:
    """What checking a slice found: ``problem`` names the first record (seq and line) at
    fault; ``last_seq`` and ``last_hash`` are the slice's end when it is intact."""

    ok: bool
    records: int
    redacted: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None
    problem: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(digest: object) -> str:
    text = str(digest)
    return text[:16] + "…" if len(text) > 16 else text


def _is_hash(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _shape_problem(doc: object, line: int) -> str | None:
    """Why a parsed line is neither a full nor a redacted record, or None."""
    if not isinstance(doc, dict):
        return f"line {line} is not a JSON object"
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return f"line {line} has no valid seq"
    if not _is_hash(doc.get("hash")) or not _is_hash(doc.get("prev_hash")):
        return f"record {seq} (line {line}) has no valid hash or prev_hash"
    if doc.get("redacted") is True:
        if set(doc) != REDACTED_KEYS:
            extra = sorted(set(doc) - REDACTED_KEYS)
            return f"record {seq} (line {line}) is redacted but carries {extra}"
        return None
    if set(doc) != RECORD_KEYS:
        missing, extra = sorted(RECORD_KEYS - set(doc)), sorted(set(doc) - RECORD_KEYS)
        return f"record {seq} (line {line}) lacks {missing} or has unknown fields {extra}"
    return None


def check_slice(lines: Iterable[str]) -> SliceCheck:
    """Check a slice line by line: each full record's hash recomputed, every seq one more than
    the one before, every ``prev_hash`` the hash of the record before it."""
    count = redacted = 0
    first: int | None = None
    prev_seq: int | None = None
    prev_hash: str | None = None

    def broken(problem: str) -> SliceCheck:
        return SliceCheck(False, count, redacted, first, None, None, problem)

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            return broken(f"line {number} is empty")
        try:
            doc = json.loads(text)
        except ValueError:
            return broken(f"line {number} is not JSON")
        shape = _shape_problem(doc, number)
        if shape is not None:
            return broken(shape)
        count += 1
        seq = doc["seq"]
        if prev_seq is None:
            first = seq
        elif seq != prev_seq + 1:
            return broken(
                f"record {seq} (line {number}) follows record {prev_seq}: records were removed, "
                "added or moved"
            )
        if prev_hash is not None and doc["prev_hash"] != prev_hash:
            return broken(
                f"record {seq} (line {number}): previous-hash link broken: it names "
                f"{_short(doc['prev_hash'])}, record {prev_seq} has {_short(prev_hash)}"
            )
        if doc.get("redacted") is True:
            redacted += 1
        else:
            try:
                digest = compute_hash(*record_row(doc)[:9])
            except (AuditError, TypeError, ValueError) as exc:
                return broken(f"record {seq} (line {number}) cannot be hashed: {exc}")
            if digest != doc["hash"]:
                return broken(
                    f"record {seq} (line {number}) was edited: stored hash "
                    f"{_short(doc['hash'])} != recomputed {_short(digest)}"
                )
        if seq == 1 and doc["prev_hash"] != GENESIS_HASH:
            return broken(f"record 1 (line {number}) does not start the chain (prev_hash)")
        prev_seq, prev_hash = seq, doc["hash"]
    if count == 0:
        return broken("the slice holds no records")
    return SliceCheck(True, count, redacted, first, prev_seq, prev_hash, None)


def slice_line(record: AuditRecord, model: str) -> str:
    """One record as a slice line: in full when it is about ``model`` or no model, else its
    three hashes."""
    if record.model is None or record.model == model:
        doc: dict[str, Any] = record.to_dict()
    else:
        doc = {"seq": record.seq, "hash": record.hash, "prev_hash": record.prev_hash}
        doc["redacted"] = True
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------ packing


@dataclass(frozen=True)
class AuditEvidence:
    """The audit part of a pack: the files by evidence kind and what the slice covers."""

    files: dict[str, list[str]]
    first_seq: int
    last_seq: int
    records: int
    redacted: int
    checkpoint: Checkpoint
    fresh_checkpoint: bool
    warning: str | None = None
    """What the packing-time check of the whole trail said is worth attention (no checkpoint
    before this one, an anchor beside the trail, a stale checkpoint)."""

    def summary(self) -> dict[str, Any]:
        return {
            "slice": [self.first_seq, self.last_seq],
            "records": self.records,
            "redacted": self.redacted,
            "checkpoint_seq": self.checkpoint.seq,
            "checkpoint_ts": self.checkpoint.ts,
            "key_id": self.checkpoint.key_id,
            "fresh_checkpoint": self.fresh_checkpoint,
        }


def _covering_checkpoint(
    store: AuditStore, last_needed: int, actor: str, reason: str
) -> tuple[Checkpoint, bool]:
    """The newest checkpoint by the governance key when it covers ``last_needed``, else a
    fresh one (and True)."""
    public = keys.load_public_key()
    current = latest_checkpoint(store, key_id=keys.key_id(public))
    if current is not None and current.seq >= last_needed:
        return current, False
    return write_checkpoint(store, actor=actor, reason=reason), True


def _read_range(store: AuditStore, first: AuditRecord, upto: int) -> list[AuditRecord]:
    """Records ``first.seq..upto`` of every model: read from ``first``'s time, which never goes
    back along the chain (the stores' ``since`` bound), and cut to the range."""
    rows = [r for r in store.query(since=first.ts) if first.seq <= r.seq <= upto]
    expected = list(range(first.seq, upto + 1))
    if [r.seq for r in rows] != expected:
        raise AuditError(
            f"the audit trail does not hold records {first.seq}..{upto} contiguously; run "
            "`mlsteward audit verify`"
        )
    return rows


def write_audit_evidence(
    root: Path,
    store: AuditStore,
    model: str,
    own: Sequence[AuditRecord],
    *,
    actor: str,
    reason: str,
) -> AuditEvidence:
    """Write the slice, the packing-time verification, the checkpoint and its public key.

    Raises:
        AuditError: the trail is broken or does not extend its checkpoint (no pack vouches for
            a broken trail), or the slice read does not end at the signed head.
        SigningError: no governance key to sign a fresh checkpoint or to check one with.
    """
    started = time.perf_counter()
    # earlier packs' own records are not evidence: a pack needs no checkpoint just for them
    needed = max(r.seq for r in own if r.action != Action.EVIDENCE_PACKED)
    checkpoint, fresh = _covering_checkpoint(store, needed, actor, reason)
    trail = verify_with_checkpoint(store)
    if not trail.ok:
        raise AuditError(f"refusing to pack a broken audit trail: {trail.problem}")
    public = keys.load_public_key()
    if not checkpoint.signed_by(public):
        raise AuditError(
            f"checkpoint {checkpoint.seq} ({checkpoint.ts}) does not verify with the governance "
            f"public key {keys.key_id(public)}; refusing to pack"
        )
    records = _read_range(store, own[0], checkpoint.seq)
    if records[-1].hash != checkpoint.head_hash:
        raise AuditError(
            f"record {checkpoint.seq} does not carry the head hash checkpoint {checkpoint.seq} "
            "signed: the audit trail was rewritten; run `mlsteward audit verify`"
        )
    lines = [slice_line(r, model) for r in records]
    write_text(root, SLICE, "".join(line + "\n" for line in lines))
    checked = check_slice(lines)
    if not checked.ok:  # the pack would not verify: never hand it out
        raise AuditError(f"the audit slice written for the pack does not verify: {checked.problem}")
    write_json(root, CHECKPOINT, checkpoint.to_dict())
    write_text(root, PUBLIC_KEY, keys.public_pem(public).decode("ascii"))
    write_json(
        root,
        VERIFICATION,
        {
            "trail": trail.to_dict(),
            "slice": {
                **checked.to_dict(),
                "starts_at": f"the model's first record ({own[0].action}, seq {own[0].seq})",
                "ends_at": f"checkpoint {checkpoint.seq} of {checkpoint.ts}",
                "checkpoint_written_for_this_pack": fresh,
            },
            "canonical_form": (
                "hash = sha256 of the compact JSON array [format, seq, ts, actor, action, model, "
                "version, reason, details as canonical JSON text, prev_hash] (see "
                "mlsteward/audit/records.py)"
            ),
            "record_format": RECORD_FORMAT,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return AuditEvidence(
        files={
            "audit_slice": [SLICE],
            "audit_verification": [VERIFICATION],
            "audit_checkpoint": [CHECKPOINT, PUBLIC_KEY],
        },
        first_seq=records[0].seq,
        last_seq=records[-1].seq,
        records=len(records),
        redacted=checked.redacted,
        checkpoint=checkpoint,
        fresh_checkpoint=fresh,
        warning=trail.warning,
    )

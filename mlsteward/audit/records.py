"""Audit records: their canonical form and hash, and how an append places one in the chain.

Why a hash chain: the audit trail is the evidence behind every governance decision, so a
record that was edited, deleted, inserted or moved after the fact must be detectable. Each
record stores the hash of the record before it (``prev_hash``; 64 zeros for the first) and its
own SHA-256 over all of its fields, ``prev_hash`` included. Changing any stored record changes
its hash, which no longer matches (or breaks the next record's link); removing records leaves a
gap in ``seq`` or a head marker that points past the end.

Canonical serialisation (format ``mlsteward-audit/1``; a reimplementation in any language must
produce the same bytes):

* the record is the JSON array
  ``["mlsteward-audit/1", seq, ts, actor, action, model, version, reason, details, prev_hash]``
  (``seq`` a JSON integer, ``model`` and ``version`` a string or ``null``, every other element a
  string), written without whitespace (separators ``,`` and ``:``), non-ASCII characters as
  themselves (not ``\\u`` escapes; only ``"``, ``\\`` and control characters are escaped, as
  Python's ``json`` does with ``ensure_ascii=False``), encoded as UTF-8;
* ``details`` enters the array as a *string*: the details' own canonical JSON text (object keys
  sorted, no whitespace, ``ensure_ascii=False``). Stores keep exactly that text, so verification
  hashes the stored bytes without parsing and re-serialising them;
* ``ts`` is UTC with microseconds and a ``Z``: ``2025-01-31T14:05:09.123456Z``. Fixed width, so
  text order is time order; appends never let it go backwards, so it is non-decreasing in seq;
* ``hash`` = lower-case hex SHA-256 of those bytes.

Details are normalised before they are stored: numpy scalars and arrays become numbers and
lists, datetimes ISO text, tuples lists, ``NaN``/``Infinity`` the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"`` (strict JSON has no such numbers). The details a record returns
are the stored (normalised) ones.

What the chain can and cannot detect, and how it is checked, is in ``chain``; checking large
chains in several processes at once in ``verify_pool``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import PurePath
from typing import Any

from mlsteward.errors import MlstewardError

FORMAT = "mlsteward-audit/1"
"""First element of every canonical array; a new format gets a new tag."""

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record."""

COLUMNS = (
    "seq",
    "ts",
    "actor",
    "action",
    "model",
    "version",
    "reason",
    "details",
    "prev_hash",
    "hash",
)
"""Stored columns, in the order both stores select them (rows are tuples in this order)."""


encode_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""The canonical JSON encoder of the record array (compact, UTF-8 as is, no NaN)."""
_ENCODE_SORTED = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True
).encode
_sha256 = hashlib.sha256


class AuditError(MlstewardError):
    """The audit trail could not be written, read or locked, or was asked something invalid."""


class Action(StrEnum):
    """The governance events. New events are new members; stores accept any member's value."""

    INGESTION_ACCEPTED = "ingestion_accepted"
    INGESTION_REJECTED = "ingestion_rejected"
    VERSION_REGISTERED = "version_registered"
    VALIDATION_PASSED = "validation_passed"
    VALIDATION_FAILED = "validation_failed"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_TIMED_OUT = "approval_timed_out"
    PROMOTED = "promoted"
    PROMOTION_REFUSED = "promotion_refused"
    ALIAS_CHANGED = "alias_changed"
    ROLLBACK = "rollback"
    INTEGRITY_FAILED = "integrity_failed"
    BATCH_SCORED = "batch_scored"
    LABELS_INGESTED = "labels_ingested"
    DRIFT_CHECKED = "drift_checked"
    DRIFT_DETECTED = "drift_detected"
    RETRAIN_TRIGGERED = "retrain_triggered"
    RETRAIN_SUPPRESSED = "retrain_suppressed"
    WEBHOOK_ACCEPTED = "webhook_accepted"
    WEBHOOK_REFUSED = "webhook_refused"
    WEBHOOK_REFUSALS = "webhook_refusals"
    REPRODUCED = "reproduced"
    REPRODUCTION_REFUSED = "reproduction_refused"
    SNAPSHOTS_COLLECTED = "snapshots_collected"
    ROLLOUT_STARTED = "rollout_started"
    ROLLOUT_STEP_PASSED = "rollout_step_passed"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
    ROLLOUT_COMPLETED = "rollout_completed"
    ROLLOUT_ABORTED = "rollout_aborted"
    ROLLOUT_REFUSED = "rollout_refused"
    PRINCIPAL_ADDED = "principal_added"
    PRINCIPAL_CHANGED = "principal_changed"
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    APPROVAL_TOKEN_ISSUED = "approval_token_issued"
    APPROVAL_REFUSED = "approval_refused"
    ACCESS_DENIED = "access_denied"
    # the champion is what the governance record says
    ALIAS_MISMATCH = "alias_mismatch"
    ALIAS_REPAIRED = "alias_repaired"
    PROMOTION_INTENT = "promotion_intent"
    PROMOTION_RECOVERED = "promotion_recovered"
    PROMOTION_ABANDONED = "promotion_abandoned"
    # signatures and the anchored audit trail
    SIGNING_KEY_CREATED = "signing_key_created"
    MODEL_SIGNED = "model_signed"
    SIGNATURE_FAILED = "signature_failed"
    AUDIT_CHECKPOINT = "audit_checkpoint"
    MLFLOW_ACCESS_GRANTED = "mlflow_access_granted"
    # runs a dead worker left behind
    RUN_REAPED = "run_reaped"
    ROLLOUT_REAPED = "rollout_reaped"
    # production monitoring: an incident opened, reminded of, closed
    ALERT_FIRED = "alert_fired"
    ALERT_REMINDED = "alert_reminded"
    ALERT_RESOLVED = "alert_resolved"
    # the process measured, and evidence handed out
    PROCESS_REVIEWED = "process_reviewed"
    EVIDENCE_PACKED = "evidence_packed"


@dataclass(frozen=True)
class AuditRecord:
    """One link of the chain, as stored. ``hash`` covers every other field (see module doc)."""

    seq: int
    ts: str
    actor: str
    action: str
    model: str | None
    version: str | None
    reason: str
    details: dict
    prev_hash: str
    hash: str

    def __hash__(self) -> int:  # details is a dict; the chain hash identifies the record
        return hash(self.hash)

    def to_dict(self) -> dict:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "model": self.model,
            "version": self.version,
            "reason": self.reason,
            "details": json.loads(canonical_details(self.details)),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    def recompute_hash(self) -> str:
        """The hash these fields should have; differs from ``hash`` if the record was altered."""
        return compute_hash(*record_row(self)[:9])

    @classmethod
    def from_row(cls, row: tuple) -> AuditRecord:
        """Build from a stored row (``COLUMNS`` order) without the dataclass' per-field
        ``object.__setattr__`` calls: queries return tens of thousands of records."""
        obj = object.__new__(cls)
        obj.__dict__.update(
            seq=row[0],
            ts=row[1],
            actor=row[2],
            action=row[3],
            model=row[4],
            version=row[5],
            reason=row[6],
            details=json.loads(row[7]),
            prev_hash=row[8],
            hash=row[9],
        )
        return obj


LOCAL = "local:"
"""Actors of this kind are the single-user operator: nothing verified who they are."""


def default_actor() -> str:
    """``local:<OS user>`` (``local:system`` when there is none, as in containers): whoever
    runs this process, which nothing has verified; records of such actors carry
    ``authenticated: false``."""
    try:
        name = getpass.getuser()
    except Exception:  # getpass raises KeyError/OSError when no user name can be found
        name = ""
    return LOCAL + (name or "system")


def format_ts(value: dt.datetime) -> str:
    """Canonical UTC timestamp text; naive datetimes are taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def now_ts() -> str:
    return format_ts(dt.datetime.now(dt.UTC))


def parse_since(since: dt.datetime | dt.date | str) -> str:
    """A ``since`` bound as canonical timestamp text (comparable with stored ``ts``)."""
    if isinstance(since, dt.datetime):
        return format_ts(since)
    if isinstance(since, dt.date):
        return format_ts(dt.datetime(since.year, since.month, since.day))
    if isinstance(since, str):
        try:
            return format_ts(dt.datetime.fromisoformat(since.strip()))
        except ValueError:
            raise AuditError(
                f"since={since!r} is not an ISO-8601 date or time (e.g. 2025-01-31T14:05:00Z)"
            ) from None
    raise AuditError(f"since must be a datetime or ISO-8601 text, not {type(since).__name__}")


def action_value(action: str | Action) -> str:
    """The stored text of an action; unknown names fail with the list of valid ones."""
    try:
        return Action(action).value
    except ValueError:
        valid = ", ".join(a.value for a in Action)
        raise AuditError(f"unknown audit action {action!r}; valid actions: {valid}") from None


def canonical_details(details: Mapping | None) -> str:
    """The details' canonical JSON text (normalised, keys sorted, compact, UTF-8 as is)."""
    if details is None:
        return "{}"
    if not isinstance(details, Mapping):
        raise AuditError(f"details must be a dict, not {type(details).__name__}")
    return _ENCODE_SORTED(_plain(details, "details"))


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (see the module doc for what is converted)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.value if isinstance(value, Enum) else str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = key.value if isinstance(key, Enum) else str(key)
            elif key is None or isinstance(key, bool | int | float):
                name = json.dumps(key)
            else:
                raise AuditError(f"{where} has a key of type {type(key).__name__}; use strings")
            if name in out:
                raise AuditError(f"{where} has two keys that both read {name!r}")
            out[name] = _plain(item, f"{where}[{name!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_plain(item, f"{where}[...]") for item in value]
        return sorted(items, key=_ENCODE_SORTED)
    if isinstance(value, dt.datetime):
        return format_ts(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Enum):
        return _plain(value.value, where)
    if isinstance(value, PurePath | Decimal):
        return str(value)
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist(), where)
    raise AuditError(
        f"{where} is a {type(value).__name__}, which has no JSON form; "
        "record numbers, strings, lists or dicts"
    )


def canonical_bytes(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    model: str | None,
    version: str | None,
    reason: str,
    details_json: str,
    prev_hash: str,
) -> bytes:
    """The bytes a record's hash is taken over (see the module doc)."""
    return encode_compact(
        (FORMAT, seq, ts, actor, action, model, version, reason, details_json, prev_hash)
    ).encode("utf-8")


def compute_hash(*fields: Any) -> str:
    """The record hash: hex SHA-256 of ``canonical_bytes(*fields)`` (the same nine fields)."""
    return _sha256(canonical_bytes(*fields)).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A validated, normalised record before it gets its place in the chain."""

    action: str
    model: str | None
    version: str | None
    reason: str
    actor: str
    details_json: str


def _text(name: str, value: Any, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise AuditError(f"{name} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise AuditError(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError(f"{name} is not valid Unicode text (lone surrogate)") from None
    return str.__str__(value)  # a plain str, also for str subclasses and str enums


def make_entry(
    action: str | Action,
    *,
    model: str | None = None,
    version: str | int | None = None,
    reason: str = "",
    actor: str | None = None,
    details: Mapping | None = None,
) -> Entry:
    """Validate and normalise ``append``'s arguments (outside any lock or transaction)."""
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    actor = default_actor() if actor is None else actor
    if isinstance(actor, str) and actor.startswith(LOCAL) and isinstance(details, Mapping | None):
        # unmistakable in the record itself: a local actor is a claim, not an identity
        details = {**(details or {}), "authenticated": False}
    entry = Entry(
        action=action_value(action),
        model=_text("model", model, optional=True),
        version=_text("version", version, optional=True),
        reason=_text("reason", reason, optional=False) or "",
        actor=_text("actor", actor, optional=False) or "",
        details_json=canonical_details(details),
    )
    if not entry.actor:
        raise AuditError("actor must not be empty")
    if entry.model == "":
        raise AuditError("model must not be empty (pass None for a record about no model)")
    return entry


def chain_row(entry: Entry, head: tuple[int, str, str] | None, ts: str | None = None) -> tuple:
    """The stored row for ``entry`` placed after ``head`` = (seq, hash, ts) of the last record.

    The timestamp never goes back: if the clock did (NTP step, another host's clock), the record
    takes its predecessor's time, so ``ts`` stays non-decreasing along the chain.
    """
    prev_seq, prev_hash, prev_ts = head if head is not None else (0, GENESIS_HASH, "")
    ts = ts or now_ts()
    if ts < prev_ts:
        ts = prev_ts
    fields = (
        prev_seq + 1,
        ts,
        entry.actor,
        entry.action,
        entry.model,
        entry.version,
        entry.reason,
        entry.details_json,
        prev_hash,
    )
    return (*fields, compute_hash(*fields))


def chain_rows(
    chunk: Iterable[tuple[Entry, str | None]], head: tuple[int, str, str] | None
) -> list[tuple]:
    """The stored rows for ``chunk`` ((entry, ts or None) pairs), one after the other after
    ``head`` (see ``chain_row``)."""
    rows = []
    for entry, ts in chunk:
        row = chain_row(entry, head, ts)
        rows.append(row)
        head = (row[0], row[9], row[1])
    return rows


def record_row(record: AuditRecord | Mapping) -> tuple:
    """A record (or its ``to_dict()``) as a stored row, for ``verify_records``."""
    get = record.get if isinstance(record, Mapping) else lambda name: getattr(record, name)
    return (
        get("seq"),
        get("ts"),
        get("actor"),
        get("action"),
        get("model"),
        get("version"),
        get("reason"),
        canonical_details(get("details")),
        get("prev_hash"),
        get("hash"),
    )

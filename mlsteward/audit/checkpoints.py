"""Signed checkpoints of the audit trail's head, kept outside the store: what makes a rewrite
of the whole chain detectable.

The hash chain (``chain``) catches any change that does not recompute every later hash and the
head marker; someone who can write the database can do exactly that. A checkpoint, like a
certificate-transparency signed tree head, fixes the head at a moment: ``{format, store, seq,
head_hash, records, ts, key_id, signature}``, where ``signature`` is ECDSA (the governance key,
``mlsteward.signing.keys``) over the canonical JSON of the other fields. It is written to an
anchor outside the store (``anchors``, ``settings.audit_anchor_url()``); without the private
key nobody can make a checkpoint for a rewritten head, and the old one no longer matches it.

What a checkpoint covers: records ``1..seq`` exactly, ``head_hash`` being record ``seq``'s hash
and ``records`` their number (equal to ``seq``; 0 and the genesis hash for an empty trail).
``write_checkpoint`` reads the head, signs, writes the anchor and only then appends the
``audit_checkpoint`` record announcing it, so that record (usually ``seq + 1``; later if other
appends came in between) is never covered by its own checkpoint, only by the next one.

Before signing, ``write_checkpoint`` checks that the new head extends the previous checkpoint
made with the same key: record ``previous.seq`` still has ``previous.head_hash`` and every
record after it links and hashes correctly up to the head marker. That costs the records
since the previous checkpoint (a few milliseconds after an hourly or per-promotion checkpoint),
and it means a rewritten chain never gets a fresh checkpoint. The first checkpoint of a key
checks the whole chain once instead. It takes no audit store lock (only SQLite's or
PostgreSQL's own append transaction for its record), so it is safe inside a promotion's lock.

``verify_with_checkpoint`` checks the newest checkpoint in the anchor: its signature with the
public key, the chain with ``expect_head=head_hash``, and that record ``seq`` has that hash;
it fails when the trail records a checkpoint newer than any the anchor holds (the anchor lost
it, or points elsewhere), and warns when there is no checkpoint yet or the newest is older
than ``settings.audit_checkpoint_hours()``.

Not detected: changes to records appended after the newest checkpoint (only the next
checkpoint covers them); a rewrite by someone who also holds the private key; and, if the
anchor is deleted together with every ``audit_checkpoint`` record, anything but the warning
that there is no checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlsteward.audit.anchors import Anchor, open_anchor, same_place
from mlsteward.audit.base import _ChainStore
from mlsteward.audit.chain import VerifyResult
from mlsteward.audit.records import GENESIS_HASH, Action, AuditError, format_ts
from mlsteward.audit.signing_key import governance_key
from mlsteward.config import settings
from mlsteward.errors import SigningError
from mlsteward.signing import keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from mlsteward.audit import AuditStore

FORMAT = "mlsteward-audit-checkpoint/1"
"""The ``format`` of every checkpoint; a new layout gets a new tag."""

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
_FIELDS = ("format", "store", "seq", "head_hash", "records", "ts", "key_id", "signature")


@dataclass(frozen=True)
class Checkpoint:
    """A signed head of one audit store (see the module doc for what it covers)."""

    format: str
    store: str
    seq: int
    head_hash: str
    records: int
    ts: str
    key_id: str
    signature: str

    def payload(self) -> bytes:
        """The bytes the signature covers: canonical JSON of every field but the signature."""
        fields = dataclasses.asdict(self)
        del fields["signature"]
        return _ENCODE(fields).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def signed_by(self, key: ec.EllipticCurvePublicKey) -> bool:
        """True when the signature over ``payload()`` verifies with ``key``."""
        return keys.verify_bytes(self.payload(), self.signature, key)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Build from stored fields, refusing anything that is not a checkpoint's shape."""
        problems = [name for name in _FIELDS if name not in data]
        if problems:
            raise AuditError(f"a stored audit checkpoint lacks {', '.join(problems)}")
        ints = ("seq", "records")
        for name in _FIELDS:
            value = data[name]
            wanted = int if name in ints else str
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise AuditError(f"a stored audit checkpoint's {name} is not {wanted.__name__}")
        return cls(**{name: data[name] for name in _FIELDS})


@dataclass(frozen=True)
class CheckedTrail:
    """What ``verify_with_checkpoint`` found: the chain check's fields, the checkpoint it was
    checked against (None: there was none), the anchor, and a warning worth a person's
    attention that does not make the trail broken (no checkpoint yet, a stale one)."""

    ok: bool
    records: int
    head_hash: str | None
    first_bad_seq: int | None
    problem: str | None
    checkpoint: dict[str, Any] | None
    anchor: str
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ store id


def store_location(store: AuditStore) -> dict[str, str]:
    """The store's place without user or password: SQLite's file, or PostgreSQL's host, port,
    database and table."""
    url = store.url
    if url.startswith("sqlite:"):
        path = Path(getattr(store, "path", url.removeprefix("sqlite:///"))).expanduser()
        return {"kind": "sqlite", "path": str(path.resolve())}
    parts = urlsplit(url)
    database = f"{parts.hostname}:{parts.port or 5432}{parts.path.rstrip('/')}"
    return {
        "kind": "postgresql",
        "database": database,
        "table": str(getattr(store, "prefix", "mlsteward_audit")),
    }


def store_id(store: AuditStore) -> str:
    """A stable id of an audit store that holds no secret: ``sqlite:/abs/path/audit.db`` or
    ``postgresql://host:port/db/table``. Checkpoints are looked up by it, so moving a store
    needs a new checkpoint (``mlsteward audit checkpoint``)."""
    where = store_location(store)
    if where["kind"] == "sqlite":
        return f"sqlite:{where['path']}"
    return f"postgresql://{where['database']}/{where['table']}"


# ------------------------------------------------------------------------------ anchor


def _anchor(anchor: Anchor | str | None) -> Anchor:
    if anchor is None:
        return open_anchor(settings.audit_anchor_url())
    if isinstance(anchor, str):
        return open_anchor(anchor)
    return anchor


def latest_checkpoint(
    store: AuditStore, *, anchor: Anchor | str | None = None, key_id: str | None = None
) -> Checkpoint | None:
    """The newest checkpoint (highest seq) of ``store`` in the anchor (default
    ``settings.audit_anchor_url()``), optionally only among those of ``key_id``; None if
    there is none."""
    place = _anchor(anchor)
    try:
        data = place.newest(store_id(store), key_id)
    finally:
        if place is not anchor:
            place.close()
    return Checkpoint.from_dict(data) if data is not None else None


# ------------------------------------------------------------------------------ writing


def _extends(store: AuditStore, previous: Checkpoint | None) -> tuple[int, str]:
    """(seq, hash) of the head, after checking it extends ``previous`` (see the module doc).

    Raises:
        AuditError: the chain is broken, or no longer contains ``previous``'s head.
    """
    if previous is None or previous.seq == 0 or not isinstance(store, _ChainStore):
        result = store.verify(expect_head=previous.head_hash if previous and previous.seq else None)
        if not result.ok:
            raise AuditError(
                f"refusing to checkpoint a broken audit trail ({store_id(store)}): "
                f"{result.problem}; run `mlsteward audit verify`"
            )
        return result.records, result.head_hash or GENESIS_HASH
    conn = None
    try:
        conn = store._snapshot()
        head = conn.execute(store._sql.read_head).fetchone()
        if head is None or head[0] < previous.seq:
            ends = "is empty" if head is None else f"ends at record {head[0]}"
            raise AuditError(
                f"refusing to checkpoint: the audit trail {ends} but checkpoint {previous.seq} "
                f"of {previous.ts} covers {previous.seq} records (records were removed); run "
                "`mlsteward audit verify`"
            )
        segment = store._scan(conn, previous.seq - 1, head[0], None)
    except store._db_error as exc:
        raise AuditError(f"cannot read the audit trail {store._where}: {exc}") from exc
    finally:
        if conn is not None:
            conn.close()
    first = segment.first_row
    if first is None or first[0] != previous.seq or first[9] != previous.head_hash:
        raise AuditError(
            f"refusing to checkpoint: record {previous.seq} no longer has the hash checkpoint "
            f"{previous.seq} of {previous.ts} signed: the audit trail was rewritten; run "
            "`mlsteward audit verify`"
        )
    if segment.problem is not None:
        raise AuditError(
            f"refusing to checkpoint a broken audit trail: {segment.problem}; run "
            "`mlsteward audit verify`"
        )
    if (segment.last_seq, segment.last_hash) != (head[0], head[1]):
        raise AuditError(
            f"refusing to checkpoint: the head marker ({head[0]}) disagrees with the last "
            f"record ({segment.last_seq}); run `mlsteward audit verify`"
        )
    return head[0], head[1]


def write_checkpoint(
    store: AuditStore, *, actor: str, reason: str, anchor: Anchor | str | None = None
) -> Checkpoint:
    """Sign the current head, write it to the anchor, then record it in the trail.

    The checkpoint covers records ``1..seq`` (the record before its own ``audit_checkpoint``
    record, or earlier if others appended meanwhile; see the module doc). Cheap enough to call
    after each promotion while its lock is held: it takes no audit store lock.

    Raises:
        AuditError: the chain is broken or does not extend the previous checkpoint, or the
            anchor cannot be written.
        SigningError: no governance key outside the local profile.
    """
    key = governance_key(actor, store)
    kid = keys.key_id(key.public_key())
    sid = store_id(store)
    place = _anchor(anchor)
    try:
        previous_data = place.newest(sid, kid)
        previous = Checkpoint.from_dict(previous_data) if previous_data else None
        if previous is not None and not previous.signed_by(key.public_key()):
            raise AuditError(
                f"refusing to checkpoint: the newest checkpoint of key {kid} in "
                f"{place.describe()} (record {previous.seq}, {previous.ts}) has a signature "
                "that does not verify: the anchor was tampered with"
            )
        seq, head = _extends(store, previous)
        unsigned = Checkpoint(FORMAT, sid, seq, head, seq, _now(), kid, "")
        checkpoint = dataclasses.replace(
            unsigned, signature=keys.sign_bytes(unsigned.payload(), key)
        )
        place.append(checkpoint)
        where = place.describe()
    finally:
        if place is not anchor:
            place.close()
    store.append(
        Action.AUDIT_CHECKPOINT,
        actor=actor,
        reason=reason,
        details={
            "checkpoint_seq": seq,
            "head_hash": head,
            "key_id": kid,
            "store": sid,
            "anchor": where,
        },
    )
    return checkpoint


def _now() -> str:
    return format_ts(dt.datetime.now(dt.UTC))


# ------------------------------------------------------------------------------ verifying


def _hash_at(store: AuditStore, seq: int) -> str | None:
    """The stored hash of record ``seq`` (one index probe)."""
    if isinstance(store, _ChainStore):
        sql = store._sql
        rows = store._fetch(f"SELECT hash FROM {sql.table} WHERE seq = {sql.placeholder}", [seq])
        return rows[0][0] if rows else None
    found = [r for r in store.query() if r.seq == seq]
    return found[0].hash if found else None


def _has_hash(store: AuditStore, digest: str) -> bool:
    if isinstance(store, _ChainStore):
        return bool(store._fetch(store._sql.find_seq, [digest]))
    return any(r.hash == digest for r in store.query())


def _age_hours(ts: str, now: dt.datetime) -> float:
    when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (now - when).total_seconds() / 3600


def _describe(cp: Checkpoint) -> str:
    return f"checkpoint {cp.seq} of {cp.ts} (key {cp.key_id})"


def verify_with_checkpoint(
    store: AuditStore,
    *,
    anchor: Anchor | str | None = None,
    expect_head: str | None = None,
    now: dt.datetime | None = None,
) -> CheckedTrail:
    """Check the chain against the newest checkpoint in the anchor (see the module doc).

    ``expect_head``, a hash kept elsewhere, must also be in the chain. ``now`` is for tests of
    the staleness warning.
    """
    place = _anchor(anchor)
    try:
        where = place.describe()
        data = place.newest(store_id(store))
        shared = same_place(place, store_location(store))
    finally:
        if place is not anchor:
            place.close()
    warning = None
    if shared:
        warning = (
            f"the audit anchor {where} sits with the audit trail itself: whoever can rewrite "
            "the trail can rewrite its checkpoints; set MLSTEWARD_AUDIT_ANCHOR to another place"
        )

    def broken(problem: str, result: VerifyResult | None = None, cp: Any = None) -> CheckedTrail:
        return CheckedTrail(
            False,
            result.records if result else 0,
            None,
            result.first_bad_seq if result else None,
            problem,
            cp,
            where,
            warning,
        )

    if data is None:
        result = store.verify(expect_head=expect_head)
        if not result.ok:
            return broken(result.problem or "the chain is broken", result)
        recorded = store.last(action=Action.AUDIT_CHECKPOINT)
        if recorded is not None and isinstance(recorded.details.get("checkpoint_seq"), int):
            return broken(
                f"record {recorded.seq} says checkpoint {recorded.details.get('checkpoint_seq')} "
                f"was written to {recorded.details.get('anchor')}, but the anchor {where} holds "
                "no checkpoint of this audit trail: the anchor was lost or replaced, or "
                "MLSTEWARD_AUDIT_ANCHOR points elsewhere (write a new one with `mlsteward audit "
                "checkpoint` once the cause is known)",
                result,
            )
        return CheckedTrail(
            True,
            result.records,
            result.head_hash,
            None,
            None,
            None,
            where,
            warning
            or "no checkpoint yet: a rewrite of the whole chain would go unnoticed; run "
            "`mlsteward audit checkpoint`",
        )
    try:
        cp = Checkpoint.from_dict(data)
    except AuditError as exc:
        return broken(f"the newest checkpoint in {where} is malformed: {exc}")
    summary = {"seq": cp.seq, "ts": cp.ts, "key_id": cp.key_id, "head_hash": cp.head_hash}
    try:
        public = keys.load_public_key()
    except SigningError as exc:
        return broken(f"cannot check {_describe(cp)}: {exc}", cp=summary)
    current = keys.key_id(public)
    if cp.key_id != current:
        return broken(
            f"{_describe(cp)} in {where} is signed by key {cp.key_id}, but the governance "
            f"public key is {current}: a forged checkpoint, or the key was replaced (write a "
            "new checkpoint with the new key after checking the trail)",
            cp=summary,
        )
    if cp.format != FORMAT or not cp.signed_by(public):
        return broken(
            f"the signature of {_describe(cp)} in {where} does not verify with the governance "
            "public key: the checkpoint was forged or altered",
            cp=summary,
        )
    result = store.verify(expect_head=cp.head_hash if cp.seq else None)
    if not result.ok:
        problem = result.problem or "the chain is broken"
        if result.first_bad_seq is None and "not in the chain" in problem:
            problem = (
                f"the chain no longer contains the head of {_describe(cp)}: the audit trail "
                f"was rewritten since that checkpoint (or cut before record {cp.seq}); records "
                f"1..{cp.seq} are not what was signed"
            )
        return broken(problem, result, summary)
    if cp.seq and (_hash_at(store, cp.seq) != cp.head_hash or cp.records != cp.seq):
        return broken(
            f"record {cp.seq} does not carry the head hash {_describe(cp)} signed: the records "
            "were renumbered or rewritten",
            result,
            summary,
        )
    recorded = store.last(action=Action.AUDIT_CHECKPOINT)
    newer = recorded.details.get("checkpoint_seq") if recorded else None
    if isinstance(newer, int) and newer > cp.seq:
        return broken(
            f"record {recorded.seq if recorded else '?'} says checkpoint {newer} was written to "
            f"{recorded.details.get('anchor') if recorded else '?'}, but the newest in {where} "
            f"is {cp.seq}: the anchor lost checkpoints, or MLSTEWARD_AUDIT_ANCHOR points elsewhere",
            result,
            summary,
        )
    if expect_head is not None and not _has_hash(store, expect_head):
        return broken(
            f"the expected head {expect_head[:16]}… is not in the chain: the chain was rewritten "
            "(or cut before it), or the hash belongs to another audit trail",
            result,
            summary,
        )
    hours = settings.audit_checkpoint_hours()
    age = _age_hours(cp.ts, now or dt.datetime.now(dt.UTC))
    if age > hours:
        stale = (
            f"the newest checkpoint is {age:.1f} h old (more than {hours:g} h): records after "
            f"{cp.seq} are only as safe as the database; run `mlsteward audit checkpoint` or "
            "check the scheduled one"
        )
        warning = f"{warning}; {stale}" if warning else stale
    return CheckedTrail(True, result.records, result.head_hash, None, None, summary, where, warning)

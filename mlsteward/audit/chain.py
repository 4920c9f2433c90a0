"""The chain check both stores share: each record's hash and its link to the one before.

A chain is checked in segments: ``scan`` checks one run of rows (each row's hash, and the seq
and previous-hash link between consecutive rows) and ``finish`` joins the segments in order (the
link into each segment's first row) and checks the head marker and the expected head. One
segment is the plain sequential check; large chains are split into seq ranges scanned by helper
processes in parallel (``verify_pool``), because recomputing a million SHA-256 hashes in Python
is CPU-bound and the machine has more than one core.

What the chain cannot catch: someone with write access to the database who rewrites the whole
chain from the first changed record onwards, recomputing every hash and the head marker,
produces a chain that verifies. Only a hash kept outside the database can expose that: store
``VerifyResult.head_hash`` (or a record's ``hash``) somewhere the database's writers cannot
change, and pass it to ``verify(expect_head=...)``; verification then also requires that the
record with that hash is still in the chain. Records appended *after* that checkpoint are
accepted, so a checkpoint protects the history up to it, not what came later. The triggers that
make the tables append-only stop accidents and code paths, not a database owner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mlsteward.audit.records import (
    FORMAT,
    GENESIS_HASH,
    AuditRecord,
    compute_hash,
    encode_compact,
    record_row,
)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking a chain.

    ``records`` is how many records were read: all of them when ``ok``, otherwise those up to
    the first problem. ``head_hash`` is the last record's hash when ``ok`` (worth storing
    elsewhere as a checkpoint, see ``expect_head``) and ``None`` otherwise: a broken chain has
    no trustworthy head. ``first_bad_seq`` is the first sequence number at fault (``None`` when
    the fault is not one record, e.g. a checkpoint hash that is not in the chain).
    """

    ok: bool
    records: int
    head_hash: str | None
    first_bad_seq: int | None
    problem: str | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Segment:
    """What ``scan`` found in one run of rows."""

    count: int  # rows read (up to and including the first bad one)
    first_row: tuple | None  # its link to what precedes it is checked by ``finish``
    last_seq: int | None
    last_hash: str | None
    bad_seq: int | None  # first problem inside the run (None: none)
    problem: str | None
    seen_expected: bool  # the expected head hash occurred in the run

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Segment:
        data = json.loads(text)
        if data["first_row"] is not None:
            data["first_row"] = tuple(data["first_row"])
        return cls(**data)


def _short(h: str) -> str:
    return h[:16] + "…" if len(h) > 16 else h


def scan(
    rows: Iterable[tuple],
    *,
    expect_head: str | None = None,
    find_seq: Callable[[str], int | None] | None = None,
) -> Segment:
    """Check a run of stored rows (``COLUMNS`` order, by seq); the hot loop of ``verify``.

    Per row: one tuple slice, one C-level JSON encode, one SHA-256 and three comparisons.
    """
    encode = encode_compact
    sha = hashlib.sha256
    fmt = (FORMAT,)
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return Segment(0, None, None, None, None, None, False)
    seen = first[9] == expect_head
    digest = sha(encode(fmt + first[:9]).encode("utf-8")).hexdigest()
    if digest != first[9]:
        bad, problem = _diagnose(first, digest, first[0], first[8], find_seq)
        return Segment(1, first, None, None, bad, problem, seen)
    expected = first[0] + 1
    prev = first[9]
    count = 1
    for row in it:
        count += 1
        if (
            row[0] != expected
            or row[8] != prev
            or sha(encode(fmt + row[:9]).encode("utf-8")).hexdigest() != row[9]
        ):
            digest = sha(encode(fmt + row[:9]).encode("utf-8")).hexdigest()
            bad, problem = _diagnose(row, digest, expected, prev, find_seq)
            return Segment(count, first, None, None, bad, problem, seen)
        prev = row[9]
        expected += 1
        if prev == expect_head:
            seen = True
    return Segment(count, first, expected - 1, prev, None, None, seen)


def finish(
    segments: Iterable[Segment],
    *,
    head: tuple[int, str] | None,
    check_head: bool = True,
    expect_head: str | None = None,
    find_seq: Callable[[str], int | None] | None = None,
) -> VerifyResult:
    """Join scanned segments (in seq order) into the verdict on the whole chain.

    Args:
        segments: what ``scan`` found in consecutive seq ranges (one, for a sequential check).
        head: the head marker (seq, hash) read in the same snapshot as the rows, or None.
        check_head: False for chains without a head marker (e.g. an exported list).
        expect_head: a hash kept elsewhere that must still be in the chain.
        find_seq: which stored record carries a given hash; only used to explain a broken
            link (reordered vs inserted vs deleted), never on the hot path.
    """
    count = 0
    expected = 1
    prev = GENESIS_HASH
    seen = expect_head is None
    for seg in segments:
        if seg.first_row is None:  # nothing in this seq range: the next range shows the gap
            continue
        row = seg.first_row
        if row[0] != expected or row[8] != prev:
            digest = compute_hash(*row[:9])
            bad, problem = _diagnose(row, digest, expected, prev, find_seq)
            return VerifyResult(False, count + 1, None, bad, problem)
        if seg.problem is not None:
            return VerifyResult(False, count + seg.count, None, seg.bad_seq, seg.problem)
        count += seg.count
        expected = (seg.last_seq or 0) + 1
        prev = seg.last_hash or prev
        seen = seen or seg.seen_expected
    last = expected - 1
    if check_head:
        broken = _head_problem(head, count, last, prev)
        if broken is not None:
            return broken
    if not seen:
        return VerifyResult(
            False,
            count,
            None,
            None,
            f"the expected head {_short(expect_head or '')} is not in the chain: the chain "
            "was rewritten (or cut before it), or the hash belongs to another audit trail",
        )
    return VerifyResult(True, count, prev if last else None, None, None)


def _head_problem(
    head: tuple[int, str] | None, count: int, last: int, last_hash: str
) -> VerifyResult | None:
    """The verdict when the head marker disagrees with an intact chain ending at ``last``."""
    if head is None:
        if last == 0:
            return None
        return VerifyResult(
            False,
            count,
            None,
            None,
            f"the head marker is missing although the chain has {last} records "
            "(it was deleted outside the audit store)",
        )
    head_seq, head_hash = head
    if head_seq > last:
        what = "the chain is empty" if last == 0 else f"chain ends at {last}"
        return VerifyResult(
            False,
            count,
            None,
            last + 1,
            f"{what} but the head marker says {head_seq} (records removed from the end)",
        )
    if head_seq < last:
        return VerifyResult(
            False,
            count,
            None,
            head_seq + 1,
            f"chain ends at {last} but the head marker says {head_seq} "
            f"(records {head_seq + 1}..{last} were added outside the audit store)",
        )
    if head_hash != last_hash:
        return VerifyResult(
            False,
            count,
            None,
            last,
            f"the head marker's hash {_short(head_hash)} != record {last}'s hash "
            f"{_short(last_hash)} (the last record was replaced)",
        )
    return None


def _diagnose(
    row: tuple,
    digest: str,
    expected_seq: int,
    prev: str,
    find_seq: Callable[[str], int | None] | None,
) -> tuple[int, str]:
    """(first bad seq, problem) for the first row that breaks the chain."""
    seq, stored, prev_hash = row[0], row[9], row[8]
    if seq > expected_seq:
        gone = str(expected_seq) if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
        noun = "record" if seq == expected_seq + 1 else "records"
        return expected_seq, f"sequence gap after {expected_seq - 1} ({noun} {gone} deleted)"
    if seq < expected_seq:
        return seq, f"record {seq} appears again after {expected_seq - 1} (duplicated record)"
    if prev_hash == prev:  # link intact, so the content itself changed
        return seq, (
            f"record {seq} was edited: stored hash {_short(stored)} != recomputed {_short(digest)}"
        )
    linked = find_seq(prev_hash) if find_seq is not None else None
    if linked is not None and linked > seq:
        return seq, (
            f"record {seq}: previous-hash link broken: it links to record {linked}, which now "
            "comes after it (records reordered)"
        )
    if linked is not None and linked < seq - 1:
        one = linked == seq - 2
        inserted = str(seq - 1) if one else f"{linked + 1}..{seq - 1}"
        return linked + 1, (
            f"record {seq}: previous-hash link broken: it links to record {linked}, so "
            f"{'record' if one else 'records'} {inserted} {'was' if one else 'were'} "
            "inserted before it"
        )
    if digest == stored:
        return seq, (
            f"record {seq}: previous-hash link broken (a record before it was deleted, "
            "inserted, replaced or reordered)"
        )
    return seq, (
        f"record {seq}: previous-hash link broken and stored hash {_short(stored)} != "
        f"recomputed {_short(digest)} (records deleted, inserted or reordered, and renumbered)"
    )


def verify_records(
    records: Iterable[AuditRecord | Mapping], expect_head: str | None = None
) -> VerifyResult:
    """Check an exported chain (records or their ``to_dict()``, from seq 1, in order).

    There is no head marker outside the database, so removal of the last records is only
    caught through ``expect_head``.
    """
    rows = [record_row(r) for r in records]
    by_hash = {row[9]: row[0] for row in rows}
    segment = scan(rows, expect_head=expect_head, find_seq=by_hash.get)
    return finish(
        [segment], head=None, check_head=False, expect_head=expect_head, find_seq=by_hash.get
    )

"""Audit records, their canonical form and hash, and the chain check both stores share.

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
import datetime as dt
import getpass
import hashlib
import importlib
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import Path, PurePath
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

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
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
    REPRODUCED = "reproduced"
    REPRODUCTION_REFUSED = "reproduction_refused"
    SNAPSHOTS_COLLECTED = "snapshots_collected"
    ROLLOUT_STARTED = "rollout_started"
    ROLLOUT_STEP_PASSED = "rollout_step_passed"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
    ROLLOUT_COMPLETED = "rollout_completed"
    ROLLOUT_ABORTED = "rollout_aborted"
    ROLLOUT_REFUSED = "rollout_refused"


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


def default_actor() -> str:
    """The OS user running this process, or ``"system"`` when there is none (containers)."""
    try:
        name = getpass.getuser()
    except Exception:  # getpass raises KeyError/OSError when no user name can be found
        return "system"
    return name or "system"


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
    return _ENCODE(
        (FORMAT, seq, ts, actor, action, model, version, reason, details_json, prev_hash)
    ).encode("utf-8")


def compute_hash(*fields: Any) -> str:
    """The record hash: hex SHA-256 of ``canonical_bytes(*fields)`` (the same nine fields)."""
    return _sha256(canonical_bytes(*fields)).hexdigest()


# ----------------------------------------------------------------------------- writing


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


# ----------------------------------------------------------------------------- verifying
#
# A chain is checked in segments: ``scan`` checks one run of rows (each row's hash, and the
# seq and previous-hash link between consecutive rows) and ``finish`` joins the segments in
# order (the link into each segment's first row) and checks the head marker and the expected
# head. One segment is the plain sequential check; large chains are split into seq ranges
# scanned by helper processes in parallel (``run_segments``), because recomputing a million
# SHA-256 hashes in Python is CPU-bound and the machine has more than one core.

PARALLEL_MIN_RECORDS = 200_000
"""Below this many records one process verifies: starting a helper costs ~0.1-0.4 s."""

RECORDS_PER_WORKER = 100_000


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
    encode = _ENCODE
    sha = _sha256
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
        if head is None and last > 0:
            return VerifyResult(
                False,
                count,
                None,
                None,
                f"the head marker is missing although the chain has {last} records "
                "(it was deleted outside the audit store)",
            )
        if head is not None:
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
            if head_hash != prev:
                return VerifyResult(
                    False,
                    count,
                    None,
                    last,
                    f"the head marker's hash {_short(head_hash)} != record {last}'s hash "
                    f"{_short(prev)} (the last record was replaced)",
                )
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


def plan_segments(first_seq: int | None, last_seq: int | None, workers: int | None) -> list:
    """Split seq range [first_seq, last_seq] into (after, upto] ranges, one per process.

    ``workers`` None picks by size and free cores; 1 forces a single sequential pass.
    """
    if first_seq is None or last_seq is None:
        return []
    n = last_seq - first_seq + 1
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        workers = 1 if n < PARALLEL_MIN_RECORDS else min(cores, 4, n // RECORDS_PER_WORKER)
    workers = max(1, min(workers, n))
    bounds = [first_seq - 1 + (n * i) // workers for i in range(workers + 1)]
    return list(itertools.pairwise(bounds))


def run_segments(
    ranges: list[tuple[int, int]],
    *,
    store_module: str,
    url: str,
    expect_head: str | None,
    scan_here: Callable[[int, int], Segment],
    options: dict | None = None,
) -> list[Segment]:
    """Scan the first range in this process and the others in helper processes at once.

    Helpers are fresh interpreters (``python -c``) that get the URL on stdin (never in argv,
    where other users could read a password) and print their ``Segment`` as JSON. A helper
    that cannot start or fails is replaced by scanning its range here, so parallelism only
    ever changes the speed, never the verdict.
    """
    helpers = [
        _start_helper(store_module, url, lo, hi, expect_head, options or {})
        for lo, hi in ranges[1:]
    ]
    try:
        segments = [scan_here(*ranges[0])] if ranges else []
        for (lo, hi), helper in zip(ranges[1:], helpers, strict=True):
            segment = _collect_helper(helper)
            segments.append(segment if segment is not None else scan_here(lo, hi))
    finally:
        for helper in helpers:  # only still running if this process failed first
            if helper is not None and helper.poll() is None:
                helper.kill()
                helper.wait()
    return segments


def _start_helper(
    store_module: str, url: str, after: int, upto: int, expect_head: str | None, options: dict
) -> subprocess.Popen | None:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    request = {
        "store": store_module,
        "url": url,
        "after": after,
        "upto": upto,
        "expect_head": expect_head,
        "options": options,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from mlsteward.audit.records import _helper; _helper()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request).encode("utf-8"))
        proc.stdin.close()
    except OSError:
        return None
    return proc


def _collect_helper(proc: subprocess.Popen | None) -> Segment | None:
    if proc is None:
        return None
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.wait() != 0:
        return None
    try:
        return Segment.from_json(out.decode("utf-8"))
    except (ValueError, TypeError, KeyError):
        return None


def _helper() -> None:
    """Entry point of a verify helper process: scan one seq range, print the Segment."""
    request = json.loads(sys.stdin.read())
    module = importlib.import_module(request["store"])
    segment = module.scan_range(
        request["url"],
        request["after"],
        request["upto"],
        request["expect_head"],
        **request["options"],
    )
    sys.stdout.write(segment.to_json())


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

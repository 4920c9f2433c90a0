"""The prediction log's write-ahead file: answered rows survive the service being killed.

Rows wait in memory up to ``serving.log_flush_seconds`` before they are written as a parquet
batch; a SIGKILL, an out-of-memory kill or a power cut would lose them. So before a request
is answered its rows' pickle is appended, with one unbuffered ``os.writev``, to a segment file
beside the model's log, and a thread fsyncs the segments every
``MLSTEWARD_SERVING_LOG_FSYNC_MS``. Once ``writev`` returns the bytes are in the kernel's page
cache: a killed process loses nothing; a machine that goes down loses at most the rows of the
last fsync interval (the lag is measured: ``mlsteward_prediction_log_fsync_lag_seconds``).

Layout, per model, hidden from readers of the log (they only glob ``date=*/batch-*.parquet``)::

    <predictions_dir(model)>/.wal/<instance>.lock     flock held while the instance lives
    <predictions_dir(model)>/.wal/<instance>/<batch id>.wal

One segment is one batch: the log writer rotates the segment when it takes the model's queued
rows, so the rows of a segment are exactly the rows of the batch, and the segment's name is
the batch id the rows are published under. A segment is deleted once its batch is published.
A start replays the segments, of the models it serves, of instances whose lock nobody holds
(a crashed service) under their own batch ids: a batch published before the crash is not
written twice, because the log refuses an existing batch id and the log writer counts that
batch as written. Every service instance writes its own directory, so two services on one
home never replay each other's live segments.

A record is ``length, CRC32`` (little-endian, 4 bytes each) and a payload: the model's name
(2-byte length, UTF-8), the row count (4 bytes) and the rows' pickle. A record cut short by a
crash, or one whose CRC does not match, ends the segment: it and anything after it are
dropped on replay, and the bytes dropped are logged. A failed or short append is cut back
off the file at once (``ftruncate``), so a full disk never leaves a torn record behind a
later good one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlsteward.monitoring import prediction_log

log = logging.getLogger("mlsteward.serving")

WAL_DIR = ".wal"
SUFFIX = ".wal"
_HEADER = struct.Struct("<II")  # payload length, CRC32 of the payload
_PREFIX = struct.Struct("<HI")  # model name length, rows
MAX_RECORD_BYTES = 1 << 30  # a length above this is a torn header, not a record
PROBE_BYTES = 64 * 1024


class WalError(OSError):
    """A segment could not be written; the record was cut back off the file."""


@dataclass(frozen=True)
class Record:
    model: str
    rows: int
    blob: bytes


def encode(model: str, rows: int, blob: bytes) -> list[bytes]:
    """A record as the pieces ``os.writev`` writes in one call (no copy of the pickle)."""
    name = model.encode()
    prefix = _PREFIX.pack(len(name), rows) + name
    crc = zlib.crc32(blob, zlib.crc32(prefix))
    return [_HEADER.pack(len(prefix) + len(blob), crc), prefix, blob]


def decode(data: bytes) -> tuple[list[Record], int]:
    """The whole records of a segment's bytes, and how many bytes at the end were not one (a
    torn tail: cut short, or failing its CRC)."""
    records: list[Record] = []
    pos, end = 0, len(data)
    view = memoryview(data)
    while pos < end:
        if end - pos < _HEADER.size:
            break
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if length < _PREFIX.size or length > MAX_RECORD_BYTES or start + length > end:
            break
        payload = view[start : start + length]
        if zlib.crc32(payload) != crc:
            break
        name_len, rows = _PREFIX.unpack_from(payload, 0)
        blob_at = _PREFIX.size + name_len
        if blob_at > length:
            break
        model = bytes(payload[_PREFIX.size : blob_at]).decode("utf-8", errors="replace")
        records.append(Record(model, rows, bytes(payload[blob_at:])))
        pos = start + length
    return records, end - pos


@dataclass
class Segment:
    """A segment read back: its batch id, records and the torn bytes dropped from its end."""

    path: Path
    records: list[Record]
    torn_bytes: int

    @property
    def batch_id(self) -> str:
        return self.path.name.removesuffix(SUFFIX)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.records)


def read_segment(path: Path) -> Segment:
    records, torn = decode(path.read_bytes())
    return Segment(path, records, torn)


def wal_root(predictions_dir: Path) -> Path:
    return predictions_dir / WAL_DIR


def _lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if missing), or None when someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Orphan:
    """A dead instance's segments of one model, locked by this process until all of them are
    published; then its directory and lock go."""

    directory: Path
    lock_path: Path
    lock_fd: int
    segments: list[Segment]
    _left: int = 0

    def __post_init__(self) -> None:
        self._left = len(self.segments)

    def published(self, segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)
        self._left -= 1
        if self._left <= 0:
            self.release()

    def release(self) -> None:
        if self.lock_fd < 0:
            return
        _let_go(self.directory, self.lock_path, self.lock_fd)
        self.lock_fd = -1


def _let_go(directory: Path, lock_path: Path, lock_fd: int) -> None:
    """Give up an instance's directory: removed (with its lock file) once no segment is left
    in it, then the lock released, so no later start finds an empty instance to replay."""
    with contextlib.suppress(OSError):
        if not any(directory.glob(f"*{SUFFIX}")):
            shutil.rmtree(directory, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
    os.close(lock_fd)


def orphans(root: Path) -> Iterator[Orphan]:
    """Every instance directory under ``root`` whose lock nobody holds, locked now, with its
    segments read (empty ones deleted); stray lock files without a directory are removed."""
    if not root.is_dir():
        return
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        lock_path = root / f"{directory.name}.lock"
        fd = _lock(lock_path)
        if fd is None:
            continue  # a live service writes there
        segments = []
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            segment = read_segment(path)
            if segment.torn_bytes:
                log.warning("%s: dropped a torn record of %d byte(s) at its end (a crash cut "
                            "it short)", path, segment.torn_bytes)  # fmt: skip
            if segment.records:
                segments.append(segment)
            else:
                path.unlink(missing_ok=True)
        orphan = Orphan(directory, lock_path, fd, segments)
        if not segments:
            orphan.release()
            continue
        yield orphan
    for lock_path in root.glob("*.lock"):
        if (root / lock_path.stem).is_dir():
            continue
        fd = _lock(lock_path)
        if fd is not None:
            lock_path.unlink(missing_ok=True)
            os.close(fd)


@dataclass
class _Open:
    """The segment being appended to, or one sealed and not yet fsynced and closed."""

    path: Path
    fd: int
    size: int = 0
    dirty_since: float | None = None  # monotonic time of the oldest append not yet fsynced


@dataclass
class ModelWal:
    """One model's segments in this instance's directory."""

    model: str
    root: Path  # <predictions_dir>/.wal
    instance: str
    current: _Open | None = None
    sealed: list[_Open] = field(default_factory=list)
    lock_fd: int = -1
    dir_dirty: bool = False

    @property
    def directory(self) -> Path:
        return self.root / self.instance

    def open(self) -> None:
        """Lock this instance's name, then make its directory and first segment (in that order:
        a starting service that sees the directory always finds the lock held)."""
        self._ensure_lock()
        self.current = self._new_segment()

    @property
    def lock_path(self) -> Path:
        return self.root / f"{self.instance}.lock"

    def _ensure_lock(self) -> None:
        """Hold the lock file, made again if someone deleted the log's directory under a running
        service: a directory without its lock would be replayed by the next service to start
        while this one still appends to it."""
        if self.lock_fd >= 0 and self.lock_path.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = _lock(self.lock_path)
        if fd is None:  # instance names are unique: someone else took ours
            raise WalError(errno.EBUSY, f"{self.lock_path} is locked by another process")
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
        self.lock_fd = fd

    def _new_segment(self) -> _Open:
        self._ensure_lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{prediction_log.new_id()}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.dir_dirty = True
        return _Open(path, fd)

    def append(self, pieces: list[bytes], now: float) -> None:
        """One record, in one system call; cut back off the segment if it did not fit."""
        seg = self.current
        if seg is None:
            self.current = seg = self._new_segment()
        total = sum(len(p) for p in pieces)
        try:
            written = os.writev(seg.fd, pieces)
        except OSError as exc:
            self._cut(seg)
            raise WalError(exc.errno, exc.strerror or str(exc)) from exc
        if written != total:  # a full disk took part of it
            self._cut(seg)
            raise WalError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        seg.size += total
        if seg.dirty_since is None:
            seg.dirty_since = now

    @staticmethod
    def _cut(seg: _Open) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(seg.fd, seg.size)

    def rotate(self) -> Path:
        """Seal the current segment (its rows are the batch just taken) and start a new one;
        the sealed one is fsynced and closed by the sync thread. Returns the sealed path."""
        new = self._new_segment()  # first: if it fails, nothing changed
        old = self.current
        self.current = new
        assert old is not None
        self.sealed.append(old)
        return old.path

    def probe(self) -> None:
        """Write and fsync ``PROBE_BYTES`` beside the segments, then remove them: whether the
        disk takes writes again after a failure, asked of the disk itself (free-space figures
        miss quotas)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / ".probe"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            data = b"\0" * PROBE_BYTES
            if os.write(fd, data) != len(data):
                raise WalError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fdatasync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close every file; the directory and its lock go when no segment is left in it."""
        for seg in [*self.sealed, *([self.current] if self.current else [])]:
            with contextlib.suppress(OSError):
                os.fdatasync(seg.fd)
            os.close(seg.fd)
            if seg.size == 0:
                seg.path.unlink(missing_ok=True)
        self.sealed, self.current = [], None
        if self.lock_fd >= 0:
            _let_go(self.directory, self.lock_path, self.lock_fd)
            self.lock_fd = -1


class WriteAheadLog:
    """Every served model's segments, and the thread that fsyncs them.

    ``lock`` guards the open files: appends and rotations hold it for a system call, the sync
    thread only to swap out what it will fsync, never while it waits for the disk.
    """

    def __init__(
        self,
        instance: str,
        root_of: Callable[[str], Path],
        fsync_seconds: float,
        on_lag: Callable[[str, float], None] | None = None,
        on_sync_error: Callable[[str, OSError], object] | None = None,
    ) -> None:
        self.instance = instance
        self.root_of = root_of
        self.fsync_seconds = fsync_seconds
        self._on_lag = on_lag or (lambda model, seconds: None)
        self._on_sync_error = on_sync_error or (lambda model, exc: None)
        self.models: dict[str, ModelWal] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-wal", daemon=True)

    def model(self, model: str) -> ModelWal:
        wal = self.models.get(model)
        if wal is None:
            wal = ModelWal(model, self.root_of(model), self.instance)
            wal.open()
            self.models[model] = wal
        return wal

    def start(self) -> None:
        self._thread.start()

    def append(self, model: str, rows: int, blob: bytes) -> None:
        pieces = encode(model, rows, blob)
        with self.lock:
            self.model(model).append(pieces, time.monotonic())

    def rotate(self, model: str) -> Path:
        with self.lock:
            return self.model(model).rotate()

    def _run(self) -> None:
        while not self._stop.wait(self.fsync_seconds):
            self.sync()

    def sync(self) -> None:
        """fsync what was appended since the last call, close sealed segments, and report each
        model's lag: from its oldest unsynced append to the fsync that made it durable."""
        with self.lock:
            work = []
            for wal in self.models.values():
                files = [*wal.sealed, *([wal.current] if wal.current else [])]
                dirty = [(f.fd, f.dirty_since) for f in files if f.dirty_since is not None]
                for f in files:
                    f.dirty_since = None
                sealed, wal.sealed = wal.sealed, []
                dir_dirty, wal.dir_dirty = wal.dir_dirty, False
                work.append((wal, dirty, sealed, dir_dirty))
        for wal, dirty, sealed, dir_dirty in work:
            try:
                if dir_dirty:
                    _fsync_dir(wal.directory)
                for fd, _ in dirty:
                    os.fdatasync(fd)
            except OSError as exc:
                self._on_sync_error(wal.model, exc)
            else:
                if dirty:
                    oldest = min(since for _, since in dirty if since is not None)
                    self._on_lag(wal.model, time.monotonic() - oldest)
            for f in sealed:
                with contextlib.suppress(OSError):
                    os.close(f.fd)

    def probe(self) -> None:
        for model in list(self.models):
            self.models[model].probe()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._thread.is_alive():
            # an fsync hung on a failing disk: closing the files under it could close another
            # file that reuses a number; the process is ending, the kernel closes them
            log.error("the write-ahead file's fsync did not return in 10 s; files left open")
            return
        with self.lock:
            for wal in self.models.values():
                wal.close()
            self.models.clear()

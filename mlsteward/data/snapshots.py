"""The content-addressed snapshot store: finding a data version by its digest, and proving it.

A snapshot file is named by the SHA-256 of its bytes (``<root>/<model>/<digest>.parquet``), so a
data version is looked up by digest, never by "whatever the source holds now". A registered
model version names the digest it was trained on; reproduction and audits read exactly that file
and refuse, with the reason, when it is gone or its bytes no longer hash to its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlsteward.config.settings import snapshots_dir
from mlsteward.errors import MlstewardError
from mlsteward.integrity import sha256_file

if TYPE_CHECKING:
    pass


CREATED_TIMESTAMP_COLUMN = "ingested_at"
"""Snapshot column Feast uses to break ties between rows with the same entity and event time."""


class SnapshotMissingError(MlstewardError):
    """No file in the snapshot store (or at the recorded path) has the requested digest."""


class SnapshotAlteredError(MlstewardError):
    """A snapshot file exists but its bytes no longer hash to the digest it is named by."""

    def __init__(self, message: str, path: Path, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path, self.expected, self.actual = path, expected, actual


def snapshot_path(model: str, digest: str) -> Path:
    """Where the store keeps the snapshot with this digest (whether or not it exists)."""
    return snapshots_dir(model) / f"{digest}.parquet"


def locate_snapshot(model: str, digest: str, recorded_path: str | None = None) -> Path:
    """The verified snapshot file of ``digest``: the store's copy, else the recorded path.

    The recorded path is a fallback for state moved between homes; either way the bytes must
    hash to ``digest``, so a changed file is reported, never silently read.

    Raises:
        SnapshotMissingError: neither place has the file.
        SnapshotAlteredError: the file exists but its SHA-256 differs from ``digest``.
    """
    candidates = [snapshot_path(model, digest)]
    if recorded_path and Path(recorded_path) != candidates[0]:
        candidates.append(Path(recorded_path))
    for path in candidates:
        if not path.exists():
            continue
        actual = sha256_file(path)
        if actual != digest:
            raise SnapshotAlteredError(
                f"data digest mismatch: snapshot {path} of model {model!r} hashes to {actual}, "
                f"not its recorded data version {digest}; the file was changed after ingestion",
                path,
                digest,
                actual,
            )
        return path
    where = " or ".join(str(p) for p in candidates)
    raise SnapshotMissingError(
        f"snapshot {digest} of model {model!r} is missing (looked in {where}); it was deleted "
        "or the store moved (MLSTEWARD_SNAPSHOT_ROOT)"
    )

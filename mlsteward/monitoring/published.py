"""Files a reader only ever sees whole: scored batches and drift reports.

People and downstream jobs read these files from their folders. A run killed while writing one
(SIGKILL, a lost machine, the OOM killer) must not leave a torn file under the name of a
finished one. Each file is written under a hidden temporary name beside its final one
(``.NAME.<random>.tmp``), flushed to disk, then renamed into place: a rename within one
directory is atomic, so the final name holds either nothing or the whole file. A killed writer
leaves only the hidden temporary file, which no reader globs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def draft(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write (and rewrite) the file at; it becomes
    ``path`` when the block ends without an error, and is removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_whole(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a draft of ``path``, published whole; returns ``path``."""
    with draft(path) as tmp:
        write(tmp)
    return path

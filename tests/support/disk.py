"""A small real disk that fills up: a tmpfs mounted where the prediction log lives (the tests
run as root), filled to the last byte and freed again, and the service's metrics read back as
numbers."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

CHUNK = 64 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """``path`` as a fresh tmpfs of ``size`` until the block ends; unmounted even when the test
    fails (lazily, if a process still holds a file there)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the disk refuses a byte more; returns the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        block = b"\0" * CHUNK
        size = CHUNK
        while size:
            try:
                os.write(fd, block[:size])
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                size //= 2  # down to the last byte that fits
    finally:
        os.close(fd)
    return filler


def metric(text: str, name: str, labels: str | None = None) -> float:
    """The sum of a metric's samples in a Prometheus exposition (those whose label set contains
    ``labels``, e.g. ``reason="in_flight"``, when given); 0 when there is none."""
    total = 0.0
    for line in text.splitlines():
        found = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if found and (labels is None or labels in (found.group(1) or "")):
            total += float(found.group(2))
    return total


def buckets(text: str, name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative ``(le, count)`` pairs, summed over its label sets."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        found = re.match(rf'^{re.escape(name)}_bucket\{{.*le="([^"]+)".*\}} (\S+)$', line)
        if found:
            le = float(found.group(1))
            counts[le] = counts.get(le, 0.0) + float(found.group(2))
    return sorted(counts.items())


def quantile(pairs: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket that holds quantile ``q`` (None without observations)."""
    if not pairs or pairs[-1][1] == 0:
        return None
    wanted = q * pairs[-1][1]
    return next(le for le, count in pairs if count >= wanted)


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text

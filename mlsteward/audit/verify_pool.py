"""Verifying a large chain in several processes at once: seq ranges scanned in parallel.

Recomputing a million SHA-256 hashes in Python is CPU-bound, so ``verify`` splits a large chain
into seq ranges (``plan_segments``), scans the first here and the others in helper processes
(``run_segments``), then joins the segments with ``chain.finish`` as if one process had read
them all. A helper that cannot start or fails is replaced by scanning its range here, so the
pool only ever changes the speed, never the verdict.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mlsteward.audit.chain import Segment

PARALLEL_MIN_RECORDS = 200_000
"""Below this many records one process verifies: starting a helper costs ~0.1-0.4 s."""

RECORDS_PER_WORKER = 100_000


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
            [sys.executable, "-c", "from mlsteward.audit.verify_pool import _helper; _helper()"],
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

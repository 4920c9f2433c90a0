"""The service's helper processes: started, stopped and made to yield the cores alike.

Work the service does off the request path (writing the prediction log, reading the
registry) runs in child processes rather than threads: a thread's CPU work holds the GIL the
event loop needs, and every request that arrives meanwhile waits. The children are spawned
(the service has threads: never fork it), ignore the terminal's signals (the service decides
when they stop, after its last words to them) and run at a lower priority, so that when the
cores are busy requests go first.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

NICENESS = 10


def background() -> None:
    """Called first in a helper: survive a signal sent to the whole process group, yield CPU."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)


def spawn(
    target: Callable[..., None], name: str, *args: Any
) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    """Start ``target(conn, *args)`` in a child; returns the child and this side's pipe end."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(theirs, *args), name=name, daemon=True)
    proc.start()
    theirs.close()
    return proc, ours


def discard(proc: multiprocessing.process.BaseProcess | None, conn: Connection | None) -> None:
    """Close the pipe and make sure the child is gone (killed if it did not stop by itself)."""
    if conn is not None:
        conn.close()
    if proc is not None:
        if proc.is_alive():
            proc.kill()
        proc.join(5)

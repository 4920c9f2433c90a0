"""Following the registry's aliases and canary tags from a helper process.

One registry read (``canary.read_target``: a ``get_registered_model`` through MLflow's
SQLAlchemy store) costs 5-10 ms of Python. Run from a thread of the service every
``poll_seconds``, it held the GIL for that long and the requests arriving meanwhile waited:
at one client they made most of the service's 99th-percentile latency above a bare endpoint's.
Here a child process reads the registry and sends each model's target (a few hundred bytes);
the service's thread waits for it with the GIL released and hands it to ``on_target``, where
an unchanged target costs microseconds and a changed one loads the new version.

Every poll is sent, changed or not: a version that failed to load is retried, and
``refreshed_at`` on ``/readyz`` shows the registry is still being followed. A child that dies
is started again; while it is down the service keeps serving what it has loaded.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection

from mlsteward.audit import AuditStore, audit_store
from mlsteward.governance import canary, champion
from mlsteward.governance.canary import ServingTarget
from mlsteward.serving.helpers import background, discard, spawn

log = logging.getLogger("mlsteward.serving")
RESTART_SECONDS = 1.0
STOP_GRACE_SECONDS = 0.5
_STOP = "stop"

OnTarget = Callable[[str, ServingTarget | None, str | None], None]


def watch(conn: Connection, models: list[str], poll_seconds: float) -> None:
    """Child main loop: read every model's target and the governance record's champion, send
    ``(model, target, error)``, wait."""
    background()
    audit: AuditStore | None = None

    while True:
        for model in models:
            message: tuple[str, ServingTarget | None, str | None]
            try:
                audit = audit or audit_store()
                message = (model, read_checked(model, audit), None)
            except Exception as exc:  # registry or record down: the service keeps what it has
                if audit is not None:
                    audit.close()
                    audit = None
                message = (model, None, f"{type(exc).__name__}: {exc}")
            try:
                conn.send(message)
            except OSError:
                return
        # a message from the service (stop) or its end of the pipe closing ends the loop
        if conn.poll(poll_seconds):
            return


def read_checked(model: str, audit: AuditStore) -> ServingTarget:
    """The registry's target with the governance record's champion beside it."""
    target = canary.read_target(model)
    return replace(target, check=champion.compare(model, audit, target.champion))


class RegistryWatcher:
    """The service's side: keeps the child running and passes its targets to ``on_target``."""

    def __init__(self, models: list[str], poll_seconds: float, on_target: OnTarget) -> None:
        self.models = list(models)
        self.poll_seconds = poll_seconds
        self._on_target = on_target
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)

    def start(self) -> None:
        if self.models:
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:  # close() must see any child this thread starts
                if self._stopping.is_set():
                    return
                if self._conn is None:
                    self._proc, self._conn = spawn(
                        watch, "registry-watch", self.models, self.poll_seconds
                    )
                conn = self._conn
            try:
                model, target, error = conn.recv()
            except (EOFError, OSError):
                if self._stopping.is_set():
                    return
                log.warning("the registry watcher stopped; starting it again")
                with self._lock:
                    discard(self._proc, self._conn)
                    self._proc, self._conn = None, None
                self._stopping.wait(RESTART_SECONDS)
                continue
            try:
                self._on_target(model, target, error)
            except Exception:  # one bad refresh must not stop the following ones
                log.exception("%s: following the registry failed", model)

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            proc, conn = self._proc, self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(_STOP)
        if proc is not None:
            # The child only reads the registry, so ending it loses nothing. A child still
            # importing MLflow (a service stopped within seconds of starting) would see the
            # stop only when its first read is done: it is terminated after a short grace.
            proc.join(STOP_GRACE_SECONDS)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            discard(proc, conn)
            self._proc, self._conn = None, None

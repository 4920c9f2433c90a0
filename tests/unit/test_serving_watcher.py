"""The registry watcher's child process: it reports, and it is started again when it dies."""

from __future__ import annotations

import queue
import time

from mlsteward.governance.canary import ServingTarget
from mlsteward.governance.champion import ChampionState
from mlsteward.serving.watcher import RegistryWatcher

MODEL = "heart_disease"
NOTHING = ChampionState(MODEL, recorded=None, record_seq=None, alias=None, pending=None)


def test_a_killed_watcher_child_is_started_again() -> None:
    seen: queue.Queue[tuple[str, ServingTarget | None, str | None]] = queue.Queue()
    watcher = RegistryWatcher([MODEL], 0.2, lambda m, t, e: seen.put((m, t, e)))
    watcher.start()
    try:
        # the registry (a fresh MLflow store) has no such model yet: no champion, no error;
        # the governance record beside it agrees
        model, target, error = seen.get(timeout=120)
        assert (model, error) == (MODEL, None)
        assert target == ServingTarget(None, None, None, NOTHING)
        first = watcher._proc
        assert first is not None and first.is_alive()

        first.kill()
        first.join(10)
        deadline = time.monotonic() + 120
        while True:  # reports resume from a new child
            model, target, error = seen.get(timeout=max(0.1, deadline - time.monotonic()))
            child = watcher._proc
            if child is not None and child.pid != first.pid:
                break
        assert (model, target, error) == (MODEL, ServingTarget(None, None, None, NOTHING), None)
        assert child.is_alive()
    finally:
        watcher.close()
    assert watcher._proc is None and not watcher._thread.is_alive()
    assert not child.is_alive()

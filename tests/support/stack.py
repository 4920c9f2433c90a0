"""Small pieces several integration tests share: polling a real server until something happens,
stopping a process, and reading the online store as Feast does."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """``probe()``'s first truthy value; a clear failure naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; always reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_like_get_online_features(service: str, entity: str, ids: list[Any]) -> list[Any]:
    """``OnlineReader``'s rows for ``ids``, after checking them against Feast's own
    ``get_online_features`` on the current store: equal values of equal Python types, feature by
    feature, and the same again on a second read with the same reader (a reader serves every
    request of the prediction service, so a read must leave nothing behind)."""
    from mlsteward.features.online import OnlineReader
    from mlsteward.features.store import get_store

    store = get_store()
    expected = store.get_online_features(
        features=store.get_feature_service(service), entity_rows=[{entity: i} for i in ids]
    ).to_dict()
    reader = OnlineReader(store, service, entity)
    rows = reader.read(ids)
    for name in reader.names:
        got = [None if row is None else row[name] for row in rows]
        assert got == expected[name], name
        assert [type(v) for v in got] == [type(v) for v in expected[name]], name
    assert reader.read(ids) == rows
    assert [f for read in reader._reads for f in read.features] == reader.names
    return rows

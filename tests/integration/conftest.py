"""Integration fixtures: one real Prefect test harness for the session (it takes ~15 s)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # No heartbeats from flows run in this process: Prefect joins the heartbeat thread at the
    # end of every flow run, which waits out its current 1-s sleep (half a second a run, and the
    # suite runs hundreds). The reaper's runs are processes of their own, with the default.
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture(autouse=True)
def prefect_console_on_real_stderr() -> Iterator[None]:
    """Keep Prefect's console log handlers off Click's per-invocation streams.

    ``CliRunner`` swaps ``sys.stderr`` for a buffer it closes afterwards; a Prefect console
    handler bound to such a buffer breaks every later log line in the session.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    def rebind() -> None:
        loggers = [
            logging.getLogger(),
            *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict)),
        ]
        for lg in loggers:
            for h in getattr(lg, "handlers", []):
                if isinstance(h, PrefectConsoleHandler):
                    h.console.file = sys.__stderr__

    rebind()
    yield
    rebind()

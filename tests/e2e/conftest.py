"""End-to-end fixtures: the tests start real servers, so no in-process Prefect harness here."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Processes these tests start keep their Prefect state (and task cache) in a temp dir."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))

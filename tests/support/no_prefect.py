"""For an integration module that uses no Prefect: import both fixtures into the module to
override the suite's session harness and its console rebinding (``tests/integration/conftest``).

    from tests.support.no_prefect import prefect_console_on_real_stderr, prefect_harness
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

__all__ = ["prefect_console_on_real_stderr", "prefect_harness"]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Overrides the integration suite's Prefect server: nothing here uses Prefect."""
    yield


@pytest.fixture
def prefect_console_on_real_stderr() -> Iterator[None]:
    yield

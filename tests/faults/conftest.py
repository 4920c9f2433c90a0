"""The fault suite's own fixtures: each fault test records what happened for the reliability
page (``docs/generate_reliability.py`` reads the results).

Results are JSON files, one per recorded fault, under ``MLSTEWARD_FAULT_RESULTS`` (default
``build/fault-results`` in the checkout). A result is kept with whether its test passed, so a
page made from a failing run says so instead of showing a figure from a broken run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.catalogue import FAULTS

REPO_ROOT = Path(__file__).resolve().parents[2]


def results_dir() -> Path:
    return Path(os.environ.get("MLSTEWARD_FAULT_RESULTS") or REPO_ROOT / "build" / "fault-results")


class FaultResult:
    """What one fault test saw, written when the test ends."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.rows: list[dict[str, Any]] = []

    def record(
        self,
        fault: str,
        *,
        point: str,
        outcome: str,
        user_sees: str,
        recovery_seconds: float | None = None,
        rows_lost: int | None = None,
        requests_failed: int | None = None,
        checks: dict[str, bool] | None = None,
        figures: dict[str, Any] | None = None,
    ) -> None:
        """``outcome`` is ``recovered`` (by itself, or by the rerun the row says) or
        ``refused`` (a clear error, nothing lost); ``point`` where in the loop it struck;
        ``figures`` any other measured number, by name."""
        assert fault in FAULTS, f"{fault!r} is not in tests/faults/catalogue.py"
        assert outcome in ("recovered", "refused"), outcome
        self.rows.append(
            {
                "fault": fault,
                "point": point,
                "outcome": outcome,
                "user_sees": user_sees,
                "recovery_seconds": recovery_seconds,
                "rows_lost": rows_lost,
                "requests_failed": requests_failed,
                "checks": checks or {},
                "figures": figures or {},
            }
        )


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test server for the session, for fault tests that run flows in this process
    (ask for it; tests that start a real Prefect server of their own do not need it)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


_PASSED = pytest.StashKey[bool]()


@pytest.fixture
def fault_result(request: pytest.FixtureRequest) -> Iterator[FaultResult]:
    result = FaultResult(request.node.nodeid)
    yield result
    if not result.rows:
        return
    passed = request.node.stash.get(_PASSED, False)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    for n, row in enumerate(result.rows):
        row = {**row, "test": request.node.nodeid, "passed": passed, "finished_at": finished}
        (out / f"{stem}-{n}.json").write_text(json.dumps(row, indent=1) + "\n", encoding="utf-8")

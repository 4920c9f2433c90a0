"""The reliability page says what the fault suite measured: it is exactly what the committed
results render to, and every fault in the catalogue has a passing result behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.faults.catalogue import FAULTS
from tests.support.docs_scripts import docs_script


@pytest.fixture(scope="module")
def generator() -> Iterator[ModuleType]:
    """``docs/generate_reliability.py``."""
    with docs_script("generate_reliability") as module:
        yield module


def test_the_page_is_what_the_results_render_to(generator: ModuleType) -> None:
    results = json.loads(generator.RESULTS_JSON.read_text(encoding="utf-8"))
    assert generator.PAGE.read_text(encoding="utf-8") == generator.render(results), (
        "docs/reliability.md is stale: run .venv/bin/python docs/generate_reliability.py "
        "--render-only"
    )


def test_every_fault_has_a_passing_result(generator: ModuleType) -> None:
    results = json.loads(generator.RESULTS_JSON.read_text(encoding="utf-8"))
    measured = {r["fault"] for r in results}
    assert set(FAULTS) <= measured, f"not measured: {sorted(set(FAULTS) - measured)}"
    assert measured <= set(FAULTS), f"not in the catalogue: {sorted(measured - set(FAULTS))}"
    failed = [f"{r['fault']} at {r['point']}" for r in results if not r["passed"]]
    assert not failed, f"results from failing tests: {failed}"


def test_gathering_keeps_the_newest_result_per_fault_and_point(
    generator: ModuleType, tmp_path: Path
) -> None:
    row = {"fault": "soak", "point": "p", "outcome": "recovered", "user_sees": "x",
           "recovery_seconds": 1.5, "rows_lost": 0, "requests_failed": 0, "checks": {},
           "figures": {"requests": 10}, "test": "t", "passed": True}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps({**row, "rows_lost": 3}))
    (tmp_path / "b.json").write_text(json.dumps(row))
    (tmp_path / "c.json").write_text(json.dumps({**row, "fault": "overload", "passed": False}))
    gathered = generator.gather(tmp_path)
    assert [(r["fault"], r["rows_lost"]) for r in gathered] == [("overload", 0), ("soak", 0)]
    page = generator.render(gathered)
    assert "**test failed** (recovered)" in page
    assert "| 1.50 s | 0 | 0 | requests 10 |" in page
    assert "not measured: mlflow-restart-tuning" in page


def test_an_update_replaces_the_rows_of_the_tests_rerun_and_keeps_the_others(
    generator: ModuleType,
) -> None:
    def row(test: str, point: str, fault: str = "soak") -> dict[str, object]:
        return {"fault": fault, "point": point, "test": test, "passed": True}

    committed = [
        row("t.py::test_a[kill]", "killed"),
        row("t.py::test_a[freeze]", "frozen"),
        row("t.py::test_b", "kept", fault="overload"),
    ]
    run = [row("t.py::test_a[kill]", "killed, again")]
    merged = generator.updated(committed, run)
    assert [(r["fault"], r["point"]) for r in merged] == [
        ("overload", "kept"),  # the catalogue's order: overload comes before the soak
        ("soak", "frozen"),  # another parameter of the test, not rerun
        ("soak", "killed, again"),
    ]

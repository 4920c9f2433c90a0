"""Write the reliability page from what the fault suite measured, so the page stays true.

``make test-faults`` runs ``tests/faults/``; each fault test leaves one JSON result per fault it
put the product through under ``build/fault-results/`` (``tests/faults/conftest.py``). This
script gathers them into ``docs/reliability/results.json`` (committed: the figures the page
shows, sorted, without machine paths) and renders ``docs/reliability.md`` from that file and
the catalogue of faults (``tests/faults/catalogue.py``). ``tests/unit/test_docs.py`` fails when
the committed page differs from what the committed results render to, or when a fault of the
catalogue has no result, so neither can be edited by hand or fall behind the catalogue.

Usage::

    make test-faults                                  # run the suite, leaving its results
    .venv/bin/python docs/generate_reliability.py     # gather them and write the page
    .venv/bin/python docs/generate_reliability.py --render-only   # page from results.json
    .venv/bin/python docs/generate_reliability.py --update  # after rerunning some fault tests:
                                                            # their rows replaced, others kept
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "docs" / "reliability" / "results.json"
PAGE = ROOT / "docs" / "reliability.md"
RUN_RESULTS = ROOT / "build" / "fault-results"
_KEYS = ("fault", "point", "outcome", "user_sees", "recovery_seconds", "rows_lost",
         "requests_failed", "checks", "figures", "test", "passed")  # fmt: skip

sys.path.insert(0, str(ROOT))
from tests.faults.catalogue import FAULTS  # noqa: E402  (the catalogue lives with the tests)

_TEMP_PATH = re.compile(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/(?:popen-gw\d+/)?")


def gather(run_dir: Path) -> list[dict[str, Any]]:
    """The results a run left, one per fault and point (a later file wins), in catalogue order;
    the test run's temporary folders are written ``<tmp>/``."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(run_dir.glob("*.json")):
        text = _TEMP_PATH.sub("<tmp>/", path.read_text(encoding="utf-8"))
        row = json.loads(text)
        rows[(row["fault"], row["point"])] = {k: row.get(k) for k in _KEYS}
    return _in_order(rows.values())


def updated(committed: list[dict[str, Any]], run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``committed`` with every row of a test the run went through replaced by what the run
    measured: a fault rerun alone refreshes its rows (and drops points it no longer has)
    without a whole ``make test-faults``."""
    rerun = {r["test"] for r in run}
    kept = [r for r in committed if r["test"] not in rerun]
    return _in_order([*kept, *run])


def _in_order(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {fault: n for n, fault in enumerate(FAULTS)}
    return sorted(rows, key=lambda r: (order.get(r["fault"], len(order)), r["point"]))


def _number(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value) + unit
    if isinstance(value, float):
        text = f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
    else:
        text = f"{value:,}"
    return text + unit


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _figures(figures: dict[str, Any]) -> str:
    return "; ".join(f"{k.replace('_', ' ')} {_number(v)}" for k, v in figures.items()) or "-"


def render(results: list[dict[str, Any]]) -> str:
    by_fault: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        by_fault.setdefault(row["fault"], []).append(row)
    failed = [r for r in results if not r["passed"]]
    missing = [f for f in FAULTS if f not in by_fault]
    lines = [
        "# Reliability",
        "",
        "What mlsteward survives, as its own fault suite measured it. Each row is a fault put to "
        "the real stack on purpose (real servers killed and restarted, a real full disk, real "
        "processes killed with SIGKILL, real load from a second process) and what a user saw. "
        "After every fault the suite checks that the champion alias equals the signed "
        "governance record, that the audit trail verifies, and that no half-written snapshot, "
        "artifact or log file is visible.",
        "",
        "This page is written by `docs/generate_reliability.py` from the results of "
        "`make test-faults` (kept in [`reliability/results.json`](reliability/results.json)); "
        "do not edit it by hand. To measure again on your own machine: `make test-faults`, "
        "then `.venv/bin/python docs/generate_reliability.py`.",
        "",
        f"**{len(results)} faults and points measured, "
        f"{len(results) - len(failed)} survived or refused cleanly"
        + (f", {len(failed)} failed their test" if failed else "")
        + (f"; not measured: {', '.join(missing)}" if missing else "")
        + ".**",
        "",
        "| component | fault | where | outcome | what the user sees | recovery | rows lost "
        "| requests failed | other figures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fault_id, fault in FAULTS.items():
        for row in by_fault.get(fault_id, []):
            outcome = row["outcome"] if row["passed"] else f"**test failed** ({row['outcome']})"
            lines.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        fault.component,
                        fault.fault,
                        row["point"],
                        outcome,
                        row["user_sees"],
                        _number(row["recovery_seconds"], " s"),
                        _number(row["rows_lost"]),
                        _number(row["requests_failed"]),
                        _figures(row["figures"] or {}),
                    )
                )
                + " |"
            )
    lines += [
        "",
        "## What each fault is expected to do",
        "",
        "| fault | expected |",
        "| --- | --- |",
    ]
    lines += [f"| `{fid}`: {_cell(f.fault)} | {_cell(f.expected)} |" for fid, f in FAULTS.items()]
    lines += [
        "",
        "## The tests behind the rows",
        "",
    ]
    by_file: dict[str, set[str]] = {}
    for r in results:
        path, _, name = r["test"].partition("::")
        by_file.setdefault(path, set()).add(name.split("[")[0])
    lines += [f"- `{path}`: {', '.join(sorted(names))}" for path, names in sorted(by_file.items())]
    lines += [] if by_file else ["- none"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true",
                        help="write the page from the committed results.json")  # fmt: skip
    parser.add_argument("--update", action="store_true",
                        help="replace the rows of the tests the run went through, keep the "
                        "others")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RUN_RESULTS,
                        help="where the fault suite left its results")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.render_only:
        results = gather(args.results)
        if not results:
            print(f"no fault results under {args.results}: run `make test-faults` first")
            return 1
        if args.update:
            results = updated(json.loads(RESULTS_JSON.read_text(encoding="utf-8")), results)
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    results = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
    PAGE.write_text(render(results), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)} ({len(results)} results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

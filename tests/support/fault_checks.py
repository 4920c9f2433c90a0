"""What must hold after every fault, checked the same way by every fault test.

After a fault and its recovery (or its clean refusal) the record and the registry agree on each
model's champion, the audit trail verifies, nothing half-written is visible where a reader looks
(snapshots, the prediction log, reports, evidence packs), every published snapshot still hashes
to its name and every prediction-log file reads. ``assert_invariants`` checks all of it and
returns the checks by name, for the fault's result row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from mlsteward.audit import audit_store
from mlsteward.config import settings
from mlsteward.integrity import sha256_file

# A file a writer is still writing is hidden (a leading dot) and ends in .tmp until it is
# published by a rename or a link; these are what a reader must never see.
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".incomplete")


def champion_problems(models: Iterable[str]) -> list[str]:
    """Each model whose champion alias differs from its governance record, or whose promotion
    or rollback is left half-done, as the sentence ``mlsteward status`` would print."""
    from mlsteward.governance import champion  # MLflow: only the tests that train import it

    problems = []
    with audit_store() as audit:
        for model in models:
            state = champion.state(model, audit)
            if not state.consistent:
                problems.append(state.problem() or f"{model}: record and alias differ")
    return problems


def audit_problem() -> str | None:
    """Why the audit trail does not verify, or None."""
    with audit_store() as audit:
        result = audit.verify()
    return None if result.ok else (result.problem or "the audit chain does not verify")


def visible_partial_files(root: Path | None = None) -> list[Path]:
    """Files under the home a reader could mistake for published ones: not hidden, but named as
    half-written (``*.tmp``, ``*.part``, ...)."""
    root = root or settings.home()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.endswith(_PARTIAL_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found)


def unreadable_published_files(models: Iterable[str]) -> list[str]:
    """Published snapshots whose bytes no longer hash to their name, and prediction-log files
    that do not read as parquet: a half-written file that became visible."""
    bad = []
    for model in models:
        for path in sorted(settings.snapshots_dir(model).glob("*.parquet")):
            if sha256_file(path) != path.stem:
                bad.append(f"snapshot {path} does not hash to its name")
        for path in sorted(settings.predictions_dir(model).rglob("*.parquet")):
            if path.name.startswith("."):
                continue
            try:
                pq.read_metadata(path)
            except Exception as exc:  # any reader error means a torn file
                bad.append(f"prediction log {path}: {exc}")
    return bad


def assert_invariants(models: Iterable[str], *, champions: bool = True) -> dict[str, bool]:
    """Assert everything that must hold after a fault; returns the checks that were made.

    ``champions=False`` leaves out the registry (a fault test with no MLflow store).
    """
    models = list(models)
    checks: dict[str, bool] = {}
    if champions:
        problems = champion_problems(models)
        assert not problems, problems
        checks["champion_alias_equals_record"] = True
    problem = audit_problem()
    assert problem is None, problem
    checks["audit_trail_verifies"] = True
    partial = visible_partial_files()
    assert not partial, f"half-written files are visible: {partial}"
    bad = unreadable_published_files(models)
    assert not bad, bad
    checks["no_half_written_file_visible"] = True
    return checks

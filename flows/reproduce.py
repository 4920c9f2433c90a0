"""The reproduction flow: rebuild a registered version from its recipe and say if it is the same.

Runs from the CLI (``mlsteward reproduce``), the Prefect UI (``reproduce-<model>``) or a
schedule, and always leaves an audit record; a completed rebuild also tags the version.
"""

from __future__ import annotations

import time

from prefect import flow

from mlsteward.training.rebuild import workdir_for
from mlsteward.training.reproduce import (
    ReproductionReport,
    ReproductionResult,
    ReproductionSpec,
    Step,
)
from tasks.common import run_actor
from tasks.features import release_training_set
from tasks.reproduce import (
    compare_environment,
    load_recorded_version,
    rebuild_params,
    rebuild_training_set,
    record_reproduction,
    refit_and_compare,
    verify_snapshot,
    verify_stored_artifact,
)


@flow(name="reproduce-model", log_prints=True)
def reproduce_flow(
    model: str = "heart_disease",
    version: str | None = None,
    full: bool = False,
    strict: bool = False,
    requested_by: str | None = None,
) -> ReproductionResult:
    """Rebuild MODEL's VERSION from its recorded data snapshot, params and seed, and compare it
    step by step (data digest, training set, params, metrics, artifact SHA-256) with what was
    registered.

    Args:
        model: name of a model config in config/models.
        version: registered version to rebuild (default: the current champion).
        full: re-run the whole Hyperopt search with the recorded seed and check it finds the
            same best params (slower), instead of refitting the recorded best params.
        strict: refuse to rebuild when the code commit, uv.lock or library versions differ
            from those that trained the version.
        requested_by: the principal this run acts for (``user:alice``).
    """
    started = time.perf_counter()
    # 0. The run's settings: which version, which mode, whether a different environment refuses
    spec = ReproductionSpec.resolve(
        model, version=version, full=full, strict=strict, actor=run_actor(requested_by)
    )

    # 1. What was registered: the version, its recipe, its metrics; and what differs today
    recorded = load_recorded_version(spec)
    version = recorded.info.version
    report = ReproductionReport(model=model, version=version, mode=spec.mode)
    report.original_training_seconds = recorded.training_seconds
    workdir = workdir_for(model, version)
    compare_environment(recorded, report)

    def finish(why_not_run: str) -> ReproductionResult:
        report.close(why_not_run)
        report.seconds = round(time.perf_counter() - started, 3)
        record_reproduction(report, workdir, spec.actor)
        return ReproductionResult.of(report)

    if spec.strict and report.environment:
        report.result = "refused"
        return finish("refused by --strict: the environment differs")
    if recorded.recipe_problem:
        report.add(Step("recipe", "differs", recorded.recipe_problem))
        return finish("no trustworthy recipe to rebuild from")
    report.add(Step("recipe", "same", "recipe matches its registered SHA-256"))

    # 2. The rebuild, step by step from the verified snapshot; then the stored bytes
    snapshot_path = verify_snapshot(recorded, report)
    if snapshot_path is not None:
        data = rebuild_training_set(recorded, snapshot_path, report)
        try:
            tuning = rebuild_params(recorded, data, spec.mode == "full", report)
            refit_and_compare(recorded, data, tuning, workdir, report)
        finally:
            release_training_set(data)
    verify_stored_artifact(recorded, report)
    return finish("no verified data to rebuild from")

"""Reproduction tasks: each step of a rebuild (``mlsteward.training.rebuild``) as a task run,
with the registry reads and writes around it.

Nothing here writes to the registry except three tags on the reproduced version
(``reproduced_at``, ``reproduce_result``, ``reproduce_mode``); the rebuilt model and the report
are kept under ``MLSTEWARD_HOME/reproductions`` so a divergence can be inspected afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action, audit_store
from mlsteward.audit.records import default_actor
from mlsteward.governance import champion, registry
from mlsteward.governance import promotion as governance
from mlsteward.governance.mlflow_adapter import run_metrics
from mlsteward.governance.registry import VersionInfo
from mlsteward.training import rebuild
from mlsteward.training.fitting import TuningResult
from mlsteward.training.prepared import PreparedData
from mlsteward.training.recorded import RecordedVersion, load_recorded
from mlsteward.training.reproduce import ReproductionReport, ReproductionSpec
from tasks.common import artifact_key, run_logger

Recorded = RecordedVersion[VersionInfo]


@task(name="load-recorded-version", cache_policy=NO_CACHE)
def load_recorded_version(spec: ReproductionSpec) -> Recorded:
    """The version (default: the champion), its recipe (checked against the SHA-256 recorded
    at registration) and the metrics its training run logged.

    Raises:
        NotFoundError: no such version (or no champion when no version is named).
        MlstewardError: the version was registered without a recipe.
    """
    if spec.version:
        info = registry.get_version(spec.model, spec.version)
    else:  # the champion the governance record names, provided the registry agrees
        with governance.open_audit() as audit:
            info = champion.resolve(spec.model, audit, actor=default_actor(), purpose="reproduce")
    return load_recorded(info, registry.download_run_file, run_metrics)


@task(name="compare-environment", cache_policy=NO_CACHE)
def compare_environment(recorded: Recorded, report: ReproductionReport) -> None:
    rebuild.compare_environment(recorded, report)


@task(name="verify-snapshot", cache_policy=NO_CACHE)
def verify_snapshot(recorded: Recorded, report: ReproductionReport) -> Path | None:
    return rebuild.verify_snapshot(recorded, report)


@task(name="rebuild-training-set", cache_policy=NO_CACHE)
def rebuild_training_set(
    recorded: Recorded, snapshot_path: Path, report: ReproductionReport
) -> PreparedData:
    data = rebuild.rebuild_training_set(recorded, snapshot_path, report)
    step = report.step("training_set")
    assert step is not None
    run_logger().info("training set rebuilt: %s (%s)", step.status, step.detail)
    return data


@task(name="rebuild-params", cache_policy=NO_CACHE)
def rebuild_params(
    recorded: Recorded, data: PreparedData, full: bool, report: ReproductionReport
) -> TuningResult:
    return rebuild.rebuild_params(recorded, data, full, report)


@task(name="refit-and-compare", cache_policy=NO_CACHE)
def refit_and_compare(
    recorded: Recorded,
    data: PreparedData,
    tuning: TuningResult,
    workdir: Path,
    report: ReproductionReport,
) -> Path:
    return rebuild.refit_and_compare(recorded, data, tuning, workdir, report)


@task(name="verify-stored-artifact", cache_policy=NO_CACHE)
def verify_stored_artifact(recorded: Recorded, report: ReproductionReport) -> None:
    def check(directory: Path) -> str:
        return registry.check_artifact(recorded.info, directory)[1]

    rebuild.verify_stored_artifact(recorded, report, check)


# No retries: an audit append that committed before a later failure would be written twice.
@task(name="record-reproduction", cache_policy=NO_CACHE)
def record_reproduction(report: ReproductionReport, workdir: Path, actor: str) -> None:
    """Report file, audit record, and (for a reproduction that ran) the version's tags."""
    report.write(workdir)
    refused = report.result == "refused"
    with audit_store() as audit:
        audit.append(
            Action.REPRODUCTION_REFUSED if refused else Action.REPRODUCED,
            model=report.model,
            version=report.version,
            actor=actor,
            reason=(
                "--strict: the environment differs from the one that trained"
                if refused
                else report.summary
            ),
            details=report.audit_details(),
        )
    if not refused:
        registry.set_tags(
            report.model,
            report.version,
            {
                "reproduced_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "reproduce_result": report.summary,
                "reproduce_mode": report.mode,
            },
        )
    create_markdown_artifact(
        key=artifact_key(report.model, "reproduction"),
        markdown=report.to_markdown(),
        description=f"Reproduction of {report.model} v{report.version}: {report.summary}",
    )

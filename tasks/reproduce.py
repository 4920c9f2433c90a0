"""Reproduction tasks: rebuild a registered version from its recipe and compare every step.

Nothing here writes to the registry except two tags on the reproduced version
(``reproduced_at``, ``reproduce_result``); the rebuilt model and the report are kept under
``MLSTEWARD_HOME/reproductions`` so a divergence can be inspected afterwards. Data is read
only from the recorded, digest-verified snapshot, through a private Feast registry, so the
live feature store and today's source files play no part.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.audit import Action
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.paths import project_root
from mlsteward.config.settings import reproductions_dir
from mlsteward.data.snapshots import SnapshotAlteredError, SnapshotMissingError, locate_snapshot
from mlsteward.data.state import SnapshotInfo
from mlsteward.errors import IntegrityError, MlstewardError, NotFoundError
from mlsteward.features.repo import snapshot_entity_dtype, snapshot_store
from mlsteward.features.retrieval import get_training_frame
from mlsteward.governance import registry
from mlsteward.governance.mlflow_adapter import client
from mlsteward.governance.promotion import open_audit
from mlsteward.governance.registry import CHAMPION, VersionInfo
from mlsteward.integrity import sha256_file
from mlsteward.training.build import fit_evaluate, tune_prepared
from mlsteward.training.fitting import TuningResult
from mlsteward.training.partitioned_set import partition_root, release_directory, staging_directory
from mlsteward.training.prepared import FittedModel, PreparedData, prepare, prepare_partitioned
from mlsteward.training.recipe import (
    RECIPE_ARTIFACT,
    RECIPE_SHA_TAG,
    config_differences,
    feature_service_definition,
    recipe_sha256,
    recorded_config,
    recorded_snapshot,
)
from mlsteward.training.reproduce import (
    ReproductionReport,
    Step,
    environment_differences,
    metric_deltas,
)
from mlsteward.training.spec import TrainingSpec
from tasks.common import artifact_key, run_logger
from tasks.features import entity_frame

RECORDED_METRIC_PREFIXES = ("test_", "val_")


@dataclass
class RecordedVersion:
    """A registered version with the recipe and metrics it was registered with."""

    info: VersionInfo
    recipe: dict[str, Any] | None
    recipe_problem: str | None
    metrics: dict[str, float]
    training_seconds: float | None

    @cached_property
    def config(self) -> ModelConfig:
        """Validated once: every rebuild step reads the recorded config."""
        assert self.recipe is not None
        return recorded_config(self.recipe)

    @cached_property
    def spec(self) -> TrainingSpec:
        """The recorded search's settings (trials, seed, batch size, Dask plan), resolved once;
        no runner package is needed to rebuild."""
        assert self.recipe is not None
        tuning = self.recipe["tuning"]
        return TrainingSpec.resolve(
            self.config,
            max_evals=tuning["max_evals"],
            seed=tuning["seed"],
            require_runner=False,
        )

    @cached_property
    def snapshot(self) -> SnapshotInfo:
        assert self.recipe is not None
        return recorded_snapshot(self.recipe)


def _version(model: str, version: str | None) -> VersionInfo:
    if version:
        return registry.get_version(model, version)
    champion = registry.version_by_alias(model, CHAMPION)
    if champion is None:
        raise NotFoundError(f"{model} has no champion; name the version to reproduce")
    return champion


@task(name="load-recorded-version", cache_policy=NO_CACHE)
def load_recorded_version(model: str, version: str | None) -> RecordedVersion:
    """The version, its recipe (checked against the SHA-256 recorded at registration) and the
    metrics its training run logged.

    Raises:
        NotFoundError: no such version (or no champion when no version is named).
        MlstewardError: the version was registered without a recipe.
    """
    info = _version(model, version)
    expected = info.tags.get(RECIPE_SHA_TAG)
    if not expected:
        raise MlstewardError(
            f"{model} v{info.version} was registered without a training recipe "
            f"({RECIPE_SHA_TAG} tag), so it cannot be rebuilt; versions trained from now on can"
        )
    with tempfile.TemporaryDirectory(prefix="mlsteward-recipe-") as d:
        try:
            path = registry.download_run_file(info.run_id, RECIPE_ARTIFACT, Path(d))
            recipe = json.loads(path.read_text())
        except Exception as exc:  # MLflow raises its own types; any failure is reported
            recipe, problem = None, f"recipe {RECIPE_ARTIFACT} of run {info.run_id}: {exc}"
        else:
            actual = recipe_sha256(recipe)
            problem = (
                None
                if actual == expected
                else f"recipe {RECIPE_ARTIFACT} hashes to {actual}, not the registered {expected}: "
                "it was changed after registration"
            )
    run = client().get_run(info.run_id)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(RECORDED_METRIC_PREFIXES)}
    end = run.info.end_time
    seconds = (end - run.info.start_time) / 1000 if end and run.info.start_time else None
    return RecordedVersion(info, recipe, problem, metrics, seconds)


@task(name="compare-environment", cache_policy=NO_CACHE)
def compare_environment(recorded: RecordedVersion, report: ReproductionReport) -> None:
    """Differences in code, lock file and libraries, plus today's config changes (for
    information: reproduction uses the recorded config, never today's)."""
    report.environment = environment_differences(recorded.info.tags, project_root())
    if recorded.recipe is None:
        return
    try:
        current = get_model_config(recorded.info.name).model_dump(mode="json")
    except MlstewardError as exc:
        report.config_changes = [{"key": "*", "recorded": "config", "current": str(exc)}]
        return
    report.config_changes = config_differences(recorded.recipe["config"], current)


def _timed(report: ReproductionReport, step: Step, started: float) -> Step:
    step.seconds = round(time.perf_counter() - started, 3)
    return report.add(step)


@task(name="verify-snapshot", cache_policy=NO_CACHE)
def verify_snapshot(recorded: RecordedVersion, report: ReproductionReport) -> Path | None:
    """The recorded data version, or None (with the reason in the report) if it is gone or
    altered: data is never re-read from a source that may have changed."""
    t0 = time.perf_counter()
    snap = recorded.snapshot
    try:
        path = locate_snapshot(snap.model, snap.digest, snap.path)
    except (SnapshotMissingError, SnapshotAlteredError) as exc:
        actual = getattr(exc, "actual", "missing")
        _timed(report, Step("data_digest", "differs", str(exc), snap.digest, actual), t0)
        return None
    detail = f"snapshot {path} hashes to its data version ({snap.rows} rows)"
    _timed(report, Step("data_digest", "same", detail, snap.digest, snap.digest), t0)
    return path


@task(name="rebuild-training-set", cache_policy=NO_CACHE)
def rebuild_training_set(
    recorded: RecordedVersion, snapshot_path: Path, report: ReproductionReport
) -> PreparedData:
    """The point-in-time join again, through Feast, over the recorded snapshot."""
    assert recorded.recipe is not None
    cfg = recorded.config
    snap = recorded.snapshot.model_copy(update={"path": str(snapshot_path)})
    t0 = time.perf_counter()
    definition = feature_service_definition(
        cfg, snap.feature_dtypes, snapshot_entity_dtype(cfg, snapshot_path)
    )
    want = recorded.recipe["feature_service"]
    status = "same" if definition == want else "differs"
    _timed(report, Step("feature_service", status, cfg.feature_service_name, want, definition), t0)

    t0 = time.perf_counter()
    entities = entity_frame(cfg, snap)
    with tempfile.TemporaryDirectory(prefix="mlsteward-feast-") as d:
        store = snapshot_store(cfg, snapshot_path, snap.feature_dtypes, Path(d))

        def retrieve(rows: pd.DataFrame) -> pd.DataFrame:
            return get_training_frame(cfg, rows, store=store)

        # The recorded config decides, as it did at training: above distributed.above_rows the
        # set is joined in the same chunks and trained on Dask again.
        if cfg.distributed.applies(len(entities)):
            staging = staging_directory(partition_root(cfg))
            try:
                data = prepare_partitioned(cfg, entities, retrieve, snap, staging)
            except BaseException:
                release_directory(staging)
                raise
            how = f"in chunks of {cfg.distributed.chunk_rows}, partitioned for xgboost.dask"
        else:
            data = prepare(cfg, retrieve(entities), snap)
            how = "in one join"
    want_ts = recorded.recipe["training_set"]
    status = "same" if data.training_set_digest == want_ts["digest"] else "differs"
    detail = f"{len(entities)} rows x {len(cfg.feature_names)} features via Feast {how} "
    detail += f"(recorded {want_ts['rows']} rows)"
    _timed(
        report,
        Step("training_set", status, detail, want_ts["digest"], data.training_set_digest),
        t0,
    )
    sizes = data.split.sizes()
    status = "same" if sizes == want_ts["split_sizes"] else "differs"
    report.add(Step("split", status, "time split", want_ts["split_sizes"], sizes))
    run_logger().info("training set rebuilt: %s (%s)", report.step("training_set").status, detail)
    return data


@task(name="rebuild-params", cache_policy=NO_CACHE)
def rebuild_params(
    recorded: RecordedVersion, data: PreparedData, full: bool, report: ReproductionReport
) -> TuningResult:
    """The recorded best params (default), or the whole search again with the recorded seed."""
    assert recorded.recipe is not None
    rec = recorded.recipe["tuning"]
    want = {
        "best_params": rec["best_params"],
        "best_iteration": rec["best_iteration"],
        "seed": rec["seed"],
    }
    t0 = time.perf_counter()
    if not full:
        result = TuningResult(
            best_params=rec["best_params"],
            best_iteration=rec["best_iteration"],
            best_loss=rec["best_loss"],
            trials=[],
            seed=rec["seed"],
        )
        detail = "recorded best params and seed (use --full to re-run the search)"
        _timed(report, Step("params", "same", detail, want, want), t0)
        return result
    # The recorded config carries the search's batch size (``tuning.parallel``; versions from
    # before batching record none and get 1, which is what they ran). ``tune`` runs the batches
    # on local threads whatever runner trained: the runner never changes which trials TPE
    # suggests, only where they were evaluated.
    cfg = recorded.config
    result = tune_prepared(recorded.spec, data)
    found = {
        "best_params": result.best_params,
        "best_iteration": result.best_iteration,
        "seed": result.seed,
    }
    status = "same" if found == want and result.best_loss == rec["best_loss"] else "differs"
    detail = (
        f"Hyperopt TPE re-run: {rec['max_evals']} trials in batches of {result.batch_size} "
        f"(recorded runner {cfg.tuning.parallel.runner}, re-run on {result.runner}), rstate "
        f"seed {rec['seed']}; best loss "
        f"{result.best_loss!r} (recorded {rec['best_loss']!r})"
    )
    _timed(report, Step("params", status, detail, want, found), t0)
    return result


@task(name="refit-and-compare", cache_policy=NO_CACHE)
def refit_and_compare(
    recorded: RecordedVersion,
    data: PreparedData,
    tuning: TuningResult,
    workdir: Path,
    report: ReproductionReport,
) -> Path:
    """Refit, score, save exactly as registration does, and compare metrics and bytes."""
    t0 = time.perf_counter()
    fitted: FittedModel = fit_evaluate(recorded.spec, data, tuning)
    rebuilt = {f"test_{k}": v for k, v in fitted.test_metrics.items()}
    rebuilt |= {f"val_{k}": v for k, v in fitted.validation_metrics.items()}
    report.metric_deltas = metric_deltas(recorded.metrics, rebuilt)
    status = "differs" if report.metric_deltas else "same"
    detail = f"{len(recorded.metrics)} metrics compared exactly; {len(report.metric_deltas)} differ"
    shown = {k: recorded.metrics[k] for k in ("test_roc_auc", "test_log_loss")}
    rebuilt_shown = {k: rebuilt.get(k) for k in shown}
    _timed(report, Step("metrics", status, detail, shown, rebuilt_shown), t0)

    t0 = time.perf_counter()
    path = workdir / "model.ubj"
    # The same call MLflow's xgboost flavour makes when it logs a model (model_format="ubj").
    fitted.model.save_model(str(path))
    digest = sha256_file(path)
    report.rebuilt_artifact_sha256 = digest
    report.registered_artifact_sha256 = recorded.info.artifact_sha256
    status = "same" if digest == recorded.info.artifact_sha256 else "differs"
    _timed(
        report,
        Step("artifact", status, f"rebuilt {path}", recorded.info.artifact_sha256, digest),
        t0,
    )
    return path


@task(name="verify-stored-artifact", cache_policy=NO_CACHE)
def verify_stored_artifact(recorded: RecordedVersion, report: ReproductionReport) -> None:
    """The registered bytes still hash to their tag (a rebuild proves nothing about a stored
    file that was swapped later)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlsteward-model-") as d:
        try:
            _, digest = registry.check_artifact(recorded.info, Path(d))
        except IntegrityError as exc:
            step = Step("stored_artifact", "differs", str(exc), recorded.info.artifact_sha256)
        else:
            step = Step("stored_artifact", "same", "stored model.ubj verified", digest, digest)
    _timed(report, step, t0)


def workdir_for(model: str, version: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = reproductions_dir(model) / f"v{version}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@task(name="record-reproduction", cache_policy=NO_CACHE)
def record_reproduction(report: ReproductionReport, workdir: Path, actor: str) -> None:
    """Report file, audit record, and (for a reproduction that ran) the version's tags."""
    path = workdir / "report.json"
    report.report_path = str(path)
    path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
    details = {
        "result": report.result,
        "mode": report.mode,
        "first_divergence": report.first_divergence,
        "steps": {s.name: s.status for s in report.steps},
        "environment": [str(e) for e in report.environment],
        "config_changes": [c["key"] for c in report.config_changes],
        "metric_deltas": report.metric_deltas,
        "rebuilt_artifact_sha256": report.rebuilt_artifact_sha256,
        "report": str(path),
        "seconds": report.seconds,
    }
    refused = report.result == "refused"
    with open_audit() as audit:
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
            details=details,
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
        markdown=report_markdown(report),
        description=f"Reproduction of {report.model} v{report.version}: {report.summary}",
    )


def report_markdown(report: ReproductionReport) -> str:
    rows = "\n".join(
        f"| {s.name} | {s.status} | {s.detail} | {s.seconds:.1f} s |" for s in report.steps
    )
    env = "\n".join(f"- {e}" for e in report.environment) or "- none"
    cfg = "\n".join(f"- `{c['key']}`" for c in report.config_changes) or "- none"
    return (
        f"# Reproduction of {report.model} v{report.version}: **{report.summary}**\n\n"
        f"Mode: {report.mode}; {report.seconds:.1f} s (original training "
        f"{report.original_training_seconds or 0:.1f} s)\n\n"
        f"| step | result | detail | time |\n|---|---|---|---|\n{rows}\n\n"
        f"## Environment differences\n{env}\n\n"
        f"## Config changed since training (information; the recorded config was used)\n{cfg}\n"
    )

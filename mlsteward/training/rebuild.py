"""Rebuilding a registered version step by step, each step compared with what was recorded.

Each function takes one step of the recipe in training order (environment, data digest,
feature service and training set, params, metrics and artifact, the stored artifact) and adds
what it found to the :class:`ReproductionReport`. Data is read only from the recorded,
digest-verified snapshot, through a private Feast registry, so the live feature store and
today's source files play no part; nothing here writes to the registry.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlsteward.config.models import get_model_config
from mlsteward.config.paths import project_root
from mlsteward.config.settings import reproductions_dir
from mlsteward.data.snapshots import SnapshotAlteredError, SnapshotMissingError, locate_snapshot
from mlsteward.data.state import SnapshotInfo
from mlsteward.errors import IntegrityError, MlstewardError
from mlsteward.features.repo import snapshot_entity_dtype, snapshot_store
from mlsteward.features.retrieval import entity_frame, get_training_frame
from mlsteward.integrity import sha256_file
from mlsteward.training.build import fit_evaluate, tune_prepared
from mlsteward.training.fitting import TuningResult
from mlsteward.training.partitioned_set import partition_root, release_directory, staging_directory
from mlsteward.training.prepared import FittedModel, PreparedData, prepare, prepare_partitioned
from mlsteward.training.recipe import config_differences, feature_service_definition
from mlsteward.training.recorded import RecordedVersion
from mlsteward.training.reproduce import (
    ReproductionReport,
    Status,
    Step,
    environment_differences,
    metric_deltas,
)

Recorded = RecordedVersion[Any]


def workdir_for(model: str, version: str) -> Path:
    """A new directory for one reproduction's rebuilt model and report."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = reproductions_dir(model) / f"v{version}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _verdict(same: bool) -> Status:
    return "same" if same else "differs"


def _timed(report: ReproductionReport, step: Step, started: float) -> Step:
    step.seconds = round(time.perf_counter() - started, 3)
    return report.add(step)


def compare_environment(recorded: Recorded, report: ReproductionReport) -> None:
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


def verify_snapshot(recorded: Recorded, report: ReproductionReport) -> Path | None:
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


def rebuild_training_set(
    recorded: Recorded, snapshot_path: Path, report: ReproductionReport
) -> PreparedData:
    """The point-in-time join again, through Feast, over the recorded snapshot: the feature
    service, the training set and its split, each compared with the recipe."""
    assert recorded.recipe is not None
    cfg = recorded.config
    snap = recorded.snapshot.model_copy(update={"path": str(snapshot_path)})
    t0 = time.perf_counter()
    definition = feature_service_definition(
        cfg, snap.feature_dtypes, snapshot_entity_dtype(cfg, snapshot_path)
    )
    want = recorded.recipe["feature_service"]
    status = _verdict(definition == want)
    _timed(report, Step("feature_service", status, cfg.feature_service_name, want, definition), t0)

    t0 = time.perf_counter()
    entities = entity_frame(cfg, snap)
    data, how = _join(recorded, snap, snapshot_path, entities)
    want_ts = recorded.recipe["training_set"]
    status = _verdict(data.training_set_digest == want_ts["digest"])
    detail = f"{len(entities)} rows x {len(cfg.feature_names)} features via Feast {how} "
    detail += f"(recorded {want_ts['rows']} rows)"
    _timed(
        report,
        Step("training_set", status, detail, want_ts["digest"], data.training_set_digest),
        t0,
    )
    sizes = data.split.sizes()
    status = _verdict(sizes == want_ts["split_sizes"])
    report.add(Step("split", status, "time split", want_ts["split_sizes"], sizes))
    return data


def _join(
    recorded: Recorded, snap: SnapshotInfo, snapshot_path: Path, entities: pd.DataFrame
) -> tuple[PreparedData, str]:
    """The prepared set, joined through a private Feast registry over the snapshot; with how
    it was joined, for the report."""
    cfg = recorded.config
    with tempfile.TemporaryDirectory(prefix="mlsteward-feast-") as d:
        store = snapshot_store(cfg, snapshot_path, snap.feature_dtypes, Path(d))

        def retrieve(rows: pd.DataFrame) -> pd.DataFrame:
            return get_training_frame(cfg, rows, store=store)

        # The recorded config decides, as it did at training: above distributed.above_rows the
        # set is joined in the same chunks and trained on Dask again.
        if not cfg.distributed.applies(len(entities)):
            return prepare(cfg, retrieve(entities), snap), "in one join"
        staging = staging_directory(partition_root(cfg))
        try:
            data = prepare_partitioned(cfg, entities, retrieve, snap, staging)
        except BaseException:
            release_directory(staging)
            raise
        return data, f"in chunks of {cfg.distributed.chunk_rows}, partitioned for xgboost.dask"


def rebuild_params(
    recorded: Recorded, data: PreparedData, full: bool, report: ReproductionReport
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
    status = _verdict(found == want and result.best_loss == rec["best_loss"])
    detail = (
        f"Hyperopt TPE re-run: {rec['max_evals']} trials in batches of {result.batch_size} "
        f"(recorded runner {cfg.tuning.parallel.runner}, re-run on {result.runner}), rstate "
        f"seed {rec['seed']}; best loss "
        f"{result.best_loss!r} (recorded {rec['best_loss']!r})"
    )
    _timed(report, Step("params", status, detail, want, found), t0)
    return result


def refit_and_compare(
    recorded: Recorded,
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
    status = _verdict(not report.metric_deltas)
    detail = f"{len(recorded.metrics)} metrics compared exactly; {len(report.metric_deltas)} differ"
    regression = recorded.spec.cfg.is_regression
    keys = ("test_rmse", "test_mae") if regression else ("test_roc_auc", "test_log_loss")
    shown = {k: recorded.metrics[k] for k in keys if k in recorded.metrics}
    rebuilt_shown = {k: rebuilt.get(k) for k in shown}
    _timed(report, Step("metrics", status, detail, shown, rebuilt_shown), t0)

    t0 = time.perf_counter()
    path = workdir / "model.ubj"
    # The same call MLflow's xgboost flavour makes when it logs a model (model_format="ubj").
    fitted.model.save_model(str(path))
    digest = sha256_file(path)
    report.rebuilt_artifact_sha256 = digest
    report.registered_artifact_sha256 = recorded.info.artifact_sha256
    status = _verdict(digest == recorded.info.artifact_sha256)
    _timed(
        report,
        Step("artifact", status, f"rebuilt {path}", recorded.info.artifact_sha256, digest),
        t0,
    )
    return path


def verify_stored_artifact(
    recorded: Recorded, report: ReproductionReport, check: Callable[[Path], str]
) -> None:
    """The registered bytes still hash to their tag and carry the governance key's signature (a
    rebuild proves nothing about a stored file that was swapped later). ``check`` downloads them
    into a directory and returns their verified SHA-256, raising ``IntegrityError`` (a
    ``SignatureError`` for the signature; ``registry.check_artifact``)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlsteward-model-") as d:
        try:
            digest = check(Path(d))
        except IntegrityError as exc:
            step = Step("stored_artifact", "differs", str(exc), recorded.info.artifact_sha256)
        else:
            step = Step(
                "stored_artifact",
                "same",
                "stored model.ubj and its signature verified",
                digest,
                digest,
            )
    _timed(report, step, t0)

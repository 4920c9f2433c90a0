"""The one module that talks to MLflow: tracking, model logging, registry, lineage tags.

MLflow's APIs move between minor versions (``artifact_path`` → ``name``, stages → aliases,
logged models under ``models:/m-…``); absorbing that here keeps flows and tasks stable. Runs are
addressed by id through ``MlflowClient`` rather than the thread-local "active run", because
Prefect may execute tasks on worker threads.

Every call reaches the server through ``mlflow_outage``: an answer cut off by a server that went
away is asked again where that is safe, and an outage is one error naming the server. A run or a
version whose creation was cut off is looked for before it is made again, so a restart of the
server leaves no duplicate.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlflow
import mlflow.xgboost
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mlsteward.config.settings import mlflow_artifact_root, mlflow_tracking_uri
from mlsteward.governance import signatures
from mlsteward.governance.mlflow_outage import ResilientClient, TrackingServerUnavailable, call
from mlsteward.integrity import sha256_file

MODEL_FILE = "model.ubj"
ARTIFACT_NAME = "model"
PARENT_TAG = "mlflow.parentRunId"
CREATION_TAG = "mlsteward.creation_id"
"""A run's own id before MLflow gives it one: how a creation cut off by an outage is found."""


def client() -> MlflowClient:
    """Point MLflow at our store (call-time, not import-time) and return a client."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Per-download progress bars flood flow logs and CLI output (every integrity check downloads)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # The same client's interface: every call made through mlflow_outage.call
    return cast(MlflowClient, ResilientClient(MlflowClient(tracking_uri=uri, registry_uri=uri)))


def _create_run(c: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """A new run's id; when the answer to its creation was cut off, the run it may have made
    is found by its creation id instead of a second one being made."""
    creation = uuid.uuid4().hex
    tags = {**tags, CREATION_TAG: creation}
    try:
        return c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    except TrackingServerUnavailable as exc:
        if not exc.cut_off:
            raise
    found = c.search_runs([experiment_id], filter_string=f"tags.`{CREATION_TAG}` = '{creation}'")
    if found:
        return str(found[0].info.run_id)
    return c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def ensure_experiment(name: str) -> str:
    """Experiments get an explicit artifact location under MLSTEWARD_HOME.

    Without one, a SQLite-backed MLflow writes artifacts to ``./mlruns`` relative to whatever
    the current directory happens to be.
    """
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = mlflow_artifact_root().rstrip("/")
    try:
        return c.create_experiment(name, artifact_location=f"{root}/{name}")
    except mlflow.exceptions.MlflowException:
        exp = c.get_experiment_by_name(name)  # created concurrently by another run
        if exp is None:
            raise
        return exp.experiment_id


def _str(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def start_run(experiment: str, run_name: str, tags: dict[str, Any]) -> str:
    exp_id = ensure_experiment(experiment)
    return _create_run(client(), exp_id, run_name, {k: _str(v) for k, v in tags.items()})


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


def experiment_of(run_id: str) -> str:
    return client().get_run(run_id).info.experiment_id


def run_metrics(run_id: str) -> tuple[dict[str, float], float | None]:
    """A run's logged metrics, and its wall time in seconds (None while it runs)."""
    run = client().get_run(run_id)
    end, start = run.info.end_time, run.info.start_time
    return dict(run.data.metrics), (end - start) / 1000 if end and start else None


def log_nested_run(
    parent_run_id: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, Any] | None = None,
    experiment_id: str | None = None,
) -> str:
    """One trial = one child run, written in one batch; pass ``experiment_id`` when logging
    many, to save a round trip per run."""
    c = client()
    exp_id = experiment_id or experiment_of(parent_run_id)
    all_tags = {PARENT_TAG: parent_run_id, **{k: _str(v) for k, v in (tags or {}).items()}}
    run_id = _create_run(c, exp_id, run_name, all_tags)
    c.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
        params=[Param(k, _str(v)) for k, v in params.items()],
    )
    c.set_terminated(run_id)
    return run_id


def log_params_metrics(run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
    client().log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
        params=[Param(k, _str(v)) for k, v in params.items()],
    )


def set_run_tags(run_id: str, tags: dict[str, Any]) -> None:
    client().log_batch(run_id, tags=[RunTag(k, _str(v)) for k, v in tags.items()])


def log_dict_artifact(run_id: str, data: Any, artifact_file: str) -> None:
    client().log_dict(run_id, data, artifact_file)


def log_frame_artifact(run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(artifact_file).name
        frame.to_parquet(path, index=False)
        parent = str(Path(artifact_file).parent)
        client().log_artifact(run_id, str(path), None if parent == "." else parent)


def log_training_input(
    run_id: str,
    frame: pd.DataFrame,
    source: str,
    name: str,
    label: str,
    digest: str,
    rows: int | None = None,
) -> None:
    """Record the training set as a run input, so the MLflow UI shows what data made the model.

    The schema is inferred from a small sample and the profile counted directly: MLflow's own
    path infers over every row, close to a second at 100k rows, for the same entry. The digest
    is the snapshot's data version, which already identifies the rows. ``rows`` counts a set
    that ``frame`` only samples (a partitioned training set).
    """
    c = client()
    rows = len(frame) if rows is None else rows
    sample = from_pandas(
        frame.head(100), source=source, targets=label, name=name, digest=digest[:20]
    ).to_dict()
    entity = Dataset(
        name=name,
        digest=digest[:20],
        source_type=sample["source_type"],
        source=sample["source"],
        schema=sample.get("schema"),
        profile=json.dumps({"num_rows": rows, "num_elements": rows * len(frame.columns)}),
    )
    c.log_inputs(
        run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])]
    )


@dataclass
class RegisteredVersion:
    name: str
    version: str
    model_uri: str
    artifact_uri: str
    artifact_sha256: str
    run_id: str
    signing_key_id: str = ""


def model_file(artifact_dir: Path) -> Path:
    return artifact_dir / MODEL_FILE


def log_and_register(
    run_id: str,
    model: Any,
    input_example: pd.DataFrame,
    registered_name: str,
    pip_requirements: list[str],
    version_tags: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> RegisteredVersion:
    """Log the model in XGBoost's own format (never pickle), sign it, register it, tag its
    lineage.

    The SHA-256 and the signature are computed on the stored artifact (re-downloaded), not on a
    local temp copy, so they describe exactly what a later load will read. The signature goes
    to the run (``signature/model.sig``) before the version exists: no version is ever
    registered unsigned.
    """
    c = client()
    signature = infer_signature(input_example, model.predict(input_example))

    def log_model() -> Any:
        # a second attempt logs a second model: the version is made from the one that finished
        with mlflow.start_run(run_id=run_id):
            return mlflow.xgboost.log_model(
                model,
                name=ARTIFACT_NAME,
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements,
                model_format="ubj",
                metadata=metadata,
            )

    info = call("logging the model", log_model)
    with tempfile.TemporaryDirectory(prefix="mlsteward-register-") as d:
        model_dir = Path(d) / ARTIFACT_NAME
        model_dir.mkdir()
        local = Path(
            call(
                "downloading the logged model",
                lambda: mlflow.artifacts.download_artifacts(
                    artifact_uri=info.model_uri, dst_path=str(model_dir)
                ),
            )
        )
        digest = sha256_file(model_file(local))
        signature_file = Path(d) / signatures.SIGNATURE_FILE
        key_id = signatures.sign_model_dir(local, signature_file)
        c.log_artifact(run_id, str(signature_file), signatures.SIGNATURE_DIR)
    tags = {
        **{k: _str(v) for k, v in version_tags.items()},
        "model_artifact_sha256": digest,
        "model_artifact_file": MODEL_FILE,
        signatures.SIGNATURE_TAG: signatures.SIGNATURE_ARTIFACT,
        signatures.KEY_ID_TAG: key_id,
    }
    try:
        c.create_registered_model(registered_name)
    except mlflow.exceptions.MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise

    def create_version() -> Any:
        return c.create_model_version(
            registered_name,
            source=info.model_uri,
            run_id=run_id,
            # An MLflow server checks a models:/m-… source against the logged model it names.
            model_id=info.model_id,
            tags=tags,
            description=str(version_tags.get("description", "")),
        )

    try:
        mv = create_version()
    except TrackingServerUnavailable as exc:
        if not exc.cut_off:
            raise
        # the version may exist: one per logged model, so found by its source
        made = c.search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
        mv = next((v for v in made if v.source == info.model_uri), None) or create_version()
    return RegisteredVersion(
        name=registered_name,
        version=str(mv.version),
        model_uri=f"models:/{registered_name}/{mv.version}",
        artifact_uri=info.model_uri,
        artifact_sha256=digest,
        run_id=run_id,
        signing_key_id=key_id,
    )

"""OpenLineage run events: what an ingestion, training, scoring or drift run read and wrote.

A lineage server (Marquez, DataHub) links runs through the datasets they share, so each dataset
is named once, the same way by the run that writes it and every run that reads it, after
OpenLineage's naming conventions (https://openlineage.io/docs/spec/naming):

- a file: namespace ``file``, name its absolute path (the source, a snapshot
  ``<snapshots>/<model>/<sha256>.parquet``, a scored batch; the prediction log is its folder);
- a snapshot's PostgreSQL table: ``postgres://host:port``, ``<database>.public.<table>``;
- a registered model version: namespace the MLflow tracking location (without credentials),
  name ``models/<model>/versions/<version>``; the champion's holdout that drift compares with:
  ``runs/<mlflow run id>/artifacts/holdout/test_predictions.parquet`` in the same namespace;
- the feature store: namespace the Feast project, name the feature service (offline reads) or
  ``online_store_<feature view>`` (online reads), as Feast's own OpenLineage events name them.

A job is ``<flow>.<model>`` (``train-model.heart_disease``) in a configured namespace; the run
id is the Prefect flow run's. Our own digests travel in the ``mlsteward`` run and dataset
facets, whose schema is ``lineage_facets.json`` beside this module.

Everything here is plain: the Prefect hooks (``tasks.lineage``) hand over the run's id, its
parameters and its result as a dict, so tests build events without Prefect. The results of the
training, scoring and drift flows are read through small views of the keys used here, so this
room needs nothing of governance or monitoring.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    JobFacet,
    OutputDatasetFacet,
    RunFacet,
    dataset_type_dataset,
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
)
from pydantic import BaseModel, ConfigDict

from mlsteward.config.lineage import shown_url
from mlsteward.config.models import ModelConfig
from mlsteward.config.profiles import active
from mlsteward.config.settings import mlflow_tracking_uri, predictions_dir

FlowKind = Literal["ingestion", "training", "scoring", "drift"]
EventType = Literal["START", "COMPLETE", "FAIL", "ABORT"]
Role = Literal[
    "source",
    "snapshot",
    "offline_table",
    "model_version",
    "reference",
    "scoring_input",
    "feature_service",
    "online_store",
    "scored",
    "prediction_log",
    "current_window",
]

FACETS_SCHEMA = "urn:mlsteward:openlineage:facets:1-0-0"
"""``$id`` of ``lineage_facets.json``: our facets' ``_schemaURL`` points into it."""
FACET_KEY = "mlsteward"
HOLDOUT_ARTIFACT = "holdout/test_predictions.parquet"
"""Where training records a version's holdout in its MLflow run (drift's reference)."""
_REPORT_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/drift/v(?P<version>[^/]+)/")
_MESSAGE_LIMIT = 4_000
_TRACE_LIMIT = 20_000


@cache
def mlsteward_version() -> str:
    try:
        return metadata.version("mlsteward")
    except metadata.PackageNotFoundError:
        return "unknown"


def producer() -> str:
    """Who made an event and our facets: mlsteward at its version (a URN: the project has no
    public URL to point at)."""
    return f"urn:mlsteward:{mlsteward_version()}"


def facets_schema_path() -> Path:
    """The JSON schema of the ``mlsteward`` facets, for consumers and tests."""
    return Path(__file__).with_name("lineage_facets.json")


@attr.define
class MlstewardRunFacet(RunFacet):
    """The run's own digests and versions: what ties it to the audit trail and MLflow."""

    model: str
    flow: str
    # the spec's camelCase, as every OpenLineage facet names its fields
    dataVersion: str | None = attr.field(default=None)
    modelVersion: str | None = attr.field(default=None)
    mlflowRunId: str | None = attr.field(default=None)
    modelArtifactSha256: str | None = attr.field(default=None)
    decision: str | None = attr.field(default=None)
    _additional_skip_redact: ClassVar[list[str]] = ["model", "flow"]

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/MlstewardRunFacet"


@attr.define
class MlstewardDatasetFacet(DatasetFacet):
    """What a dataset is to mlsteward, with its digest or version where it has one."""

    role: str
    sha256: str | None = attr.field(default=None)
    dataVersion: str | None = attr.field(default=None)
    modelVersion: str | None = attr.field(default=None)
    mlflowRunId: str | None = attr.field(default=None)
    modelUri: str | None = attr.field(default=None)
    rows: int | None = attr.field(default=None)
    timeRange: list[str] | None = attr.field(default=None)
    batchId: str | None = attr.field(default=None)
    file: str | None = attr.field(default=None)
    windowDays: float | None = attr.field(default=None)
    window: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/MlstewardDatasetFacet"


# -- datasets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageDataset:
    """One dataset as a run sees it; an input or an output only once placed in an event."""

    namespace: str
    name: str
    facets: dict[str, DatasetFacet] = field(default_factory=dict)
    rows: int | None = None

    def as_input(self) -> InputDataset:
        stats: dict[str, InputDatasetFacet] = {}
        if self.rows is not None:
            stats["inputStatistics"] = (
                input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=self.rows, producer=producer()
                )
            )
        return InputDataset(
            namespace=self.namespace,
            name=self.name,
            facets=dict(self.facets),
            inputFacets=stats or None,
        )

    def as_output(self) -> OutputDataset:
        stats: dict[str, OutputDatasetFacet] = {}
        if self.rows is not None:
            stats["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=self.rows, producer=producer()
                )
            )
        return OutputDataset(
            namespace=self.namespace,
            name=self.name,
            facets=dict(self.facets),
            outputFacets=stats or None,
        )


def _field(name: str, kind: str | None, description: str = "") -> Any:
    return schema_dataset.SchemaDatasetFacetFields(
        name=name, type=kind, description=description or None, fields=None
    )


def contract_fields(
    cfg: ModelConfig, dtypes: Mapping[str, str] | None = None, *, label: bool = True
) -> list[Any]:
    """The columns the data contract checks, typed as configured or as ingestion inferred them
    (``int``, ``float``, ``bool``, ``category``): the schema of a source file."""
    known = dict(dtypes or {})
    fields = [_field(cfg.source.entity, None, "entity id (the Feast join key)")]
    if cfg.source.timestamp:
        fields.append(_field(cfg.source.timestamp, "timestamp", "event time"))
    for column in cfg.data_columns:
        fields.append(
            _field(column.name, known.get(column.name) or column.dtype, column.description)
        )
    if label:
        fields.append(_field(cfg.label, "float" if cfg.is_regression else "int", "label"))
    return fields


def parquet_fields(path: Path) -> list[Any] | None:
    """A parquet file's columns with their Arrow types, read from its footer only; None when
    the file cannot be read (gone, or not parquet)."""
    # start-up time: pyarrow is only needed once a run has written or read parquet
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError):
        return None
    return [_field(f.name, str(f.type)) for f in schema]


def _schema(fields: list[Any] | None) -> dict[str, DatasetFacet]:
    if not fields:
        return {}
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields, producer=producer())}


def _ours(role: Role, **values: Any) -> dict[str, DatasetFacet]:
    present = {k: v for k, v in values.items() if v is not None}
    return {FACET_KEY: MlstewardDatasetFacet(role=role, producer=producer(), **present)}


def _version(value: str) -> dict[str, DatasetFacet]:
    return {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=value, producer=producer()
        )
    }


def file_dataset(
    path: str | Path,
    role: Role,
    *,
    fields: list[Any] | None = None,
    rows: int | None = None,
    version: str | None = None,
    **ours: Any,
) -> LineageDataset:
    """A local file or folder: namespace ``file``, name the absolute path."""
    resolved = Path(path).expanduser().resolve()
    facets: dict[str, DatasetFacet] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name="file", uri=resolved.as_uri(), producer=producer()
        ),
        **_schema(fields),
        **(_version(version) if version else {}),
        **_ours(role, **ours),
    }
    return LineageDataset("file", str(resolved), facets, rows)


def source_fields(path: Path, cfg: ModelConfig | None, *, label: bool = True) -> list[Any] | None:
    """A file in the model's source format: parquet's own columns, else the contract's."""
    if path.suffix.lower() in (".parquet", ".pq"):
        found = parquet_fields(path)
        if found:
            return found
    return contract_fields(cfg, label=label) if cfg is not None else None


def snapshot_dataset(
    path: str, digest: str, *, rows: int | None = None, **ours: Any
) -> LineageDataset:
    """A content-addressed snapshot: the file, its columns and its data version (SHA-256)."""
    return file_dataset(
        path,
        "snapshot",
        fields=parquet_fields(Path(path)),
        rows=rows,
        version=digest,
        sha256=digest,
        dataVersion=digest,
        **ours,
    )


def mlflow_namespace() -> str:
    """Where the registry lives, without user, password or query."""
    return shown_url(mlflow_tracking_uri())


def _mlflow_source() -> dict[str, DatasetFacet]:
    where = mlflow_namespace()
    return {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name="mlflow", uri=where, producer=producer()
        )
    }


def model_version_dataset(
    model: str,
    version: str,
    *,
    sha256: str | None = None,
    run_id: str | None = None,
    model_uri: str | None = None,
) -> LineageDataset:
    """A registered model version: one dataset per version, so the graph says which data
    trained which version and which version scored which batch."""
    facets: dict[str, DatasetFacet] = {
        **_mlflow_source(),
        **_version(version),
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
            datasetType="MODEL", subType="xgboost", producer=producer()
        ),
        **_ours(
            "model_version",
            sha256=sha256,
            modelVersion=version,
            mlflowRunId=run_id,
            modelUri=model_uri,
        ),
    }
    return LineageDataset(mlflow_namespace(), f"models/{model}/versions/{version}", facets)


def holdout_dataset(run_id: str, version: str, rows: int | None = None) -> LineageDataset:
    """A version's holdout with its recorded predictions, in its MLflow run: drift's
    reference."""
    facets: dict[str, DatasetFacet] = {
        **_mlflow_source(),
        **_ours("reference", modelVersion=version, mlflowRunId=run_id),
    }
    return LineageDataset(
        mlflow_namespace(), f"runs/{run_id}/artifacts/{HOLDOUT_ARTIFACT}", facets, rows
    )


def feast_dataset(
    cfg: ModelConfig, *, online: bool, rows: int | None = None, window: str | None = None
) -> LineageDataset:
    """The feature store as Feast's own events name it: the project, then the feature service
    (offline reads) or ``online_store_<feature view>``."""
    project = active().feast.project
    name = f"online_store_{cfg.feature_view_name}" if online else cfg.feature_service_name
    facets: dict[str, DatasetFacet] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name="feast", uri=f"feast://{project}", producer=producer()
        ),
        **_schema(contract_fields(cfg, label=False)[1:] if online else None),
        **_ours("online_store" if online else "feature_service", window=window),
    }
    return LineageDataset(project, name, facets, rows)


def offline_table_dataset(table: str, rows: int | None, digest: str) -> LineageDataset | None:
    """A snapshot loaded into the PostgreSQL offline store; None when the profile has none."""
    pg = active().postgres
    if pg is None:
        return None
    where = pg.connection()
    namespace = f"postgres://{where['host']}:{where['port']}"
    facets: dict[str, DatasetFacet] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name="postgres", uri=namespace, producer=producer()
        ),
        **_version(digest),
        **_ours("offline_table", dataVersion=digest),
    }
    return LineageDataset(namespace, f"{pg.database('offline')}.public.{table}", facets, rows)


# -- what each flow read and wrote -----------------------------------------------------------


class _View(BaseModel):
    """The keys of a flow's result this module reads; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")


class _Contract(_View):
    source: str
    total_rows: int = 0
    inferred_dtypes: dict[str, str] = {}


class _OfflineTable(_View):
    table: str
    rows: int | None = None


class IngestionView(_View):
    model: str
    data_version: str
    snapshot_path: str
    rows: int
    time_range: list[str]
    contract: _Contract
    offline_table: _OfflineTable | None = None


class _TrainingLineage(_View):
    data_digest: str
    data_path: str
    training_rows: int | None = None


class _Governance(_View):
    decision: str | None = None


class TrainingView(_View):
    model: str
    version: str
    model_uri: str
    run_id: str
    artifact_sha256: str
    lineage: _TrainingLineage
    governance: _Governance | None = None


class ScoringView(_View):
    model: str
    version: str
    batch_id: str
    rows: int
    scored_path: str
    prediction_log_path: str


class _DriftDecision(_View):
    retrain: bool


class DriftView(_View):
    rows: dict[str, int] = {}
    report_uri: str | None = None
    decision: _DriftDecision | None = None


@dataclass
class RunIO:
    """What a run read and wrote, and the run's own digests (the ``mlsteward`` run facet)."""

    inputs: list[LineageDataset] = field(default_factory=list)
    outputs: list[LineageDataset] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)


def _text(parameters: Mapping[str, Any], key: str) -> str | None:
    value = parameters.get(key)
    return str(value) if value not in (None, "") else None


def ingestion_io(
    cfg: ModelConfig | None, parameters: Mapping[str, Any], result: Mapping[str, Any] | None
) -> RunIO:
    """The source file in; the snapshot (and its PostgreSQL table) out, once accepted."""
    io = RunIO()
    view = IngestionView.model_validate(result) if result is not None else None
    if view is not None:
        source: str | None = view.contract.source
    else:
        source = _text(parameters, "source") or (
            str(cfg.source.resolved_path()) if cfg is not None else None
        )
    if source:
        path = Path(source).expanduser().resolve()
        fields = (
            contract_fields(cfg, view.contract.inferred_dtypes if view else None)
            if cfg is not None
            else None
        )
        rows = view.contract.total_rows if view else None
        io.inputs.append(file_dataset(path, "source", fields=fields, rows=rows))
    if view is None:
        return io
    io.outputs.append(
        snapshot_dataset(
            view.snapshot_path, view.data_version, rows=view.rows, timeRange=view.time_range
        )
    )
    if view.offline_table is not None:
        table = offline_table_dataset(
            view.offline_table.table, view.offline_table.rows, view.data_version
        )
        if table is not None:
            io.outputs.append(table)
    io.run["dataVersion"] = view.data_version
    return io


def training_io(result: Mapping[str, Any] | None) -> RunIO:
    """The snapshot in; the registered model version out (known once registered)."""
    io = RunIO()
    if result is None:
        return io
    view = TrainingView.model_validate(result)
    digest = view.lineage.data_digest
    io.inputs.append(
        snapshot_dataset(view.lineage.data_path, digest, rows=view.lineage.training_rows)
    )
    io.outputs.append(
        model_version_dataset(
            view.model,
            view.version,
            sha256=view.artifact_sha256,
            run_id=view.run_id,
            model_uri=view.model_uri,
        )
    )
    io.run.update(
        dataVersion=digest,
        modelVersion=view.version,
        mlflowRunId=view.run_id,
        modelArtifactSha256=view.artifact_sha256,
        decision=view.governance.decision if view.governance else None,
    )
    return io


def scoring_io(
    cfg: ModelConfig | None, parameters: Mapping[str, Any], result: Mapping[str, Any] | None
) -> RunIO:
    """The input (a file, an entity list with offline features, an offline window or the online
    store) and the champion in; the scored file and the prediction log out."""
    io = RunIO()
    view = ScoringView.model_validate(result) if result is not None else None
    rows = view.rows if view else None
    source, entities = _text(parameters, "source"), _text(parameters, "entities")
    start, end = _text(parameters, "start"), _text(parameters, "end")
    if source:
        path = Path(source).expanduser().resolve()
        io.inputs.append(
            file_dataset(path, "scoring_input", fields=source_fields(path, cfg), rows=rows)
        )
    elif entities:
        path = Path(entities).expanduser().resolve()
        io.inputs.append(file_dataset(path, "scoring_input", rows=rows))
        if cfg is not None:
            io.inputs.append(feast_dataset(cfg, online=False))
    elif cfg is not None and (start or end):
        io.inputs.append(feast_dataset(cfg, online=False, rows=rows, window=f"{start}/{end}"))
    elif cfg is not None:
        io.inputs.append(feast_dataset(cfg, online=True, rows=rows))
    if view is None:
        return io
    io.inputs.append(model_version_dataset(view.model, view.version))
    io.outputs.append(
        file_dataset(
            view.scored_path,
            "scored",
            fields=parquet_fields(Path(view.scored_path)),
            rows=view.rows,
            batchId=view.batch_id,
            modelVersion=view.version,
        )
    )
    io.outputs.append(
        file_dataset(
            predictions_dir(view.model),
            "prediction_log",
            rows=view.rows,
            batchId=view.batch_id,
            file=view.prediction_log_path,
            modelVersion=view.version,
        )
    )
    io.run["modelVersion"] = view.version
    return io


def drift_io(
    cfg: ModelConfig | None, parameters: Mapping[str, Any], result: Mapping[str, Any] | None
) -> RunIO:
    """The champion's holdout (the reference) and the current window (a file, or the
    prediction log over the last days) in."""
    io = RunIO()
    view = DriftView.model_validate(result) if result is not None else None
    current = _text(parameters, "current")
    current_rows = view.rows.get("current") if view else None
    if current:
        path = Path(current).expanduser().resolve()
        io.inputs.append(
            file_dataset(path, "current_window", fields=source_fields(path, cfg), rows=current_rows)
        )
    elif cfg is not None:
        days = parameters.get("window_days") or cfg.drift.window_days
        io.inputs.append(
            file_dataset(
                predictions_dir(cfg.name),
                "prediction_log",
                rows=current_rows,
                windowDays=float(days),
            )
        )
    if view is None:
        return io
    found = _REPORT_URI.match(view.report_uri or "")
    if found:
        version = found["version"]
        # the holdout's own rows: "output_reference" when the training window stood in for it
        held = view.rows.get("output_reference", view.rows.get("reference"))
        io.inputs.insert(0, holdout_dataset(found["run_id"], version, rows=held))
        io.run["modelVersion"] = version
    if view.decision is not None:
        io.run["decision"] = "retrain" if view.decision.retrain else "no retrain"
    return io


def flow_io(
    kind: FlowKind,
    cfg: ModelConfig | None,
    parameters: Mapping[str, Any],
    result: Mapping[str, Any] | None = None,
) -> RunIO:
    """What a run of ``kind`` read and wrote: from its parameters alone while it runs or after
    it failed, with its result once it completed."""
    if kind == "ingestion":
        return ingestion_io(cfg, parameters, result)
    if kind == "training":
        return training_io(result)
    if kind == "scoring":
        return scoring_io(cfg, parameters, result)
    return drift_io(cfg, parameters, result)


# -- the event -------------------------------------------------------------------------------


def job_name(flow: str, model: str | None) -> str:
    """``<flow>.<model>``: one job per flow and model, as Airflow's ``<dag>.<task>``."""
    return f"{flow}.{model}" if model else flow


@dataclass(frozen=True)
class ParentRef:
    """The run that started this one as a subflow (drift's retraining), and the root run."""

    run_id: str
    job: str
    root_run_id: str | None = None
    root_job: str | None = None


def _parent_facet(parent: ParentRef, namespace: str) -> parent_run.ParentRunFacet:
    root = None
    if parent.root_run_id and parent.root_job:
        root = parent_run.Root(
            run=parent_run.RootRun(runId=parent.root_run_id, facets=None),
            job=parent_run.RootJob(namespace=namespace, name=parent.root_job, facets=None),
        )
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=parent.run_id, facets=None),
        job=parent_run.Job(namespace=namespace, name=parent.job, facets=None),
        root=root,
        producer=producer(),
    )


def error_facet(error: BaseException | str) -> error_message_run.ErrorMessageRunFacet:
    """Why a run failed: the exception and its traceback, or the state's message (a crash)."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(error)) if error.__traceback__ else None
    else:
        message, trace = error, None
    return error_message_run.ErrorMessageRunFacet(
        message=message[:_MESSAGE_LIMIT] or "unknown error",
        programmingLanguage="PYTHON",
        stackTrace=trace[-_TRACE_LIMIT:] if trace else None,
        producer=producer(),
    )


def run_event(
    event_type: EventType,
    *,
    run_id: str,
    flow: str,
    model: str | None,
    namespace: str,
    io: RunIO | None = None,
    parent: ParentRef | None = None,
    error: BaseException | str | None = None,
    now: datetime | None = None,
) -> RunEvent:
    """One run event of ``flow`` for ``model``: the job, the run with its facets (engine,
    parent, error, our digests) and what it read and wrote."""
    io = io or RunIO()
    # the openlineage client's version, for the processing-engine facet
    from openlineage.client.constants import __version__ as client_version

    run_facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=mlsteward_version(),
            name="mlsteward",
            openlineageAdapterVersion=client_version,
            producer=producer(),
        ),
        FACET_KEY: MlstewardRunFacet(
            model=model or "unknown",
            flow=flow,
            producer=producer(),
            **{k: v for k, v in io.run.items() if v is not None},
        ),
    }
    if parent is not None:
        run_facets["parent"] = _parent_facet(parent, namespace)
    if error is not None:
        run_facets["errorMessage"] = error_facet(error)
    job_facets: dict[str, JobFacet] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="PREFECT", jobType="FLOW", producer=producer()
        )
    }
    return RunEvent(
        eventType=RunState(event_type),
        eventTime=(now or datetime.now(UTC)).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=namespace, name=job_name(flow, model), facets=job_facets),
        inputs=[d.as_input() for d in io.inputs],
        outputs=[d.as_output() for d in io.outputs],
        producer=producer(),
    )

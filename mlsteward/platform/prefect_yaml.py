"""``prefect.yaml`` and ``deploy/prefect.kubernetes.yaml``, written from ``config/models``.

Every model runs the same eleven deployments (train, ingest, materialize, promote, rollback,
score, drift, monitor, watch, reproduce, rollout), differing only in the model's name and its
schedules. Kept by hand, the list drifts from the configs: a new model without deployments, or a
schedule changed in the config and not in the file. So both files are rendered here: one
template per deployment kind, filled in for each model in name order, then the deployments that
serve every model (``audit-upkeep``, ``reaper``, ``process-review``). The two files share the
templates and differ only in their header and work pools, so the Kubernetes variant cannot drift
from the local one.

A model's deployments come from what its YAML declares (the file name, and ``scoring.schedule``,
``drift.schedule`` and ``alerts.schedule`` or their defaults), not from the validated
``ModelConfig``: a config the core rejects still gets its deployments, whose runs then stop with
the config's own message, and the files stay a function of the config files alone, whatever this
checkout's code accepts.

``mlsteward deployments render`` writes both files (``--check`` only compares); ``make deploy``
and ``make up`` write them before deploying, so adding a model is adding its YAML.

A schedule set to null gets no ``schedules`` in the file. ``prefect deploy`` (Prefect 3.8.8)
sends no schedules for such an entry, so a schedule deployed earlier stays on the server until
``prefect deployment schedule clear`` removes it.

Standard library, YAML and the config package only, like the rest of the platform.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from mlsteward.config.models import model_config_path, model_names
from mlsteward.config.sections.alerts import AlertsConfig
from mlsteward.config.sections.monitoring import DriftConfig, ScoringConfig
from mlsteward.errors import ConfigError

RENDER_COMMAND = "mlsteward deployments render"
LOCAL_FILE = "prefect.yaml"
KUBERNETES_FILE = "deploy/prefect.kubernetes.yaml"
WIDTH = 96
"""Longest line of a wrapped description."""

CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?#-]+")


@dataclass(frozen=True)
class ModelDeployments:
    """What a model's deployments are made of: its name and the crons its config declares."""

    model: str
    scoring_schedule: str | None
    drift_schedule: str | None
    alerts_schedule: str | None = None

    @property
    def slug(self) -> str:
        return model_slug(self.model)

    @property
    def names(self) -> list[str]:
        return deployment_names(self.model)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "scoring_schedule": self.scoring_schedule,
            "drift_schedule": self.drift_schedule,
            "alerts_schedule": self.alerts_schedule,
            "deployments": self.names,
        }


@dataclass(frozen=True)
class Kind:
    """One deployment per model: the template every model's entry is filled from.

    ``description`` may use ``$model``, ``$slug`` and, with a ``schedule``, ``$cadence`` /
    ``$Cadence`` (the schedule in words, or why there is none)."""

    prefix: str
    entrypoint: str
    tag: str
    description: str
    concurrency_limit: int | None = 1
    schedule: str | None = None
    """The config section whose ``schedule`` is the cron (``scoring``, ``drift``)."""
    cron: str | None = None
    """A fixed cron, the same for every model."""
    large: bool = False
    """Kubernetes: the larger Job (training, reproduction, drift)."""
    trigger: str | None = None
    """A ``triggers:`` block (``$model`` filled in) that starts runs on an event."""


KINDS: tuple[Kind, ...] = (
    Kind(
        "train",
        "flows/training.py:training_flow",
        "training",
        "Tune (Hyperopt TPE), train, evaluate and register a new $model version from its "
        "current contract-checked snapshot, through the Feast feature service.",
        large=True,
        trigger="RETRAIN",
    ),
    Kind(
        "ingest",
        "flows/ingestion.py:ingestion_flow",
        "ingestion",
        "Contract-check the $model source and snapshot it for Feast.",
    ),
    Kind(
        "materialize",
        "flows/ingestion.py:materialize_flow",
        "features",
        "Refresh the online store with the latest $model features (hourly).",
        concurrency_limit=None,
        cron="15 * * * *",
    ),
    Kind(
        "promote",
        "flows/governance.py:promotion_flow",
        "promotion",
        "Promote a $model version to champion: re-runs the validation gates if its report is "
        "stale, then follows the model's promotion policy (manual: the run pauses for an "
        "approval form).",
        concurrency_limit=None,
    ),
    Kind(
        "rollback",
        "flows/governance.py:rollback_flow",
        "promotion",
        "Restore the previous (or a named earlier) $model champion; the current one is retired. "
        "A reason is required and recorded in the audit trail.",
    ),
    Kind(
        "score",
        "flows/scoring.py:scoring_flow",
        "scoring",
        "Score the latest online features of every $model entity with the verified champion "
        "(top-k SHAP per row) and append them to the prediction log ($cadence).",
        schedule="scoring",
    ),
    Kind(
        "drift",
        "flows/drift.py:drift_flow",
        "monitoring",
        "Compare the last days of $model predictions with the champion's reference "
        "(Evidently); on drift, emit mlsteward.drift.detected so train-$slug retrains "
        "(cooldown and one-at-a-time enforced). $Cadence.",
        schedule="drift",
        large=True,
    ),
    Kind(
        "monitor",
        "flows/monitor.py:monitor_flow",
        "monitoring",
        "Check the $model standing alert rules (serving error rate and p99 latency, run "
        "success rate, quality since the promotion, training-serving skew, SHAP attribution "
        "and bias drift) and alert through Prefect events, the audit trail and the model's "
        "notification automation ($cadence).",
        schedule="alerts",
    ),
    Kind(
        "watch",
        "flows/monitor.py:watch_flow",
        "monitoring",
        "Watch a new $model champion after its promotion (alerts.watch): the standing rules "
        "every few minutes for the window; a breach of a rule marked rollback: true rolls back "
        "to the previous champion through governance. Started by mlsteward.model.promoted.",
        trigger="WATCH",
    ),
    Kind(
        "reproduce",
        "flows/reproduce.py:reproduce_flow",
        "governance",
        "Rebuild a registered $model version (default: the champion) from its recorded "
        "snapshot, params and seed through Feast, and compare it step by step with what was "
        "registered: data digest, training set, params, metrics, artifact SHA-256. The result "
        "is audited and tagged on the version (reproduce_result).",
        concurrency_limit=None,
        large=True,
    ),
    Kind(
        "rollout",
        "flows/rollout.py:rollout_flow",
        "rollout",
        "Canary-release a validated $model challenger (default: the challenger alias) through "
        "the prediction service: rollout.steps of live traffic, each step judged on error "
        "rate, p99 latency, prediction shift and quality; a breach rolls back at once, the last "
        "step promotes through the promotion policy. One rollout at a time.",
    ),
)


@dataclass(frozen=True)
class Entry:
    """One deployment as the files write it."""

    name: str
    description: str
    entrypoint: str
    parameters: tuple[tuple[str, str], ...]
    """Key and YAML text of each parameter."""
    tags: tuple[str, ...]
    concurrency_limit: int | None
    cron: str | None
    large: bool = False
    trigger: str | None = None
    """The ``triggers:`` block as written (``$model`` filled in)."""


SHARED: tuple[Entry, ...] = (
    Entry(
        "audit-upkeep",
        "Guard the governance record: put every model's MLflow @champion back where the newest "
        "signed promotion or rollback record says (audited alias_repaired), finish or undo an "
        "interrupted promotion, then sign the audit trail's head into the anchor outside the "
        "store. Every 15 minutes, so a moved alias never stands long and a checkpoint is never "
        "older.",
        "flows/upkeep.py:upkeep_flow",
        (("repair", "true"),),
        ("mlsteward", "governance"),
        1,
        "*/15 * * * *",
    ),
    Entry(
        "reaper",
        "Mark runs whose process died (no Prefect heartbeat within "
        "MLSTEWARD_REAPER_TIMEOUT_SECONDS) Crashed, end their MLflow runs, close a dead "
        "rollout's canary so all traffic is back on the champion, and audit each. Every 5 "
        "minutes; training, drift and rollout runs also reap when they start.",
        "flows/reaper.py:reaper_flow",
        (),
        ("mlsteward", "governance"),
        1,
        "*/5 * * * *",
    ),
    Entry(
        "process-review",
        "Measure and control the delivery process: lead and cycle times, first-pass yield of "
        "the gates, change failure rate and failed runs of every model, from the audit trail "
        "and Prefect's runs; control charts against each chart's baseline with the run rules "
        "of process.rules, Cpk against process.targets; a current special cause alerts the "
        "model's owners. Writes the report (HTML, JSON) and a Prefect artifact. Weekly, "
        "Mondays 06:00 UTC.",
        "flows/process.py:process_review_flow",
        (),
        ("mlsteward", "governance"),
        1,
        "0 6 * * 1",
    ),
)
"""The deployments that serve every model, after the models' own."""


@dataclass(frozen=True)
class Variant:
    """One of the two files: its header (everything above ``deployments:``) and the work
    pool anchors its entries name."""

    path: str
    header: str
    pool: str
    large_pool: str


GENERATED = f"""\
# Generated from config/models/*.yaml by mlsteward/platform/prefect_yaml.py: do not edit by
# hand. `{RENDER_COMMAND}` writes it again (make deploy and make up do so first).
"""

LOCAL = Variant(
    LOCAL_FILE,
    GENERATED
    + """\
# Prefect deployments of mlsteward, eleven per model in config/models and two for all of them.
# Create them with `make deploy` (a running Prefect server and `PREFECT_API_URL` pointing at it),
# then run a worker with `make worker`.
# MLSTEWARD_PROJECT_ROOT is resolved by `prefect deploy` (Makefile exports it as the checkout).
# The Kubernetes variant of these deployments (same names, flows, parameters, schedules and
# triggers; Jobs from the mlsteward image) is deploy/prefect.kubernetes.yaml, deployed with
# `prefect deploy --all --prefect-file deploy/prefect.kubernetes.yaml` (deploy/README.md).
name: mlsteward
prefect-version: 3.8.8

build: null
push: null

pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ $MLSTEWARD_PROJECT_ROOT }}"

definitions:
  work_pool: &process_pool
    name: mlsteward-process
    work_queue_name: default
""",
    "*process_pool",
    "*process_pool",
)

KUBERNETES = Variant(
    KUBERNETES_FILE,
    GENERATED
    + """\
# The Kubernetes variant of ../prefect.yaml: the same deployments (names, flows, parameters,
# schedules, triggers, concurrency limits, descriptions; tests/unit/test_deployments.py holds the
# two files equal), run as Kubernetes Jobs from the mlsteward image (deploy/Dockerfile) on the
# `mlsteward-kubernetes` work pool. From the repository root, against the cluster's Prefect server
# (deploy/README.md has the whole install):
#
#   MLSTEWARD_IMAGE=${MLSTEWARD_IMAGE:?registry/mlsteward:tag} \\
#     prefect --no-prompt deploy --all --prefect-file deploy/prefect.kubernetes.yaml
#
# Why a second file: the webhook gateway and the drift retrain find deployments by name
# (train-model/train-heart-disease), so both variants carry the same names, and one prefect file
# cannot hold two deployments of one flow under one name (the later replaces the earlier on the
# server). And the local `make deploy` runs `prefect deploy --all` on ../prefect.yaml, which
# would fail on a deployment whose work pool the local server does not have.
#
# Secrets never appear here: the pool's base job template (deploy/helm/base-job-template.json)
# adds the `mlsteward-runtime` Secret to every Job with envFrom, and mounts the shared
# MLSTEWARD_HOME volume.
name: mlsteward
prefect-version: 3.8.8

# The image is built and pushed outside Prefect (deploy/README.md).
build: null
push: null

# The code is in the image: runs start in its working directory (WORKDIR in deploy/Dockerfile).
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: /opt/mlsteward

definitions:
  # Non-secret settings of every run: the production profile (config/profiles/production.yaml)
  # on the in-cluster services. MLSTEWARD_POSTGRES_URL and MLSTEWARD_REDIS_URL come from the
  # mlsteward-runtime Secret.
  env: &env
    MLSTEWARD_PROFILE: production
    MLSTEWARD_HOME: /var/lib/mlsteward
    # the worker passes its own Prefect settings on to the Job; these win
    PREFECT_HOME: /var/lib/mlsteward/prefect
    MLSTEWARD_SNAPSHOT_ROOT: /var/lib/mlsteward/snapshots
    MLSTEWARD_DB_PREFIX: mlsteward
    MLSTEWARD_FEAST_PROJECT: mlsteward
    MLSTEWARD_OFFLINE_STORE: duckdb
    MLSTEWARD_MLFLOW_URL: &mlflow_url http://mlflow.mlsteward.svc.cluster.local:5000
    MLFLOW_TRACKING_URI: *mlflow_url
    MLSTEWARD_SERVING_URL: http://mlsteward-serving.mlsteward.svc.cluster.local:8800
    MLFLOW_DISABLE_TELEMETRY: "true"
    DO_NOT_TRACK: "1"
    FEAST_USAGE: "False"
  work_pools:
    # Job variables of prefect-kubernetes' base job template (validated against its schema by
    # tests/unit/test_deployments.py). `{{ $MLSTEWARD_IMAGE }}` is read from the environment of
    # `prefect deploy`.
    kubernetes: &kubernetes_pool
      name: mlsteward-kubernetes
      work_queue_name: default
      job_variables: &job_variables
        image: "{{ $MLSTEWARD_IMAGE }}"
        image_pull_policy: IfNotPresent
        namespace: mlsteward
        service_account_name: mlsteward-flows
        cpu_request: 500m
        cpu_limit: "1"
        memory_request: 1Gi
        memory_limit: 2Gi
        finished_job_ttl: 86400
        env: *env
    # Training, reproduction (a retrain) and drift (Evidently holds whole columns in memory).
    kubernetes_large: &kubernetes_pool_large
      <<: *kubernetes_pool
      job_variables:
        <<: *job_variables
        cpu_request: "2"
        cpu_limit: "2"
        memory_request: 4Gi
        memory_limit: 8Gi
""",
    "*kubernetes_pool",
    "*kubernetes_pool_large",
)

VARIANTS = (LOCAL, KUBERNETES)

RETRAIN_TRIGGER = """\
    # Retraining on drift: the drift flow emits this event (after its cooldown check) and the
    # run it starts carries the drift finding as its reason.
    triggers:
      - type: event
        enabled: true
        match:
          prefect.resource.id: mlsteward.model.$model
        expect:
          - mlsteward.drift.detected
        parameters:
          model: $model
          reason: "{{ event.payload.reason }}"
"""

WATCH_TRIGGER = """\
    # The watch after a promotion: the promotion emits this event with the new champion.
    triggers:
      - type: event
        enabled: true
        match:
          prefect.resource.id: mlsteward.model.$model
        expect:
          - mlsteward.model.promoted
        parameters:
          model: $model
          version: "{{ event.payload.version }}"
"""

TRIGGERS = {"RETRAIN": RETRAIN_TRIGGER, "WATCH": WATCH_TRIGGER}


def model_slug(model: str) -> str:
    """The model's part of a deployment name (``heart-disease``), as the gateway and the API
    spell it too."""
    return model.replace("_", "-")


def deployment_names(model: str) -> list[str]:
    """The deployments every model gets, in the files' order, whatever its schedules."""
    return [f"{kind.prefix}-{model_slug(model)}" for kind in KINDS]


# -- what the configs declare --------------------------------------------------------------------


def models_dir(project_root: Path) -> Path:
    """The checkout's own model configs: the files sit beside them and are committed with them
    (never ``MLSTEWARD_CONFIG_DIR``, which may point a test or a run at other models)."""
    return project_root / "config" / "models"


def declared_models(directory: Path) -> list[ModelDeployments]:
    """Every model the directory declares, by name, with the crons its YAML gives.

    Raises:
        ConfigError: a file is not a YAML mapping, names another model, or gives a schedule
            that is neither a five-field cron nor null; the message names the file and key.
    """
    if not directory.is_dir():
        raise ConfigError(
            f"{directory}: no model configs here; run from the checkout or set "
            "MLSTEWARD_PROJECT_ROOT to it"
        )
    return [_declared(model_config_path(name, directory)) for name in model_names(directory)]


def _declared(path: Path) -> ModelDeployments:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a model config must be a YAML mapping, got {type(raw).__name__}"
        )
    name = raw.get("name", path.stem)
    if name != path.stem:
        raise ConfigError(f"{path}: name: {name!r} must match the file name {path.stem!r}")
    return ModelDeployments(
        model=path.stem,
        scoring_schedule=_schedule(path, raw, "scoring", ScoringConfig.model_fields),
        drift_schedule=_schedule(path, raw, "drift", DriftConfig.model_fields),
        alerts_schedule=_schedule(path, raw, "alerts", AlertsConfig.model_fields),
    )


def _schedule(path: Path, raw: dict[str, Any], section: str, fields: dict[str, Any]) -> str | None:
    """The section's cron, its default when the config does not set it (the default is the
    config model's own, so the two cannot differ)."""
    block = raw.get(section, {})
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: {section}: must be a mapping, got {type(block).__name__}")
    if "schedule" not in block:
        default: str | None = fields["schedule"].default
        return default
    cron = block["schedule"]
    if cron is None:
        return None
    fields_ = cron.split() if isinstance(cron, str) else []
    if len(fields_) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields_):
        raise ConfigError(
            f"{path}: {section}.schedule: {cron!r} is not a cron expression (five fields, "
            "minute hour day month weekday, UTC) nor null (no schedule)"
        )
    return " ".join(fields_)


# -- the files -----------------------------------------------------------------------------------


def cadence(cron: str | None, section: str) -> str:
    """A schedule in the words a description uses."""
    if cron is None:
        return f"unscheduled: {section}.schedule is null in the model config"
    if re.fullmatch(r"\d+ \* \* \* \*", cron):
        words = "hourly"
    elif re.fullmatch(r"\d+ \d+ \* \* \*", cron):
        words = "daily"
    else:
        words = f"on the cron {cron} (UTC)"
    return f"{words}, as {section}.schedule in the model config"


def model_entries(model: ModelDeployments) -> list[Entry]:
    entries = []
    for kind in KINDS:
        cron = kind.cron
        words = ""
        if kind.schedule is not None:
            cron = getattr(model, f"{kind.schedule}_schedule")
            words = cadence(cron, kind.schedule)
        description = Template(kind.description).substitute(
            model=model.model, slug=model.slug, cadence=words, Cadence=words[:1].upper() + words[1:]
        )
        entries.append(
            Entry(
                name=f"{kind.prefix}-{model.slug}",
                description=description,
                entrypoint=kind.entrypoint,
                parameters=(("model", model.model),),
                tags=("mlsteward", kind.tag, model.model),
                concurrency_limit=kind.concurrency_limit,
                cron=cron,
                large=kind.large,
                trigger=(
                    Template(TRIGGERS[kind.trigger]).substitute(model=model.model)
                    if kind.trigger
                    else None
                ),
            )
        )
    return entries


def _description(text: str) -> list[str]:
    """One line when it fits and reads back unchanged as a plain scalar, else folded (``>-``)."""
    line = f"    description: {text}"
    if len(line) <= WIDTH and yaml.safe_load(line.strip()) == {"description": text}:
        return [line]
    wrapped = textwrap.wrap(text, width=WIDTH - 6, break_long_words=False, break_on_hyphens=False)
    return ["    description: >-", *(f"      {part}" for part in wrapped)]


def _entry(entry: Entry, variant: Variant) -> str:
    lines = [f"  - name: {entry.name}", *_description(entry.description)]
    lines.append(f"    entrypoint: {entry.entrypoint}")
    if entry.parameters:
        lines.append("    parameters:")
        lines += [f"      {key}: {value}" for key, value in entry.parameters]
    lines.append(f"    tags: [{', '.join(entry.tags)}]")
    if entry.concurrency_limit is not None:
        lines.append(f"    concurrency_limit: {entry.concurrency_limit}")
    if entry.cron is not None:
        lines += [
            "    schedules:",
            f"      - cron: {json.dumps(entry.cron)}",
            "        timezone: UTC",
            "        active: true",
        ]
    lines.append(f"    work_pool: {variant.large_pool if entry.large else variant.pool}")
    text = "\n".join(lines) + "\n"
    if entry.trigger is not None:
        text += entry.trigger
    return text


def render(models: list[ModelDeployments]) -> dict[str, str]:
    """Both files' text, by path under the project root."""
    entries = [e for m in sorted(models, key=lambda m: m.model) for e in model_entries(m)]
    entries += SHARED
    return {
        v.path: v.header + "\ndeployments:\n" + "\n".join(_entry(e, v) for e in entries)
        for v in VARIANTS
    }


def stale_files(project_root: Path) -> list[str]:
    """The files (relative paths) that differ from what the configs render."""
    rendered = render(declared_models(models_dir(project_root)))
    return [path for path, text in rendered.items() if _read(project_root / path) != text]


def write(project_root: Path) -> list[str]:
    """Write the files that differ from what the configs render; the paths written.

    Raises:
        ConfigError: a model config cannot be read (see :func:`declared_models`), or a file
            cannot be written.
    """
    rendered = render(declared_models(models_dir(project_root)))
    written = []
    for path, text in rendered.items():
        target = project_root / path
        if _read(target) == text:
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(target)
        except OSError as exc:
            raise ConfigError(f"{target}: cannot write the deployments: {exc.strerror}") from exc
        written.append(path)
    return written


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None

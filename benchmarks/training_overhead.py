"""What does the governed training flow cost on top of the tuning it wraps?

Prints wall-clock figures for the same Hyperopt TPE + XGBoost work, validation gates and
promotion decision done two ways, in one process, on one data set:

* **flow** -- ``flows.training.training_flow`` under a real Prefect API (``prefect_test_harness``),
  MLflow on SQLite in a temporary ``MLSTEWARD_HOME`` (every trial a nested run), the training set
  retrieved point-in-time through the Feast feature service, the model registered with lineage
  and signed, then governed: the holdout scored from the verified artifact, every validation gate
  run and recorded, and the version promoted when the gates pass (``flows.governance.govern``).
* **bare** -- a plain script with the same maths and nothing else: the snapshot parquet read
  directly, then the very functions the tasks wrap (``time_split``, ``make_encoding``/``encode``,
  ``make_dmatrix``, ``tune``, ``fit_final``, ``predict``, ``choose_threshold`` for a classifier,
  ``evaluate_for``), the refit model saved to a local ``.ubj``, loaded back and scored on the
  test split by ``score_holdout`` (``evaluate_for`` and ``assess_fairness``), the three gates
  (``metric_threshold_gate``, ``fairness_gate``, ``champion_gate`` over
  ``champion_comparison_gate``) with its own champion (none on the first run), and a passing
  version kept as the next champion.

Why it is built this way:

* Same process, same data, same search space, seed and early stopping, so the only difference
  is the Prefect/MLflow/Feast machinery. The bare side must not do *less* work: the script
  checks that both sides ran identical trials (same per-trial losses and trees, same best
  params, same test metrics, byte-identical model) and, pair by pair, reached the same holdout
  metrics, fairness numbers, gate results and decision, and prints that check. XGBoost with
  ``tree_method=hist`` and a fixed seed is deterministic (DESIGN.md §5), so any mismatch means the
  two sides trained on different inputs and the timing comparison would be meaningless.
* Both sides keep a champion: the flow in the MLflow registry, the bare script in memory. The
  warm-up runs have none (the champion gate passes with nothing to compare), and the warm-up's
  one-trial version becomes the first champion. Every measured run is a retrain against that
  champion: its holdout is scored for both models, and a better version is promoted. After
  each measured pair, outside the timings, the warm-up's version is made champion again (a
  rollback in the registry, an assignment in the bare script), so every measured run does the
  same work instead of tying the previous measured run's identical model and stopping at the
  champion gate. The same seed makes the warm-up's one trial the search's first, so a run
  whose best trial is its first trains the warm-up's model again, ties the champion and is
  rejected on both sides alike, as ``min_delta: 0`` says (likely with a handful of trials,
  rare with the default 30); the decisions are printed.
* One-off costs are excluded and printed apart: the Prefect harness start-up (15-19 s, paid
  once per process), ingestion (contract, snapshot, ``feast apply``; both sides read its
  snapshot), and first-call costs (imports, MLflow schema creation, Feast registry load,
  Prefect client set-up, the governance key) through one warm-up run of each side with a single
  trial. Modules imported during a measured run are counted to show nothing is left.
* Flow-run heartbeats every 30 s, as the local platform's workers send them
  (``--heartbeat-seconds``; Prefect's own default is 180 s and they cannot be turned off). The
  frequency changes little here: the reaper's pass at the start of a run surveys the live runs
  either way, and at the end of every run the engine stops and joins the heartbeat thread,
  which sleeps in 1-second steps, so that join alone waits up to a second.
* Measured runs alternate bare, flow, bare, flow, ... so slow drift on a shared machine hits
  both sides alike; the ratio asked for is of the medians.
* Contention: XGBoost uses every core (``nthread=0``) and its threads meet at a barrier many
  times per boosting round, so another process taking one of two cores can make the same
  trials take 2-10x longer (measured while writing this). That noise is the same size as
  everything we want to see, so two figures less exposed to it are printed too: the ratio of
  the fastest runs (contention only ever adds time), and an estimate built from the overhead the
  timers *account for* (the machinery's own calls, not the XGBoost maths) added to the paired
  bare run.
* The flow's time is split by stage with simple timers (``flow_probes``): around each task call
  in the flow (``task call``: includes Prefect's task-run bookkeeping) and around each task's
  own function (``our code``), plus the adapter calls inside them (MLflow trial runs, the Feast
  join, registration, signing, verification, the audit trail). ``task call - our code`` is
  Prefect's per-task cost. What is left of the flow's wall time is split further: the flow
  engine before and after the flow's body (flow-run creation, state changes, run context,
  heartbeat thread, result record) and our plain calls in the body between tasks (the run's
  settings, the actor, the reaper's glue, ``govern``'s policy); every Prefect API request is
  counted by endpoint. A timer costs microseconds.
* Prefect's console handler is set to ERROR so the per-trial log lines and the warnings of a
  failed gate do not flood the output; they are still shipped to the API (that cost stays in
  the measurement). Library warnings are hidden for the same reason.

Run: ``.venv/bin/python benchmarks/training_overhead.py [--model heart_disease|readmission]
[--rows N] [--trials N] [--repeats N] [--heartbeat-seconds S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow_probes import (
    API_PREFIX,
    ENGINE_CALLS,
    ENGINE_CONTEXTS,
    ENGINE_PREFIX,
    HEARTBEATS,
    MLFLOW_PREFIX,
    RESULTS,
    Stopwatch,
    instrument_mlflow,
    instrument_prefect,
    patch_everywhere,
)

MODELS = ("heart_disease", "readmission")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.10
PLATFORM_HEARTBEAT_SECONDS = 30  # mlsteward.platform.lifecycle.RUN_HEARTBEAT


@dataclass(frozen=True)
class Stage:
    """One stage of the flow: the tasks that make it up (module, task name, as the flow's code
    looks them up at call time) and what the bare script does for the same stage."""

    label: str
    tasks: tuple[tuple[str, str], ...]
    bare_does: str


TRAINING = "flows.training"
GOVERNANCE = "flows.governance"
FLOW_STAGES: list[Stage] = [
    Stage("reaper", ((TRAINING, "reap_before_start"),), "-"),
    Stage(
        "data",
        ((TRAINING, "resolve_snapshot"), (TRAINING, "retrieve_training_set")),
        "read snapshot parquet",
    ),
    Stage("prepare", ((TRAINING, "prepare_data"),), "split + encode"),
    Stage("tune", ((TRAINING, "tune_hyperparameters"),), "DMatrix + tune()"),
    Stage("fit+evaluate", ((TRAINING, "fit_and_evaluate"),), "refit, threshold, metrics"),
    Stage(
        "save/register",
        (
            (TRAINING, "open_training_run"),
            (TRAINING, "register_model"),
            (TRAINING, "close_training_run"),
        ),
        "save_model(.ubj), sha256",
    ),
    Stage("publish artifacts", ((TRAINING, "publish_run_artifacts"),), "-"),
    Stage(
        "score holdout",
        ((GOVERNANCE, "score_on_holdout"),),
        "load .ubj, score_holdout (+ champion's)",
    ),
    Stage(
        "gates",
        (
            (GOVERNANCE, "gate_metric_thresholds"),
            (GOVERNANCE, "gate_fairness"),
            (GOVERNANCE, "gate_champion"),
        ),
        "the 3 gate functions",
    ),
    Stage(
        "record validation",
        ((GOVERNANCE, "record_validation"), (GOVERNANCE, "publish_validation")),
        "-",
    ),
    Stage("promotion", (("tasks.promotion", "promote_version"),), "keep as champion"),
]
# Stages where both sides run the same maths: their difference is noise plus Prefect's share.
SAME_MATHS = ("prepare", "tune", "fit+evaluate", "gates")

TRIAL_RUNS = "mlflow trial runs"
# Calls inside the tasks, timed wherever they are looked up: (module, attribute, label).
INNER_CALLS: list[tuple[str, str, str]] = [
    ("mlsteward.features.retrieval", "get_training_frame", "feast get_historical_features"),
    ("mlsteward.governance.mlflow_adapter", "log_nested_run", TRIAL_RUNS),
    ("mlsteward.governance.mlflow_adapter", "start_run", "mlflow start_run"),
    ("tasks.registry", "make_lineage", "lineage (git, lock hash, versions)"),
    ("mlsteward.governance.mlflow_adapter", "log_params_metrics", "mlflow log params+metrics"),
    ("mlsteward.governance.mlflow_adapter", "set_run_tags", "mlflow run tags"),
    (
        "mlsteward.governance.mlflow_adapter",
        "log_training_input",
        "mlflow log_input (training set)",
    ),
    ("mlsteward.governance.mlflow_adapter", "log_frame_artifact", "mlflow holdout predictions"),
    ("mlsteward.governance.mlflow_adapter", "log_dict_artifact", "mlflow json artifacts"),
    ("mlsteward.governance.mlflow_adapter", "log_and_register", "mlflow log_model + register"),
    ("mlsteward.governance.mlflow_adapter", "infer_signature", "  of which: infer_signature"),
    ("mlflow.xgboost", "log_model", "  of which: mlflow.xgboost.log_model"),
    (
        "mlflow.models.utils",
        "_validate_serving_input",
        "    of which: serve input example",
    ),
    ("mlsteward.governance.signatures", "sign_model_dir", "  of which: sign (governance key)"),
    ("tasks.registry", "audit_registration", "audit: version registered"),
    ("mlsteward.governance.mlflow_adapter", "end_run", "mlflow end_run"),
    ("mlsteward.governance.validation", "load_holdout", "download holdout"),
    ("mlsteward.governance.registry", "check_artifact", "download + check model"),
    ("mlsteward.governance.signatures", "verify_model_dir", "  of which: verify signature"),
    ("mlsteward.governance.validation", "score_holdout", "score_holdout (maths)"),
    ("mlsteward.governance.champion", "recorded", "champion record (audit trail)"),
    ("mlsteward.governance.promotion", "record_validation", "record validation (tags, audit)"),
    ("mlsteward.governance.promotion", "promote", "promote (lock, alias, audit)"),
    ("mlsteward.governance.promotion", "_checkpoint", "  of which: signed checkpoint"),
    ("mlsteward.governance.mlflow_adapter", "client", "mlflow client() created"),
    ("mlsteward.governance.promotion", "audit_store", "audit store opened"),
]

# Our plain calls in the flow's body, between its tasks: (module, attribute, label). Calls that
# contain tasks are listed with those tasks' stages, whose task-call time is taken out.
BODY_CALLS: list[tuple[str, str, str, tuple[str, ...]]] = [
    (TRAINING, "get_model_config", "get_model_config", ()),
    (TRAINING, "run_actor", "run_actor", ()),
    (TRAINING, "release_training_set", "release_training_set", ()),
    (TRAINING, "tune_model", "tune_model (runner choice)", ("tune",)),
    (
        TRAINING,
        "govern",
        "govern: report, policy, glue",
        ("score holdout", "gates", "record validation", "promotion"),
    ),
    (TRAINING, "TrainingResult", "TrainingResult(...)", ()),
]
SPEC_RESOLVE = "TrainingSpec.resolve"
FLOW_CALL, BODY_START, BODY_END, FLOW_RETURN = "call", "body start", "body end", "return"


def set_environment(root: Path, heartbeat_seconds: int) -> None:
    """Isolate every store under a temp dir; must run before prefect/mlflow are imported."""
    os.environ["MLSTEWARD_HOME"] = str(root / "mlsteward_home")
    os.environ["PREFECT_HOME"] = str(root / "prefect_home")
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["FEAST_USAGE"] = "False"
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(heartbeat_seconds)
    for var in ("MLFLOW_TRACKING_URI", "MLSTEWARD_CONFIG_DIR", "MLSTEWARD_ARTIFACT_ROOT"):
        os.environ.pop(var, None)


def quiet_library_chatter() -> None:
    """Library warnings and INFO lines (MLflow's signature hints, ibis deprecations) would bury
    the figures; each is emitted once per call site, so hiding them changes no timing."""
    import logging
    import warnings

    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # MLflow's SQLite stores warn at import time: import them here, in the main thread, under
    # these filters. mlflow also configures its loggers on import, so levels are set after.
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.ERROR)


def process_cpu() -> float:
    """User + system CPU seconds of this process (all its threads; not the API server's)."""
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------------------------
# Instrumenting the flow
# --------------------------------------------------------------------------------------------


def instrument_flow(watch: Stopwatch) -> None:
    """Time each task call in the flow (outer), each task's own function (inner), the adapter
    calls inside the tasks, our plain calls in the flow's body and Prefect's engine around it.

    The flows look their tasks up in their modules' globals at call time, so replacing them
    there times the whole Prefect task call; ``Task.fn`` is what Prefect's engine finally calls,
    so wrapping it times our code alone.
    """
    import flows.governance as governance_flow
    import flows.training as flow_module
    from mlsteward.training.spec import TrainingSpec

    for stage in FLOW_STAGES:
        for module_name, name in stage.tasks:
            module = importlib.import_module(module_name)
            task = getattr(module, name)
            keep = name == "score_on_holdout"  # the challenger's holdout score, for the check
            task.fn = watch.wrap(f"inner:{name}", task.fn, keep=keep)
            setattr(module, name, watch.wrap(f"outer:{name}", task))
    for module_name, attr, label in INNER_CALLS:
        original = getattr(importlib.import_module(module_name), attr)
        patch_everywhere(module_name, attr, watch.wrap(label, original))
    for module_name, attr, label, _ in BODY_CALLS:
        module = importlib.import_module(module_name)
        setattr(module, attr, watch.wrap(f"body:{label}", getattr(module, attr)))
    resolve = TrainingSpec.resolve.__func__  # type: ignore[attr-defined]
    TrainingSpec.resolve = classmethod(watch.wrap(f"body:{SPEC_RESOLVE}", resolve))  # type: ignore[method-assign,assignment]
    governance_flow.validate = watch.wrap("validate", governance_flow.validate, keep=True)
    flow = flow_module.training_flow
    flow.fn = watch.wrap("flow body", flow.fn, marks=(BODY_START, BODY_END))
    instrument_prefect(watch)
    instrument_mlflow(watch)


# --------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    seconds: float
    cpu_seconds: float
    load: float
    stages: dict[str, float]
    best_params: dict[str, Any]
    best_iteration: int
    trial_losses: list[float]
    test_metrics: dict[str, float]
    model_sha256: str
    holdout_metrics: dict[str, float]
    holdout_fairness: dict[str, dict[str, float | None]]
    gates: list[tuple[str, bool]]
    reasons: list[str]
    decision: str
    inner: dict[str, float] = field(default_factory=dict)
    calls: dict[str, float] = field(default_factory=dict)
    outside: dict[str, float] = field(default_factory=dict)
    api: dict[str, tuple[int, float]] = field(default_factory=dict)
    mlflow: dict[str, tuple[int, float]] = field(default_factory=dict)
    start_finish: float = 0.0
    trial_writes_inline: bool = True
    new_modules: int = 0
    task_runs: int = 0


@dataclass
class BareInputs:
    """What the bare script reads: the ingested snapshot, as the flow's tasks do."""

    cfg: Any
    snapshot_path: str
    dtypes: dict[str, str]
    timestamp_assigned: bool
    out_dir: Path


@dataclass
class BareRegistry:
    """The bare script's stand-in for the registry: version numbers as MLflow counts them,
    and the champion (model file, threshold, encoding) it scores beside each new version."""

    versions: int = 0
    champion: tuple[str, Path, float | None, Any] | None = None
    first_champion: tuple[str, Path, float | None, Any] | None = None


def verified_stand_in(cfg: Any, version: str, path: Path, threshold: float | None, enc: Any) -> Any:
    """The saved model loaded back as ``score_holdout`` takes it: a ``VerifiedModel`` whose
    version info carries the encoding and cut-off as the registry's tags would (same JSON)."""
    import xgboost as xgb

    from mlsteward.governance.registry import VerifiedModel, VersionInfo

    model = xgb.XGBRegressor() if cfg.is_regression else xgb.XGBClassifier()
    model.load_model(path)
    tags = {"feature_encoding": json.dumps(enc.to_dict(), sort_keys=True, default=str)}
    if threshold is not None:
        tags["decision_threshold"] = json.dumps(threshold)
    info = VersionInfo(name=cfg.name, version=version, run_id="", source="", tags=tags)
    return VerifiedModel(info=info, model=model, sha256="", objective=cfg.tuning.objective)


def bare_run(inputs: BareInputs, trials: int, registry: BareRegistry) -> RunResult:
    """The same maths as the flow with no orchestration, tracking or feature store."""
    import numpy as np
    import pandas as pd

    from mlsteward.features.encoding import encode, make_encoding
    from mlsteward.governance.fairness import fairness_gate
    from mlsteward.governance.gates import ValidationReport
    from mlsteward.governance.run_gates import champion_gate
    from mlsteward.governance.threshold_gate import metric_threshold_gate
    from mlsteward.governance.validation import score_holdout
    from mlsteward.training.build import predict
    from mlsteward.training.fitting import fit_final, make_dmatrix, time_split, tune
    from mlsteward.training.metrics import choose_threshold, evaluate_for

    cfg = inputs.cfg
    stages: dict[str, float] = {"reaper": 0.0}
    cpu0 = process_cpu()
    t0 = time.perf_counter()
    cols = [cfg.source.entity, cfg.timestamp_column, cfg.label, *cfg.data_column_names]
    frame = pd.read_parquet(inputs.snapshot_path, columns=cols)
    frame.insert(0, "row_id", np.arange(len(frame), dtype="int64"))
    t1 = time.perf_counter()
    stages["data"] = t1 - t0

    split = time_split(
        frame,
        cfg.timestamp_column,
        cfg.split.train,
        cfg.split.validation,
        keep_ties_together=not inputs.timestamp_assigned,
    )
    enc = make_encoding(cfg, inputs.dtypes, split.train)
    x_train, x_val, x_test = (encode(p, enc) for p in (split.train, split.validation, split.test))
    y_train, y_val, y_test = (p[cfg.label] for p in (split.train, split.validation, split.test))
    t2 = time.perf_counter()
    stages["prepare"] = t2 - t1

    dtrain = make_dmatrix(x_train, y_train, enc)
    dval = make_dmatrix(x_val, y_val, enc)
    result = tune(dtrain, dval, cfg.tuning, max_evals=trials)
    t3 = time.perf_counter()
    stages["tune"] = t3 - t2

    model = fit_final(x_train, y_train, enc, cfg.tuning, result)
    val_pred = predict(model, x_val)
    threshold = None
    if not cfg.is_regression:
        dt = cfg.decision_threshold
        threshold = choose_threshold(y_val.to_numpy(), val_pred, dt.strategy, dt.value)
    test_metrics = evaluate_for(cfg, y_test.to_numpy(), predict(model, x_test), threshold)
    evaluate_for(cfg, y_val.to_numpy(), val_pred, threshold)  # the flow logs these too
    t4 = time.perf_counter()
    stages["fit+evaluate"] = t4 - t3

    registry.versions += 1
    version = str(registry.versions)
    path = inputs.out_dir / f"model-v{version}.ubj"
    model.save_model(path)
    model_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    t5 = time.perf_counter()
    stages["save/register"] = t5 - t4
    stages["publish artifacts"] = 0.0

    holdout = split.test
    challenger = score_holdout(cfg, verified_stand_in(cfg, version, path, threshold, enc), holdout)
    champion = None
    if registry.champion is not None:
        champ_version, champ_path, champ_threshold, champ_enc = registry.champion
        stand_in = verified_stand_in(cfg, champ_version, champ_path, champ_threshold, champ_enc)
        champion = score_holdout(cfg, stand_in, holdout, explain=False)  # as the flow scores it
    t6 = time.perf_counter()
    stages["score holdout"] = t6 - t5

    report = ValidationReport(
        model=cfg.name,
        version=version,
        gates=[
            metric_threshold_gate(challenger.metrics, cfg.thresholds),
            fairness_gate(challenger.fairness, cfg),
            champion_gate(cfg, challenger, champion),
        ],
        created_at="",
    )
    t7 = time.perf_counter()
    stages["gates"] = t7 - t6
    stages["record validation"] = 0.0

    decision = "rejected"
    if report.passed:
        registry.champion = (version, path, threshold, enc)
        registry.first_champion = registry.first_champion or registry.champion
        decision = "promoted"
    t8 = time.perf_counter()
    stages["promotion"] = t8 - t7
    return RunResult(
        seconds=t8 - t0,
        cpu_seconds=process_cpu() - cpu0,
        load=os.getloadavg()[0],
        stages=stages,
        best_params=result.best_params,
        best_iteration=result.best_iteration,
        trial_losses=[t.loss for t in result.trials],
        test_metrics=test_metrics,
        model_sha256=model_sha256,
        holdout_metrics=challenger.metrics,
        holdout_fairness={a: f.metrics for a, f in challenger.fairness.items()},
        gates=[(g.name, g.passed) for g in report.gates],
        reasons=report.reasons(),
        decision=decision,
    )


def restore_first_champion(cfg: Any, flow: RunResult, registry: BareRegistry) -> None:
    """The warm-up's version champion again on both sides (untimed), so the next measured run
    is compared with it as this one was."""
    from mlsteward.governance.promotion import rollback

    if flow.decision == "promoted":
        rollback(
            cfg,
            reason="benchmark: the next run is compared with the warm-up's version again",
            actor="benchmark",
            to_version="1",
        )
    registry.champion = registry.first_champion


def outside_tasks(watch: Stopwatch, stages: dict[str, float]) -> dict[str, float]:
    """The flow's wall time outside its task calls, by where it went (see ``print_outside``)."""
    m, s = watch.marks, watch.seconds
    out: dict[str, float] = {
        "before body": m[BODY_START] - m[FLOW_CALL],
        "after body": m[FLOW_RETURN] - m[BODY_END],
    }
    for _, label in ENGINE_CALLS:
        out[label] = s[ENGINE_PREFIX + label]
    for _, label in ENGINE_CONTEXTS:
        for side in ("enter", "exit"):
            out[f"{label}: {side}"] = s[f"{ENGINE_PREFIX}{label}: {side}"]
    for side in ("enter", "exit"):
        out[f"{HEARTBEATS}: {side}"] = s[f"{ENGINE_PREFIX}{HEARTBEATS}: {side}"]
    body_tasks = 0.0
    for stage in FLOW_STAGES:
        body_tasks += stages[stage.label]
    out["body outside tasks"] = (m[BODY_END] - m[BODY_START]) - body_tasks
    out[SPEC_RESOLVE] = s[f"body:{SPEC_RESOLVE}"]
    for _, _, label, nested in BODY_CALLS:
        out[label] = s[f"body:{label}"] - sum(stages[n] for n in nested)
    return out


def flow_run(cfg: Any, trials: int, watch: Stopwatch) -> RunResult:
    """The full training flow; stage times come from the timers ``instrument_flow`` installed."""
    import mlflow

    from flows.training import training_flow
    from mlsteward.governance import mlflow_adapter

    watch.reset()
    modules_before = len(sys.modules)
    cpu0 = process_cpu()
    watch.mark(FLOW_CALL)
    outcome = training_flow(model=cfg.name, max_evals=trials)
    watch.mark(FLOW_RETURN)
    seconds = watch.marks[FLOW_RETURN] - watch.marks[FLOW_CALL]
    cpu_seconds = process_cpu() - cpu0
    new_modules = len(sys.modules) - modules_before

    stages = {st.label: sum(watch.seconds[f"outer:{n}"] for _, n in st.tasks) for st in FLOW_STAGES}
    inner = {st.label: sum(watch.seconds[f"inner:{n}"] for _, n in st.tasks) for st in FLOW_STAGES}
    inner |= {label: watch.seconds[label] for _, _, label in INNER_CALLS}
    inner[RESULTS] = watch.seconds[RESULTS]
    calls = {label: float(watch.calls[label]) for _, _, label in INNER_CALLS}
    calls[RESULTS] = float(watch.calls[RESULTS])
    api, mlflow_calls = (
        {
            k.removeprefix(prefix): (watch.calls[k], watch.seconds[k])
            for k in watch.seconds
            if k.startswith(prefix)
        }
        for prefix in (API_PREFIX, MLFLOW_PREFIX)
    )
    challenger, _, _ = watch.kept["inner:score_on_holdout"]
    report = watch.kept["validate"]
    outside = outside_tasks(watch, stages)
    trial_writes_inline = watch.threads[TRIAL_RUNS] <= watch.threads["inner:tune_hyperparameters"]

    # What the flow recorded, read back from MLflow: every trial's loss and the refit's trees.
    mlflow_adapter.client()
    children = mlflow.search_runs(
        experiment_names=[cfg.name],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.run_id}'",
        output_format="list",
    )
    children.sort(key=lambda r: r.info.run_name)  # trial-001, trial-002, ...
    parent = mlflow.get_run(outcome.run_id)
    return RunResult(
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        load=os.getloadavg()[0],
        stages=stages,
        best_params=outcome.best_params,
        best_iteration=int(parent.data.params["n_estimators"]) - 1,
        trial_losses=[float(r.data.metrics["loss"]) for r in children],
        test_metrics=outcome.test_metrics,
        model_sha256=outcome.artifact_sha256,
        holdout_metrics=challenger.metrics,
        holdout_fairness={a: f.metrics for a, f in challenger.fairness.items()},
        gates=[(g.name, g.passed) for g in report.gates],
        reasons=report.reasons(),
        decision=outcome.governance.decision,
        inner=inner,
        calls=calls,
        outside=outside,
        api=api,
        mlflow=mlflow_calls,
        start_finish=seconds - sum(stages.values()),
        # Were trial runs written on the tuning task's own thread, or on another one?
        trial_writes_inline=trial_writes_inline,
        new_modules=new_modules,
        task_runs=sum(n for k, n in watch.calls.items() if k.startswith("outer:")),
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def comparable(value: Any) -> Any:
    """NaN equals NaN here (an undefined metric is undefined on both sides)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def differences(checks: list[tuple[str, Any, Any]]) -> list[str]:
    return [f"{name} differ: {a} vs {b}" for name, a, b in checks if comparable(a) != comparable(b)]


def same_training(reference: RunResult, run: RunResult) -> list[str]:
    """Every way a run's training differs from the reference run's (empty: identical work)."""
    return differences(
        [
            ("trial losses", reference.trial_losses, run.trial_losses),
            ("best params", reference.best_params, run.best_params),
            ("best iteration", reference.best_iteration, run.best_iteration),
            ("test metrics", reference.test_metrics, run.test_metrics),
            ("model sha256", reference.model_sha256, run.model_sha256),
        ]
    )


def same_governance(bare: RunResult, flow: RunResult) -> list[str]:
    """Every way a pair's holdout scores, gates and decision differ (they depend on the
    champion each side held at the time, so runs are compared pair by pair)."""
    return differences(
        [
            ("holdout metrics", bare.holdout_metrics, flow.holdout_metrics),
            ("holdout fairness", bare.holdout_fairness, flow.holdout_fairness),
            ("gate results", bare.gates, flow.gates),
            ("gate reasons", bare.reasons, flow.reasons),
            ("decision", bare.decision, flow.decision),
        ]
    )


def fmt(seconds: float) -> str:
    return f"{seconds:7.2f} s"


def med(values: list[float]) -> float:
    return statistics.median(values)


def accounted_overhead(bare: RunResult, flow: RunResult) -> float:
    """Seconds the flow spends on machinery rather than on the maths both sides share.

    Prefect's share of every task call, the flow's time outside its tasks, every other stage
    beyond what the paired bare run needs for it (the bare side's holdout work depends on the
    champion it held, like the flow's), and the MLflow trial runs. Trial runs count even when a
    background thread writes them during the next trial: XGBoost already uses every core and
    its Python boosting loop needs the GIL every round, so that work does not overlap for free
    (measured: it slowed the tuning loop more than writing inline did). None of it is XGBoost,
    so CPU contention inflates it far less than the totals.
    """
    total = flow.start_finish + flow.inner[TRIAL_RUNS]
    for stage in FLOW_STAGES:
        if stage.label in SAME_MATHS:
            total += flow.stages[stage.label] - flow.inner[stage.label]  # Prefect's share only
        else:
            total += flow.stages[stage.label] - bare.stages[stage.label]
    return total


def print_run(label: str, run: RunResult, bare: RunResult | None = None) -> None:
    pair = f"   pair ratio {run.seconds / bare.seconds:.3f}x" if bare else ""
    print(
        f"{label}  {fmt(run.seconds)}  (cpu {run.cpu_seconds:6.1f} s, "
        f"load avg {run.load:4.2f}, {run.decision}){pair}",
        flush=True,
    )


def print_breakdown(bare_runs: list[RunResult], flow_runs: list[RunResult]) -> None:
    print("\nbreakdown by stage (medians; 'task call' = our code + Prefect's task bookkeeping)")
    print(
        f"{'stage':<19}{'bare':>9}{'task call':>11}{'our code':>10}{'Prefect':>9}"
        f"{'flow-bare':>11}   bare side does"
    )
    for stage in FLOW_STAGES:
        label = stage.label
        b = med([r.stages[label] for r in bare_runs])
        outer = med([r.stages[label] for r in flow_runs])
        inner = med([r.inner[label] for r in flow_runs])
        print(
            f"{label:<19}{fmt(b):>9}{fmt(outer):>11}{fmt(inner):>10}"
            f"{fmt(outer - inner):>9}{fmt(outer - b):>11}   {stage.bare_does}"
        )
    sf = med([r.start_finish for r in flow_runs])
    print(f"{'outside the tasks':<19}{'-':>9}{fmt(sf):>11}{'':>19}{fmt(sf):>11}   -")
    b_total, f_total = med([r.seconds for r in bare_runs]), med([r.seconds for r in flow_runs])
    print(f"{'total':<19}{fmt(b_total):>9}{fmt(f_total):>11}{'':>19}{fmt(f_total - b_total):>11}")
    shares = [sum(r.stages[st.label] - r.inner[st.label] for st in FLOW_STAGES) for r in flow_runs]
    runs = int(med([float(r.task_runs) for r in flow_runs]))
    print(
        f"Prefect's task bookkeeping: {runs} task runs, {fmt(med(shares)).strip()} in all "
        f"({med(shares) / max(runs, 1) * 1000:.0f} ms each)"
    )

    print("\ncalls inside the flow's tasks (medians):")
    for _, _, label in [*INNER_CALLS, ("", "", RESULTS)]:
        secs = med([r.inner[label] for r in flow_runs])
        calls = int(med([r.calls[label] for r in flow_runs]))
        per = f"  = {secs / calls * 1000:6.1f} ms each" if calls else ""
        where = ""
        if label == TRIAL_RUNS and not all(r.trial_writes_inline for r in flow_runs):
            where = "  (on a background thread)"
        print(f"  {label:<36}{fmt(secs)}  {calls:3d} call(s){per}{where}")


def print_outside(flow_runs: list[RunResult]) -> None:
    """Where the flow's time outside its task calls goes: the engine before and after the
    body, and our plain calls inside the body between tasks."""

    def value(label: str) -> float:
        return med([r.outside[label] for r in flow_runs])

    def row(label: str, seconds: float, indent: int) -> None:
        print(f"{' ' * indent}{label:<{58 - indent}}{fmt(seconds)}")

    create, begin, success = (label for _, label in ENGINE_CALLS)
    client, context = (label for _, label in ENGINE_CONTEXTS)
    total = value("before body") + value("body outside tasks") + value("after body")
    print(f"\nthe flow outside its task calls (medians): {fmt(total).strip()}")

    before = value("before body")
    row("engine, before the body", before, 2)
    parts = {
        f"{client}: enter (Prefect client, the run's context)": value(f"{client}: enter"),
        begin: value(begin),
        f"{context}: enter (read flow run, task runner, logger)": value(f"{context}: enter"),
        f"{HEARTBEATS}: start": value(f"{HEARTBEATS}: enter"),
    }
    for label, seconds in parts.items():
        row(label, seconds, 4)
        if label.startswith(client):
            row(f"of which {create}", value(create), 6)
    row("other: Flow.__call__, parameter binding, engine set-up", before - sum(parts.values()), 4)

    inside = value("body outside tasks")
    row("flow body, between task calls", inside, 2)
    parts = {SPEC_RESOLVE: value(SPEC_RESOLVE)}
    parts |= {label: value(label) for _, _, label, _ in BODY_CALLS}
    for label, seconds in parts.items():
        row(label, seconds, 4)
    row("other: flow_run.get_id, the lines between calls", inside - sum(parts.values()), 4)

    after = value("after body")
    row("engine, after the body", after, 2)
    parts = {
        success: value(success),
        f"{HEARTBEATS}: stop and join": value(f"{HEARTBEATS}: exit"),
        f"{context}: exit": value(f"{context}: exit"),
        f"{client}: exit ('Finished' log, client closed)": value(f"{client}: exit"),
    }
    for label, seconds in parts.items():
        row(label, seconds, 4)
    row("other: engine.result(), return to the caller", after - sum(parts.values()), 4)

    print_calls(
        "Prefect API requests during a flow run (medians; async = the engine's awaited\n"
        "calls and the background log/event workers, which overlap the rest)",
        [r.api for r in flow_runs],
    )
    print_calls(
        "MLflow client calls during a flow run (medians; a method that calls another\n"
        "nests its time)",
        [r.mlflow for r in flow_runs],
    )
    modules = int(med([float(r.new_modules) for r in flow_runs]))
    print(f"modules imported during a measured flow run: {modules}")


def print_calls(title: str, per_run: list[dict[str, tuple[int, float]]]) -> None:
    """One row per endpoint or method: median calls and seconds per run, slowest first."""
    print(f"\n{title}")
    rows = []
    for k in sorted({k for calls in per_run for k in calls}):
        count = med([float(calls.get(k, (0, 0.0))[0]) for calls in per_run])
        secs = med([calls.get(k, (0, 0.0))[1] for calls in per_run])
        rows.append((secs, count, k))
    for secs, count, k in sorted(rows, reverse=True):
        print(f"  {k:<62}{count:4.0f} x {fmt(secs)}")
    total_calls, total_secs = sum(c for _, c, _ in rows), sum(s for s, _, _ in rows)
    print(f"  {'total':<62}{total_calls:4.0f} x {fmt(total_secs)}")


def print_same_work(bare_runs: list[RunResult], flow_runs: list[RunResult], cfg: Any) -> bool:
    """Prints the check; True when both sides did identical work."""
    print("\nsame work check (training: every run against the first bare run; governance: pair")
    print("by pair, warm-up included):")
    reference = bare_runs[1]  # the first measured bare run (index 0 is the warm-up)
    problems = [d for r in bare_runs[1:] + flow_runs[1:] for d in same_training(reference, r)]
    problems += [
        d for b, f in zip(bare_runs, flow_runs, strict=True) for d in same_governance(b, f)
    ]
    problems = list(dict.fromkeys(problems))
    primary = cfg.promotion.primary_metric
    print(f"  trials per run   {len(reference.trial_losses)}")
    print(f"  best params      {reference.best_params}")
    print(f"  best iteration   {reference.best_iteration} ({reference.best_iteration + 1} trees)")
    print(f"  test {primary:<11} {reference.test_metrics[primary]:.6f}")
    print(f"  model sha256     {reference.model_sha256}")
    print(f"  decisions        {[r.decision for r in bare_runs]} (warm-up first)")
    for reason in dict.fromkeys(x for r in bare_runs for x in r.reasons):
        print(f"    rejected: {reason}")
    if problems:
        print("  MISMATCH:\n    " + "\n    ".join(problems))
        return False
    print(
        "  identical trial losses, best params, trees, test metrics, model bytes, holdout "
        "metrics,\n  fairness, gate results and decisions: OK"
    )
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="heart_disease")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="measured (bare, flow) pairs")
    parser.add_argument(
        "--heartbeat-seconds",
        type=int,
        default=PLATFORM_HEARTBEAT_SECONDS,
        help="seconds between Prefect flow-run heartbeats (at least 30, Prefect's minimum)",
    )
    args = parser.parse_args(argv)
    for name in ("rows", "trials", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if args.heartbeat_seconds < 30:
        parser.error(
            f"--heartbeat-seconds must be at least 30, Prefect's minimum "
            f"(got {args.heartbeat_seconds})"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="mlsteward-bench-")
    root = Path(tmp.name)
    set_environment(root, args.heartbeat_seconds)
    quiet_library_chatter()

    from mlsteward.config.models import get_model_config
    from mlsteward.data.builtin import builtin
    from mlsteward.data.ingestion import ingest
    from mlsteward.data.synthetic import write_dataset
    from mlsteward.features.repo import apply_model

    cfg = get_model_config(args.model)
    if cfg.promotion.policy != "auto":
        print(
            f"{args.model}: promotion.policy is {cfg.promotion.policy!r}; the benchmark needs "
            "'auto' (a manual policy would pause the flow for an approval)",
            file=sys.stderr,
        )
        return 2
    beside = [c.name for c in cfg.attribute_columns]
    print(
        f"training overhead, {cfg.name} ({cfg.task}, {cfg.tuning.objective}): {args.rows} rows x "
        f"{len(cfg.feature_names)} features{f' (+ {beside} for fairness)' if beside else ''}, "
        f"{args.trials} trials, {args.repeats} measured pair(s); heartbeats every "
        f"{args.heartbeat_seconds} s; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start"
    )
    t = time.perf_counter()
    cohort = builtin(cfg.name).generate_cohort(n_rows=args.rows, seed=0)
    source = write_dataset(cohort, root / f"{cfg.name}.parquet")
    print(f"generate + write cohort  {fmt(time.perf_counter() - t)}   (excluded)")
    t = time.perf_counter()
    snap = ingest(cfg, source, publish=apply_model).snapshot
    print(
        f"ingest                   {fmt(time.perf_counter() - t)}   (excluded; {snap.rows} rows: "
        "contract, snapshot, feast apply)"
    )
    inputs = BareInputs(cfg, snap.path, snap.feature_dtypes, snap.timestamp_assigned, root)
    registry = BareRegistry()

    from prefect.testing.utilities import prefect_test_harness

    t = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        print(f"prefect harness start-up {fmt(time.perf_counter() - t)}   (excluded)")
        watch = Stopwatch()
        instrument_flow(watch)

        t = time.perf_counter()
        flow_runs = [flow_run(cfg, 1, watch)]
        bare_runs = [bare_run(inputs, 1, registry)]
        print(f"warm-up, 1 trial each    {fmt(time.perf_counter() - t)}   (excluded)")
        if flow_runs[0].decision != "promoted":
            print(
                "the warm-up's version failed its gates: the first measured run has no "
                "champion, later ones are compared with the versions before them"
            )
        print()

        for i in range(1, args.repeats + 1):
            bare_runs.append(bare_run(inputs, args.trials, registry))
            print_run(f"run {i} bare", bare_runs[-1])
            flow_runs.append(flow_run(cfg, args.trials, watch))
            print_run(f"run {i} flow", flow_runs[-1], bare_runs[-1])
            if flow_runs[0].decision == "promoted":
                restore_first_champion(cfg, flow_runs[-1], registry)

    measured_bare, measured_flow = bare_runs[1:], flow_runs[1:]
    bare_med = med([r.seconds for r in measured_bare])
    flow_med = med([r.seconds for r in measured_flow])
    bare_min = min(r.seconds for r in measured_bare)
    flow_min = min(r.seconds for r in measured_flow)
    pairs = list(zip(measured_bare, measured_flow, strict=True))
    overhead = med([accounted_overhead(b, f) for b, f in pairs])
    ratio = flow_med / bare_med
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"\nmedian bare {fmt(bare_med)}   median flow {fmt(flow_med)}")
    print(f"ratio flow/bare, medians          {ratio:.3f}x  (target <= {TARGET_RATIO}x: {verdict})")
    print(f"ratio flow/bare, fastest runs     {flow_min / bare_min:.3f}x")
    print(
        f"overhead the timers account for   {fmt(overhead)}  -> "
        f"(fastest bare + overhead) / fastest bare = {(bare_min + overhead) / bare_min:.3f}x"
    )

    print_breakdown(measured_bare, measured_flow)
    print_outside(measured_flow)
    identical = print_same_work(bare_runs, flow_runs, cfg)
    print(
        f"\nload average {os.getloadavg()[0]:.2f} at end; {os.cpu_count()} cores shared with "
        "other work, so totals are noisy: compare pair ratios, fastest runs and the accounted "
        "overhead"
    )
    tmp.cleanup()
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

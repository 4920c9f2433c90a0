"""What does the governed training flow cost on top of the tuning it wraps?

Prints wall-clock figures for the same Hyperopt TPE + XGBoost work done two ways, in one
process, on one data set:

* **flow** -- ``flows.training.training_flow`` under a real Prefect API (``prefect_test_harness``),
  MLflow on SQLite in a temporary ``MLSTEWARD_HOME`` (every trial a nested run), the training set
  retrieved point-in-time through the Feast feature service, the model registered with lineage.
* **bare** -- a plain script with the same maths and nothing else: the snapshot parquet read
  directly, then the very functions the tasks wrap (``mlsteward.training.fitting``: ``time_split``,
  ``make_encoding``/``encode``, ``make_dmatrix``, ``tune``, ``fit_final``, ``choose_threshold``,
  ``evaluate``) and the refit model saved to a local ``.ubj``.

Why it is built this way:

* Same process, same data, same search space, seed and early stopping, so the only difference
  is the Prefect/MLflow/Feast machinery. The bare side must not do *less* work: the script
  checks that both sides ran identical trials (same per-trial losses and trees, same best
  params, same test metrics, byte-identical model) and prints that check. XGBoost with
  ``tree_method=hist`` and a fixed seed is deterministic (DESIGN.md §5), so any mismatch means the
  two sides trained on different inputs and the timing comparison would be meaningless.
* One-off costs are excluded and printed apart: the Prefect harness start-up (15-19 s, paid
  once per process), ingestion (contract check, snapshot, ``feast apply``; both sides read its
  snapshot), and first-call costs (imports, MLflow schema creation, Feast registry load,
  Prefect client set-up) through one warm-up run of each side with a single trial.
* Measured runs alternate bare, flow, bare, flow, ... so slow drift on a shared machine hits
  both sides alike; the ratio asked for is of the medians.
* Contention: XGBoost uses every core (``nthread=0``) and its threads meet at a barrier many
  times per boosting round, so another process taking one of two cores can make the same
  trials take 2-10x longer (measured while writing this). That noise is the same size as
  everything we want to see, so two figures less exposed to it are printed too: the ratio of
  the fastest runs (contention only ever adds time), and an estimate built from the overhead the
  timers *account for* (the machinery's own calls, not the XGBoost maths) added to the fastest
  bare run.
* The flow's time is split by stage with simple timers: around each task call in the flow
  (``task call``: includes Prefect's task-run bookkeeping) and around each task's own function
  (``our code``), plus the adapter calls inside them (MLflow trial runs, the Feast join, each
  registration step). ``task call - our code`` is Prefect's per-task cost; the flow's wall time
  minus all task calls is the flow run's own start/finish cost. A timer costs microseconds.
* Prefect's console handler is set to WARNING so the per-trial log lines do not flood the
  output; they are still shipped to the API (that cost stays in the measurement). Library
  warnings are hidden for the same reason.

Run: ``.venv/bin/python benchmarks/training_overhead.py [--rows N] [--trials N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "heart_disease"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.10

# Flow stages: label -> the flow's task names that make it up (as called in flows/training.py),
# and what the bare script does for the same stage.
FLOW_STAGES: list[tuple[str, tuple[str, ...], str]] = [
    ("data", ("resolve_snapshot", "retrieve_training_set"), "read snapshot parquet"),
    ("prepare", ("prepare_data",), "split + encode"),
    ("tune", ("tune_hyperparameters",), "DMatrix + tune()"),
    ("fit+evaluate", ("fit_and_evaluate",), "refit, threshold, metrics"),
    (
        "save/register",
        ("open_training_run", "register_model", "close_training_run"),
        "save_model(.ubj)",
    ),
    ("publish artifacts", ("publish_run_artifacts",), "-"),
]
# Stages where both sides run the same maths: their difference is noise plus Prefect's share.
SAME_MATHS = ("prepare", "tune", "fit+evaluate")

TRIAL_RUNS = "mlflow trial runs"
# Calls inside the tasks, timed where the tasks look them up: (module, attribute, label).
INNER_CALLS: list[tuple[str, str, str]] = [
    ("tasks.features", "get_training_frame", "feast get_historical_features"),
    ("mlsteward.governance.mlflow_adapter", "log_nested_run", "mlflow trial runs"),
    ("mlsteward.governance.mlflow_adapter", "start_run", "mlflow start_run"),
    ("tasks.registry", "make_lineage", "lineage (git, lock hash, versions)"),
    ("mlsteward.governance.mlflow_adapter", "log_params_metrics", "mlflow log params+metrics"),
    ("mlsteward.governance.mlflow_adapter", "set_run_tags", "mlflow lineage tags"),
    (
        "mlsteward.governance.mlflow_adapter",
        "log_training_input",
        "mlflow log_input (training set)",
    ),
    ("mlsteward.governance.mlflow_adapter", "log_frame_artifact", "mlflow holdout predictions"),
    ("mlsteward.governance.mlflow_adapter", "log_dict_artifact", "mlflow json artifacts"),
    ("mlsteward.governance.mlflow_adapter", "log_and_register", "mlflow log_model + register"),
    ("mlsteward.governance.mlflow_adapter", "end_run", "mlflow end_run"),
]


def set_environment(root: Path) -> None:
    """Isolate every store under a temp dir; must run before prefect/mlflow are imported."""
    os.environ["MLSTEWARD_HOME"] = str(root / "mlsteward_home")
    os.environ["PREFECT_HOME"] = str(root / "prefect_home")
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["FEAST_USAGE"] = "False"
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
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


# --------------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------------


def process_cpu() -> float:
    """User + system CPU seconds of this process (all its threads; not the API server's)."""
    t = os.times()
    return t.user + t.system


@dataclass
class Stopwatch:
    """Accumulates seconds and call counts per key; reset before each measured run."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    threads: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.threads.clear()

    def wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.threads[key].add(threading.get_ident())
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1

        return timed


def instrument_flow(watch: Stopwatch) -> None:
    """Time each task call in the flow (outer), each task's own function (inner), and the
    adapter calls inside the tasks.

    The flow looks its tasks up in its module's globals at call time, so replacing them there
    times the whole Prefect task call; ``Task.fn`` is what Prefect's engine finally calls, so
    wrapping it times our code alone. Tasks reach adapters as ``module.function``, so patching
    the module attribute times every call.
    """
    import importlib

    import flows.training as flow_module

    for _, names, _ in FLOW_STAGES:
        for name in names:
            task = getattr(flow_module, name)
            task.fn = watch.wrap(f"inner:{name}", task.fn)
            setattr(flow_module, name, watch.wrap(f"outer:{name}", task))
    for module_name, attr, label in INNER_CALLS:
        module = importlib.import_module(module_name)
        setattr(module, attr, watch.wrap(label, getattr(module, attr)))


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
    inner: dict[str, float] = field(default_factory=dict)
    calls: dict[str, float] = field(default_factory=dict)
    start_finish: float = 0.0
    trial_writes_inline: bool = True


def bare_run(snapshot_path: str, dtypes: dict[str, str], trials: int, out_dir: Path) -> RunResult:
    """The same maths as the flow with no orchestration, tracking or feature store."""
    import numpy as np
    import pandas as pd

    from mlsteward.config.models import get_model_config
    from mlsteward.features.encoding import encode, make_encoding
    from mlsteward.training.fitting import (
        fit_final,
        make_dmatrix,
        time_split,
        tune,
    )
    from mlsteward.training.metrics import choose_threshold, evaluate

    stages: dict[str, float] = {}
    cpu0 = process_cpu()
    t0 = time.perf_counter()
    cfg = get_model_config(MODEL)
    cols = [cfg.source.entity, cfg.timestamp_column, cfg.label, *cfg.feature_names]
    frame = pd.read_parquet(snapshot_path, columns=cols)
    frame.insert(0, "row_id", np.arange(len(frame), dtype="int64"))
    t1 = time.perf_counter()
    stages["data"] = t1 - t0

    split = time_split(frame, cfg.timestamp_column, cfg.split.train, cfg.split.validation)
    enc = make_encoding(cfg, dtypes, split.train)
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
    val_proba = model.predict_proba(x_val)[:, 1]
    dt = cfg.decision_threshold
    threshold = choose_threshold(y_val.to_numpy(), val_proba, dt.strategy, dt.value)
    test_metrics = evaluate(y_test.to_numpy(), model.predict_proba(x_test)[:, 1], threshold)
    t4 = time.perf_counter()
    stages["fit+evaluate"] = t4 - t3

    path = out_dir / "model.ubj"
    model.save_model(path)
    t5 = time.perf_counter()
    stages["save/register"] = t5 - t4
    stages["publish artifacts"] = 0.0
    return RunResult(
        seconds=t5 - t0,
        cpu_seconds=process_cpu() - cpu0,
        load=os.getloadavg()[0],
        stages=stages,
        best_params=result.best_params,
        best_iteration=result.best_iteration,
        trial_losses=[t.loss for t in result.trials],
        test_metrics=test_metrics,
        model_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def flow_run(trials: int, watch: Stopwatch) -> RunResult:
    """The full training flow; stage times come from the timers ``instrument_flow`` installed."""
    import mlflow

    from flows.training import training_flow
    from mlsteward.governance import mlflow_adapter

    watch.reset()
    cpu0 = process_cpu()
    start = time.perf_counter()
    outcome = training_flow(model=MODEL, max_evals=trials)
    seconds = time.perf_counter() - start
    cpu_seconds = process_cpu() - cpu0

    stages = {
        label: sum(watch.seconds[f"outer:{n}"] for n in names) for label, names, _ in FLOW_STAGES
    }
    inner = {
        label: sum(watch.seconds[f"inner:{n}"] for n in names) for label, names, _ in FLOW_STAGES
    }
    inner |= {label: watch.seconds[label] for _, _, label in INNER_CALLS}
    calls = {label: float(watch.calls[label]) for _, _, label in INNER_CALLS}

    # What the flow recorded, read back from MLflow: every trial's loss and the refit's trees.
    mlflow_adapter.client()
    children = mlflow.search_runs(
        experiment_names=[MODEL],
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
        inner=inner,
        calls=calls,
        start_finish=seconds - sum(stages.values()),
        # Were trial runs written on the tuning task's own thread, or on another one?
        trial_writes_inline=watch.threads[TRIAL_RUNS]
        <= watch.threads["inner:tune_hyperparameters"],
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def same_work(bare: RunResult, flow: RunResult) -> list[str]:
    """Every way the two sides' results differ (empty: they did identical work)."""
    checks = [
        ("trial losses", bare.trial_losses, flow.trial_losses),
        ("best params", bare.best_params, flow.best_params),
        ("best iteration", bare.best_iteration, flow.best_iteration),
        ("test metrics", bare.test_metrics, flow.test_metrics),
        ("model sha256", bare.model_sha256, flow.model_sha256),
    ]
    return [f"{name} differ: {a} vs {b}" for name, a, b in checks if a != b]


def fmt(seconds: float) -> str:
    return f"{seconds:7.2f} s"


def med(values: list[float]) -> float:
    return statistics.median(values)


def accounted_overhead(bare_runs: list[RunResult], flow: RunResult) -> float:
    """Seconds the flow spends on machinery rather than on the maths both sides share.

    Prefect's share of every task call, the flow run's start/finish, the data and
    save/register/publish stages beyond what the bare script needs for them, and the MLflow
    trial runs. Trial runs count even when a background thread writes them during the next
    trial: XGBoost already uses every core and its Python boosting loop needs the GIL every
    round, so that work does not overlap for free (measured: it slowed the tuning loop more
    than writing inline did). None of it is XGBoost, so CPU contention inflates it far less
    than the totals.
    """
    total = flow.start_finish + flow.inner[TRIAL_RUNS]
    for label, _, _ in FLOW_STAGES:
        if label in SAME_MATHS:
            total += flow.stages[label] - flow.inner[label]  # Prefect's share only
        else:
            total += flow.stages[label] - med([b.stages[label] for b in bare_runs])
    return total


def print_run(label: str, run: RunResult, bare: RunResult | None = None) -> None:
    pair = f"   pair ratio {run.seconds / bare.seconds:.3f}x" if bare else ""
    print(
        f"{label}  {fmt(run.seconds)}  (cpu {run.cpu_seconds:6.1f} s, "
        f"load avg {run.load:4.2f}){pair}",
        flush=True,
    )


def print_breakdown(bare_runs: list[RunResult], flow_runs: list[RunResult]) -> None:
    print("\nbreakdown by stage (medians; 'task call' = our code + Prefect's task bookkeeping)")
    print(
        f"{'stage':<19}{'bare':>9}{'task call':>11}{'our code':>10}{'Prefect':>9}"
        f"{'flow-bare':>11}   bare side does"
    )
    for label, _, bare_does in FLOW_STAGES:
        b = med([r.stages[label] for r in bare_runs])
        outer = med([r.stages[label] for r in flow_runs])
        inner = med([r.inner[label] for r in flow_runs])
        print(
            f"{label:<19}{fmt(b):>9}{fmt(outer):>11}{fmt(inner):>10}"
            f"{fmt(outer - inner):>9}{fmt(outer - b):>11}   {bare_does}"
        )
    sf = med([r.start_finish for r in flow_runs])
    print(f"{'flow run start/end':<19}{'-':>9}{fmt(sf):>11}{'':>19}{fmt(sf):>11}   -")
    b_total, f_total = med([r.seconds for r in bare_runs]), med([r.seconds for r in flow_runs])
    print(f"{'total':<19}{fmt(b_total):>9}{fmt(f_total):>11}{'':>19}{fmt(f_total - b_total):>11}")

    print("\ncalls inside the flow's tasks (medians):")
    for _, _, label in INNER_CALLS:
        secs = med([r.inner[label] for r in flow_runs])
        calls = int(med([r.calls[label] for r in flow_runs]))
        per = f"  = {secs / calls * 1000:6.1f} ms each" if calls else ""
        where = ""
        if label == TRIAL_RUNS and not all(r.trial_writes_inline for r in flow_runs):
            where = "  (on a background thread)"
        print(f"  {label:<36}{fmt(secs)}  {calls:3d} call(s){per}{where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="measured (bare, flow) pairs")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="mlsteward-bench-")
    root = Path(tmp.name)
    set_environment(root)
    quiet_library_chatter()

    from mlsteward.config.models import get_model_config
    from mlsteward.data.ingestion import ingest
    from mlsteward.data.synthetic import generate_cohort, write_dataset
    from mlsteward.features.repo import apply_model

    cfg = get_model_config(MODEL)
    print(
        f"training overhead: {args.rows} rows x {len(cfg.feature_names)} features, "
        f"{args.trials} trials, {args.repeats} measured pair(s); "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start"
    )
    t = time.perf_counter()
    source = write_dataset(generate_cohort(n_rows=args.rows, seed=0), root / f"{MODEL}.parquet")
    print(f"generate + write cohort  {fmt(time.perf_counter() - t)}   (excluded)")
    t = time.perf_counter()
    snap = ingest(cfg, source, publish=apply_model).snapshot
    print(
        f"ingest                   {fmt(time.perf_counter() - t)}   (excluded; {snap.rows} rows: "
        "contract, snapshot, feast apply)"
    )

    from prefect.testing.utilities import prefect_test_harness

    t = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        print(f"prefect harness start-up {fmt(time.perf_counter() - t)}   (excluded)")
        watch = Stopwatch()
        instrument_flow(watch)

        t = time.perf_counter()
        flow_run(1, watch)
        bare_run(snap.path, snap.feature_dtypes, 1, root)
        print(f"warm-up, 1 trial each    {fmt(time.perf_counter() - t)}   (excluded)\n")

        bare_runs: list[RunResult] = []
        flow_runs: list[RunResult] = []
        for i in range(1, args.repeats + 1):
            bare_runs.append(bare_run(snap.path, snap.feature_dtypes, args.trials, root))
            print_run(f"run {i} bare", bare_runs[-1])
            flow_runs.append(flow_run(args.trials, watch))
            print_run(f"run {i} flow", flow_runs[-1], bare_runs[-1])

    bare_med, flow_med = med([r.seconds for r in bare_runs]), med([r.seconds for r in flow_runs])
    bare_min, flow_min = min(r.seconds for r in bare_runs), min(r.seconds for r in flow_runs)
    overhead = med([accounted_overhead(bare_runs, r) for r in flow_runs])
    ratio = flow_med / bare_med
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"\nmedian bare {fmt(bare_med)}   median flow {fmt(flow_med)}")
    print(f"ratio flow/bare, medians          {ratio:.3f}x  (target <= {TARGET_RATIO}x: {verdict})")
    print(f"ratio flow/bare, fastest runs     {flow_min / bare_min:.3f}x")
    print(
        f"overhead the timers account for   {fmt(overhead)}  -> "
        f"(fastest bare + overhead) / fastest bare = {(bare_min + overhead) / bare_min:.3f}x"
    )

    print_breakdown(bare_runs, flow_runs)

    print("\nsame work check (every run against the first bare run):")
    reference = bare_runs[0]
    problems = list(
        dict.fromkeys(d for r in bare_runs + flow_runs for d in same_work(reference, r))
    )
    print(f"  trials per run   {len(reference.trial_losses)}")
    print(f"  best params      {reference.best_params}")
    print(f"  best iteration   {reference.best_iteration} ({reference.best_iteration + 1} trees)")
    print(f"  test ROC-AUC     {reference.test_metrics['roc_auc']:.6f}")
    print(f"  model sha256     {reference.model_sha256}")
    if problems:
        print("  MISMATCH:\n    " + "\n    ".join(problems))
    else:
        print("  identical trial losses, best params, trees, test metrics and model bytes: OK")
    print(
        f"\nload average {os.getloadavg()[0]:.2f} at end; {os.cpu_count()} cores shared with "
        "other work, so totals are noisy: compare pair ratios, fastest runs and the accounted "
        "overhead"
    )
    tmp.cleanup()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

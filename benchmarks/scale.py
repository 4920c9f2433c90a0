"""Scale figures: Hyperopt trials in parallel batches (section 1), online lookup latency on
Redis against SQLite (section 2, ``benchmarks/online_stores.py``).

Section 1 -- parallel tuning. The same 60-trial Hyperopt TPE search (seed 42, the demo model's
search space and early stopping) on the built-in cohort at 200k rows, run through the training
flow's own tuning step under a real Prefect API (``prefect_test_harness``), every trial logged to
MLflow (SQLite in a temporary ``MLSTEWARD_HOME``) as in production:

* **sequential** -- the default: one ``tune-hyperparameters`` task, trials one after another,
  XGBoost on all cores (``nthread=0``). Printed also with ``nthread=1``, the per-trial speed the
  parallel runners start from, so the speedup is not flattered by a weak baseline.
* **threads** -- ``tuning.parallel.runner: threads``: a ``tune-trials`` subflow on Prefect's
  ``ThreadPoolTaskRunner``, 2 workers, each trial's XGBoost capped at 1 thread.
* **dask** -- the same subflow on ``DaskTaskRunner`` with a ``LocalCluster`` of 2 single-threaded
  worker processes; the training matrices go to the cluster once (``stage-training-data``), and
  each worker builds its DMatrix pair once. Cluster start-up is inside the measured time.

Why it is built this way: the parallel runs use batches (TPE needs B suggestions before any
result; DESIGN.md §5), so they do not run the *same* trials as the sequential search. Their
best loss is printed next to the sequential one with the spread of the sequential search's
late trials as a noise yardstick, and the script checks (and prints) that the threads and Dask
runs with the same batch size ran identical trials -- the runner must never change a result.
Benchmarks print; they assert nothing.

Run: ``.venv/bin/python benchmarks/scale.py [--rows 200000] [--trials 60] [--batch 4]
[--only sequential,sequential-1,threads,dask]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "heart_disease"
TARGET_SPEEDUP = 1.7


# ============================================================================================
# Section 1: Hyperopt trials in parallel batches
# ============================================================================================


@dataclass
class Run:
    label: str
    seconds: float
    best_loss: float
    losses: list[float]
    params: list[dict[str, Any]]
    detail: str


def prepared_data(rows: int, seed: int) -> Any:
    """The training path's own split and encoding, on the synthetic cohort."""
    from mlsteward.config.models import get_model_config
    from mlsteward.data.contract import infer_dtype
    from mlsteward.data.synthetic import generate_cohort
    from mlsteward.training.prepared import prepare_frame

    cfg = get_model_config(MODEL)
    frame = generate_cohort(n_rows=rows, seed=seed)
    frame["row_id"] = range(len(frame))
    dtypes = {f.name: f.dtype or infer_dtype(frame[f.name]) for f in cfg.features}
    return cfg, prepare_frame(cfg, frame, dtypes)


def run_tuning(label: str, cfg: Any, data: Any, trials: int, tuning: dict[str, Any]) -> Run:
    """One search through the training flow's tuning step (``flows.training.tune_model``)."""
    from prefect import flow

    from flows.training import tune_model
    from mlsteward.governance import mlflow_adapter
    from mlsteward.training.spec import TrainingSpec

    cfg = cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update=tuning)})

    @flow(name=f"scale-{label}")
    def bench() -> Any:
        run_id = mlflow_adapter.start_run(MODEL, f"scale-{label}", tags={})
        return tune_model(TrainingSpec.resolve(cfg, max_evals=trials), data, run_id)

    t0 = time.perf_counter()
    result = bench()
    seconds = time.perf_counter() - t0
    detail = f"runner={result.runner} batch={result.batch_size} nthread/trial="
    detail += f"{result.trial_nthread or 'all'}"
    return Run(
        label,
        seconds,
        result.best_loss,
        [t.loss for t in result.trials],
        [t.params for t in result.trials],
        detail,
    )


def section_parallel_tuning(args: argparse.Namespace) -> None:
    from mlsteward.config.sections.training import ParallelTuning

    print(f"\n=== Section 1: {args.trials} Hyperopt trials on {args.rows:,} rows ===")
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    t0 = time.perf_counter()
    cfg, data = prepared_data(args.rows, seed=0)
    sizes = data.split.sizes()
    print(
        f"data: {sizes} ({len(data.encoding.columns)} features), {time.perf_counter() - t0:.1f} s"
    )
    from mlsteward.training.trials import TrialData

    shipped = len(pickle.dumps(TrialData.from_prepared(data), protocol=5))
    print(f"training matrices pickled: {shipped / 1e6:.1f} MB (what Dask ships once per search)")

    variants = {
        "sequential": {"nthread": 0},
        "sequential-1": {"nthread": 1},
        "threads": {"parallel": ParallelTuning(runner="threads", batch_size=args.batch, workers=2)},
        "dask": {"parallel": ParallelTuning(runner="dask", batch_size=args.batch, workers=2)},
    }
    warm = run_tuning("warm-up", cfg, data, 1, {})
    print(f"warm-up (first flow run, MLflow schema; 1 trial, not counted): {warm.seconds:.1f} s")
    runs: dict[str, Run] = {}
    for label in args.only:
        run = run_tuning(label, cfg, data, args.trials, variants[label])
        runs[label] = run
        print(
            f"  {label:<13} {run.seconds:7.1f} s  best loss {run.best_loss:.5f}  ({run.detail}; "
            f"1-min load average after: {os.getloadavg()[0]:.2f})"
        )

    print("\nresults")
    base = runs.get("sequential")
    print(f"  {'variant':<13} {'wall s':>8} {'speedup':>8} {'best loss':>10} {'Δ vs seq':>9}")
    for label, run in runs.items():
        speed = f"{base.seconds / run.seconds:7.2f}x" if base else "-"
        delta = f"{run.best_loss - base.best_loss:+.5f}" if base else "-"
        print(f"  {label:<13} {run.seconds:8.1f} {speed:>8} {run.best_loss:10.5f} {delta:>9}")
    if base:
        late = sorted(base.losses)[: max(3, len(base.losses) // 10)]
        print(
            f"  noise yardstick: the sequential search's best {len(late)} losses span "
            f"{late[-1] - late[0]:.5f} (sd {statistics.pstdev(late):.5f})"
        )
        for label in ("threads", "dask"):
            if label in runs:
                ok = base.seconds / runs[label].seconds >= TARGET_SPEEDUP
                print(
                    f"  {label}: speedup {base.seconds / runs[label].seconds:.2f}x against "
                    f"sequential on all cores (target >= {TARGET_SPEEDUP}x: "
                    f"{'met' if ok else 'NOT met'})"
                )
        if "sequential-1" in runs:
            for label in ("threads", "dask"):
                if label in runs:
                    ratio = runs["sequential-1"].seconds / runs[label].seconds
                    print(
                        f"  {label}: {ratio:.2f}x against sequential with nthread=1 "
                        f"(2 workers at 1 thread each: ideal 2x; the gap is batch imbalance "
                        "-- a batch waits for its slowest trial -- plus runner overhead)"
                    )
    if "threads" in runs and "dask" in runs:
        same = (runs["threads"].params, runs["threads"].losses) == (
            runs["dask"].params,
            runs["dask"].losses,
        )
        print(f"  threads and dask ran identical trials (same seed, batch {args.batch}): {same}")


# ============================================================================================
# Section 2: online lookup latency, Redis (production profile) vs SQLite (local profile); the
# measurement lives in benchmarks/online_stores.py, which also runs on its own.
# ============================================================================================


def section_online_lookup(args: argparse.Namespace) -> None:
    from benchmarks import online_stores

    print("\n== online lookups: Redis vs SQLite ==")
    online_stores.report(online_stores.measure(args.lookup_rows, args.lookups, batch=32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="tuning,online", help="comma list: tuning,online")
    parser.add_argument("--lookup-rows", type=int, default=30_000, help="cohort rows (online)")
    parser.add_argument("--lookups", type=int, default=3_000, help="timed lookups per store")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4, help="trials per parallel batch")
    parser.add_argument(
        "--only",
        default="sequential,sequential-1,threads,dask",
        help="tuning variants to run, in order",
    )
    args = parser.parse_args()
    args.only = [v for v in args.only.split(",") if v]
    sections = args.sections.split(",")

    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(PROJECT_ROOT))
    with tempfile.TemporaryDirectory(prefix="mlsteward-scale-") as tmp:
        os.environ["MLSTEWARD_HOME"] = str(Path(tmp) / "home")
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        os.environ.setdefault("MLSTEWARD_PROJECT_ROOT", str(PROJECT_ROOT))
        from prefect.testing.utilities import prefect_test_harness

        t0 = time.perf_counter()
        with prefect_test_harness(server_startup_timeout=120):
            print(f"Prefect test harness up in {time.perf_counter() - t0:.1f} s (not counted)")
            for name in ("prefect", "distributed"):
                logging.getLogger(name).setLevel(logging.WARNING)
            if "tuning" in sections:
                section_parallel_tuning(args)
    if "online" in sections:  # its own harness and home, after the tuning section's are gone
        section_online_lookup(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

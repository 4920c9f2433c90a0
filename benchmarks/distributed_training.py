"""Training in the flow process against ``xgboost.dask``: wall time and peak memory.

The same search (``--trials`` Hyperopt TPE trials, seed 42, the demo model's space and early
stopping) and refit on the built-in cohort at ``--rows`` rows, each variant in a fresh process
so its peak resident memory is its own:

* **in-process** -- the default path: the whole training frame in the flow process, split,
  encoded, XGBoost on all cores.
* **xgboost.dask** -- the path above ``distributed.above_rows``: the entity columns and the
  time split in the flow process, the rows joined chunk by chunk (``chunk_rows``) and staged as
  parquet partitions (``mlsteward.training.partitioned_set``), read and trained on a LocalCluster
  of 2
  single-threaded worker processes (``mlsteward.training.distributed``); cluster start-up and
  staging
  are inside the measured time.

The point-in-time join is replaced by reading the chunk's rows from the cohort file (written
with one row group per chunk): Feast's join is measured on its own in ``pit_join.py``; what is
measured here is where the training rows live. Memory is the peak RSS of the flow process
(``ru_maxrss``) and, for Dask, the peak of the worker processes' RSS summed. Benchmarks print;
they assert nothing.

Run: ``.venv/bin/python benchmarks/distributed_training.py [--rows 2000000] [--trials 8]
[--chunk-rows 250000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "heart_disease"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildMemory:
    """Peak RSS of this process's descendants (the Dask worker processes), sampled every
    0.1 s: a worker's own ``ru_maxrss`` leaves with it when its cluster closes."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            total = 0
            for proc in self._me.children(recursive=True):
                with contextlib.suppress(Exception):
                    total += proc.memory_info().rss
            self._peak_total = max(self._peak_total, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self._peak_total / 2**20


def model_config(trials: int, chunk_rows: int) -> Any:
    from mlsteward.config.models import get_model_config

    cfg = get_model_config(MODEL)
    return cfg.model_copy(
        update={
            "tuning": cfg.tuning.model_copy(update={"max_evals": trials}),
            "distributed": cfg.distributed.model_copy(
                update={"chunk_rows": chunk_rows, "workers": 2, "threads_per_worker": 1}
            ),
        }
    )


def snapshot_like(cfg: Any, path: Path) -> Any:
    """What the preparation reads from a snapshot record: declared dtypes, real event times."""
    import pandas as pd

    from mlsteward.data.contract import infer_dtype

    sample = pd.read_parquet(path).head(1_000)
    dtypes = {f.name: f.dtype or infer_dtype(sample[f.name]) for f in cfg.features}
    return SimpleNamespace(feature_dtypes=dtypes, timestamp_assigned=False)


def run_variant(variant: str, data_path: Path, trials: int, chunk_rows: int) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq

    from mlsteward.training.build import fit_evaluate, tune_prepared
    from mlsteward.training.partitioned_set import remove_partitions, staging_directory
    from mlsteward.training.prepared import prepare_frame, prepare_partitioned
    from mlsteward.training.spec import TrainingSpec

    cfg = model_config(trials, chunk_rows)
    snap = snapshot_like(cfg, data_path)
    phases: dict[str, float] = {}
    sampler = ChildMemory()
    t0 = time.perf_counter()
    if variant == "in-process":
        frame = pd.read_parquet(data_path)
        frame.insert(0, "row_id", range(len(frame)))
        data = prepare_frame(cfg, frame, snap.feature_dtypes)
        del frame
    else:
        entity_cols = [cfg.source.entity, cfg.timestamp_column, cfg.label]
        entities = pd.read_parquet(data_path, columns=entity_cols)
        entities.insert(0, "row_id", range(len(entities)))
        file = pq.ParquetFile(data_path)

        def retrieve(rows: pd.DataFrame) -> pd.DataFrame:
            group = int(rows["row_id"].iloc[0]) // chunk_rows
            chunk = file.read_row_group(group).to_pandas()
            chunk.insert(0, "row_id", rows["row_id"].to_numpy())
            return chunk

        staging = staging_directory(Path(tempfile.mkdtemp(prefix="mlsteward-bench-parts-")))
        data = prepare_partitioned(cfg, entities, retrieve, snap, staging)
    phases["prepare"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    spec = TrainingSpec.resolve(cfg, max_evals=trials)
    tuning = tune_prepared(spec, data)
    phases["tune"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    fitted = fit_evaluate(spec, data, tuning)
    phases["refit+evaluate"] = time.perf_counter() - t2
    sampler.stop()
    remove_partitions(data.train_partitions)
    return {
        "variant": variant,
        "seconds": time.perf_counter() - t0,
        "phases": phases,
        "flow_peak_mb": peak_mb(),
        "worker_peak_mb": sampler.peak_mb,
        "best_loss": tuning.best_loss,
        "test_roc_auc": fitted.test_metrics["roc_auc"],
        "split": data.split.sizes(),
        "runner": tuning.runner,
    }


def child(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLSTEWARD_HOME", tempfile.mkdtemp(prefix="mlsteward-bench-"))
    result = run_variant(args.variant, Path(args.data), args.trials, args.chunk_rows)
    print("RESULT " + json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)

    from mlsteward.data.synthetic import generate_cohort

    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-") as d:
        path = Path(d) / "cohort.parquet"
        frame = generate_cohort(n_rows=args.rows, seed=42)
        frame.to_parquet(path, index=False, row_group_size=args.chunk_rows)
        size_mb = frame.memory_usage(deep=True).sum() / 2**20
        del frame
        print(
            f"{args.rows:,} rows ({size_mb:,.0f} MB as a pandas frame), {args.trials} trials, "
            f"chunks of {args.chunk_rows:,}; {os.cpu_count()} cores"
        )
        results = []
        for variant in ("in-process", "xgboost.dask"):
            cmd = [sys.executable, __file__, "--variant", variant, "--data", str(path)]
            cmd += ["--trials", str(args.trials), "--chunk-rows", str(args.chunk_rows)]
            out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
            lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not lines:
                print(f"{variant} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
                return 1
            results.append(json.loads(lines[-1][len("RESULT ") :]))
    print(
        f"\n{'variant':<14} {'wall s':>8} {'prepare':>8} {'tune':>8} {'refit':>8} "
        f"{'flow peak MB':>13} {'workers peak MB':>16} {'best loss':>10} {'test AUC':>9}"
    )
    for r in results:
        p = r["phases"]
        workers = f"{r['worker_peak_mb']:,.0f}" if r["worker_peak_mb"] else "-"
        print(
            f"{r['variant']:<14} {r['seconds']:>8.1f} {p['prepare']:>8.1f} {p['tune']:>8.1f} "
            f"{p['refit+evaluate']:>8.1f} {r['flow_peak_mb']:>13,.0f} {workers:>16} "
            f"{r['best_loss']:>10.5f} {r['test_roc_auc']:>9.4f}"
        )
    base, dist = results
    print(
        f"\nflow-process peak memory: {dist['flow_peak_mb'] / base['flow_peak_mb']:.2f}x of "
        f"in-process; wall time {dist['seconds'] / base['seconds']:.2f}x "
        f"(split {base['split']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

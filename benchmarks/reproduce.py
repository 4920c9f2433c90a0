"""How long does proving a version cost, next to training it? `reproduce` vs the original run.

In a temporary ``MLSTEWARD_HOME``, the demo's data (``--rows`` rows of the built-in cohort) is
ingested and the demo model trained with its configured search (``tuning.max_evals`` trials);
then the version is reproduced by default (recorded params and seed) and with ``--full`` (the
whole Hyperopt search again). All three are timed in this one process as flow calls (the same
Prefect test harness, warm imports), so the ratios compare the work, not start-up. Each
reproduction must come out ``identical``; the script exits 1 otherwise.

Run: ``.venv/bin/python benchmarks/reproduce.py [--rows N] [--max-evals N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--max-evals", type=int, default=None, help="default: the config's")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-reproduce-") as tmp:
        os.environ["MLSTEWARD_HOME"] = str(Path(tmp) / "home")
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
        os.environ.pop("MLSTEWARD_AUDIT_URL", None)
        os.environ.pop("MLSTEWARD_SNAPSHOT_ROOT", None)
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True)
        from prefect.testing.utilities import prefect_test_harness

        from flows.ingestion import ingestion_flow
        from flows.reproduce import reproduce_flow
        from flows.training import training_flow
        from mlsteward.data.synthetic import generate_cohort, write_dataset

        source = write_dataset(generate_cohort(n_rows=args.rows, seed=0), Path(tmp) / "hd.parquet")
        with prefect_test_harness(server_startup_timeout=120):
            ingestion_flow(model="heart_disease", source=str(source))
            t0 = time.perf_counter()
            trained = training_flow(model="heart_disease", max_evals=args.max_evals)
            train_s = time.perf_counter() - t0
            timings, results = {}, {}
            for mode, full in (("default", False), ("--full", True)):
                t0 = time.perf_counter()
                report = reproduce_flow(model="heart_disease", version=trained.version, full=full)
                timings[mode] = time.perf_counter() - t0
                results[mode] = report
    print(
        f"heart_disease, {args.rows:,} rows, {trained.trials} Hyperopt trials "
        f"(training run in MLflow: {results['default'].original_training_seconds:.1f} s)"
    )
    print(f"  {'original training flow':<28} {train_s:7.1f} s   1.00x")
    for mode, seconds in timings.items():
        r = results[mode]
        steps = ", ".join(f"{s.name} {s.seconds:.1f}" for s in r.steps if s.seconds)
        print(
            f"  {'reproduce ' + mode:<28} {seconds:7.1f} s   {seconds / train_s:.2f}x   "
            f"{r.summary}   ({steps})"
        )
    return 0 if all(r.result == "identical" for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

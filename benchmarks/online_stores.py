"""Online feature lookups: Feast's Redis online store (production profile) against its SQLite
store (local profile), through the prediction service's own lookup (``OnlineFeatures.fetch``).

In a temporary ``MLSTEWARD_HOME`` a cohort (``--rows``) is ingested and materialized twice:
once on the local profile (SQLite file) and once on a throwaway production profile (this
machine's Redis and PostgreSQL, its own databases and Feast project, dropped at the end). Then
lookups of one id, and of ``--batch`` ids at once, are timed on both stores in alternating
blocks (so a change in the machine's load hits both), cycling through real entity ids; both
stores must return the same values. p50/p99 per store and the ratio Redis/SQLite are printed;
nothing is judged.

Run: ``.venv/bin/python benchmarks/online_stores.py [--rows 30000] [--lookups 3000]``; it is
also the second section of ``benchmarks/scale.py``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

MODEL = "heart_disease"
PG_URL = os.environ.get("MLSTEWARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MLSTEWARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _isolate(root: Path) -> None:
    os.environ.update(
        MLSTEWARD_HOME=str(root / "home"),
        PREFECT_HOME=str(root / "prefect"),
        MLSTEWARD_PROJECT_ROOT=str(PROJECT_ROOT),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        FEAST_USAGE="False",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
    )
    for var in ("MLSTEWARD_PROFILE", "MLFLOW_TRACKING_URI", "MLSTEWARD_AUDIT_URL",
                "MLSTEWARD_CONFIG_DIR"):  # fmt: skip
        os.environ.pop(var, None)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def _production_env(name: str) -> dict[str, str]:
    return {
        "MLSTEWARD_PROFILE": "production",
        "MLSTEWARD_POSTGRES_URL": PG_URL,
        "MLSTEWARD_REDIS_URL": REDIS_URL,
        "MLSTEWARD_DB_PREFIX": name,
        "MLSTEWARD_FEAST_PROJECT": name,
    }


def _fill(source: Path) -> Any:
    """Ingest and materialize on the active profile; the service's lookup over its store."""
    from feast import FeatureStore

    from flows.ingestion import ingestion_flow, materialize_flow
    from mlsteward.config.models import get_model_config
    from mlsteward.features.store import repo_config
    from mlsteward.serving.features import OnlineFeatures

    ingestion_flow(model=MODEL, source=str(source))
    materialize_flow(model=MODEL)
    cfg = get_model_config(MODEL)
    return OnlineFeatures(cfg, FeatureStore(config=repo_config()))


def _time(fetch: Any, batches: list[list[int]]) -> list[float]:
    out = []
    for ids in batches:
        t0 = time.perf_counter()
        fetch(ids)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def measure(rows: int, lookups: int, batch: int, blocks: int = 4) -> dict[str, Any]:
    """Set up both stores and time them; returns the figures (also printed)."""
    import warnings

    warnings.filterwarnings("ignore")
    from prefect.testing.utilities import prefect_test_harness

    from mlsteward.config import profiles
    from mlsteward.data.synthetic import generate_cohort, write_dataset
    from mlsteward.platform.provision import drop, provision

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-online-") as tmp:
        root = Path(tmp)
        _isolate(root)
        cohort = generate_cohort(n_rows=rows, seed=0)
        source = write_dataset(cohort, root / "cohort.parquet")
        ids = sorted({int(i) for i in cohort["patient_id"]})
        name = f"bench{secrets.token_hex(4)}"
        with prefect_test_harness(server_startup_timeout=120):
            sqlite = _fill(source)
            os.environ.update(_production_env(name))
            profile = profiles.active()
            provision(profile)
            try:
                redis = _fill(source)
                os.environ.pop("MLSTEWARD_PROFILE")
                sample = ids[:: max(1, len(ids) // 50)]
                assert sqlite.fetch(sample) == redis.fetch(sample), "the stores disagree"
                for label, size in (("1 id", 1), (f"{batch} ids", batch)):
                    per_block = max(1, lookups // blocks)
                    times: dict[str, list[float]] = {"sqlite": [], "redis": []}
                    for b in range(blocks):
                        batches = [
                            [ids[(b * per_block * size + i * size + k) % len(ids)]
                             for k in range(size)]
                            for i in range(per_block)
                        ]  # fmt: skip
                        order = (("sqlite", sqlite), ("redis", redis))
                        for store_name, store in order if b % 2 == 0 else order[::-1]:
                            _time(store.fetch, batches[:20])  # warm the path
                            times[store_name] += _time(store.fetch, batches)
                    results[label] = {
                        k: {"p50": _pct(v, 50), "p99": _pct(v, 99), "n": len(v)}
                        for k, v in times.items()
                    }
            finally:
                drop(profile)
        results["entities"] = len(ids)
    return results


def report(results: dict[str, Any]) -> None:
    print(f"online lookups through OnlineFeatures.fetch, {results['entities']:,} entities "
          "materialized in each store; alternating blocks")  # fmt: skip
    print(f"{'lookup':<9} {'store':<7} {'p50 ms':>8} {'p99 ms':>8} {'n':>6}")
    for label, by_store in results.items():
        if label == "entities":
            continue
        for store_name in ("sqlite", "redis"):
            r = by_store[store_name]
            print(f"{label:<9} {store_name:<7} {r['p50']:8.3f} {r['p99']:8.3f} {r['n']:6d}")
        s, r = by_store["sqlite"], by_store["redis"]
        print(f"{label:<9} {'ratio':<7} {r['p50'] / s['p50']:7.2f}x {r['p99'] / s['p99']:7.2f}x"
              "   (redis / sqlite)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000, help="cohort rows")
    parser.add_argument("--lookups", type=int, default=3_000, help="timed lookups per store")
    parser.add_argument("--batch", type=int, default=32, help="ids per batched lookup")
    args = parser.parse_args(argv)
    report(measure(args.rows, args.lookups, args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

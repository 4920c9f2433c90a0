"""How much does Feast's point-in-time join cost over a hand-written DuckDB ASOF join?

Prints wall-clock figures for the same point-in-time retrieval done two ways, in one process, on
one snapshot:

* **feast** -- ``retrieval.get_training_frame``: ``get_historical_features`` through the
  model's feature service (registry look-ups, Feast's entity-frame handling, the offline store's
  join) plus the adapter's own checks, row-id ordering and canonical dtypes. Run once per offline
  store asked for: ``configured`` is what ``store.repo_config()`` says (mlsteward's
  ``AsofDuckDBOfflineStore``), ``duckdb`` is Feast's stock DuckDB store (ibis: a row-id string
  per entity row, an inner join on entity + time window, a window-function dedupe).
* **raw** -- only ``get_historical_features(...).to_df()`` on the frame the adapter hands Feast:
  the offline store and Feast's own handling, without the adapter's pre/post-processing.
* **baseline** -- one ``ASOF LEFT JOIN`` in DuckDB straight on the snapshot parquet and the same
  entity frame, fetched through Arrow into pandas (about twice as fast as DuckDB's ``.df()``
  with string columns, so the floor is the lowest simple one). It does less than the adapter:
  no ordering by row id, no nullable dtypes.

Why it is built this way:

* The data are real mlsteward data: the synthetic cohort goes through ``ingestion.ingest`` in a
  temporary ``MLSTEWARD_HOME`` (contract, content-addressed snapshot, ``feast apply``), so Feast
  reads the very snapshot the baseline reads, with the objects a training run would use.
* Entity rows sample patients of the cohort plus ~1 % unknown patients, at times spread from a
  month before the cohort's first visit to its end, so rows without any earlier feature row (or
  outside the TTL with ``--ttl-days``) occur: the null path is timed and checked too. Row ids
  are 0..n-1 as the training flow numbers them (``entity_frame`` in
  ``mlsteward/features/retrieval.py``); ``--shuffle-row-ids`` gives them in random order, which
  makes the adapter sort.
* Both sides must return the same thing, or the comparison is meaningless: after the timed runs
  the script checks, per offline store, the same row count and identical feature values (nulls
  in the same places) after sorting by row id, and prints that check. The baseline's frame is
  cast with the adapter's ``_canonical`` first, so only values are compared, not dtypes.
* One warm-up run of each side absorbs first-call costs (imports, registry load, DuckDB's
  parquet metadata); measured runs then alternate the sides so drift on a shared 2-core machine
  hits them alike. Every run, the best and the median are printed; ratios are Feast / baseline.
  On a busy machine the best is the steadier figure.

Run: ``.venv/bin/python benchmarks/pit_join.py [--entity-rows N] [--feature-rows N]
[--repeats N] [--ttl-days D] [--offline-store configured|duckdb|both] [--shuffle-row-ids]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL = "heart_disease"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
UNKNOWN_SHARE = 0.01
"""Share of entity rows whose patient has no feature row at all (they must come back null)."""


def set_environment(root: Path) -> None:
    """Isolate mlsteward's state under a temp dir; settings read the environment per call."""
    os.environ["MLSTEWARD_HOME"] = str(root / "home")
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
    os.environ.pop("MLSTEWARD_CONFIG_DIR", None)
    os.environ.pop("MLSTEWARD_FEATURE_REPO", None)
    os.environ.setdefault("FEAST_USAGE", "False")


def build_data(
    root: Path,
    feature_rows: int,
    entity_rows: int,
    ttl_days: float | None,
    shuffle_row_ids: bool = False,
    seed: int = 0,
) -> tuple[Any, Path, pd.DataFrame]:
    """Ingest a generated cohort (snapshot + applied Feast objects) and draw the entity frame."""
    from mlsteward.config.models import get_model_config
    from mlsteward.config.sections.data import FeastConfig
    from mlsteward.data.ingestion import ingest
    from mlsteward.data.synthetic import generate_cohort, write_dataset
    from mlsteward.features.repo import apply_model

    cfg = get_model_config(MODEL)
    if ttl_days is not None:
        cfg = cfg.model_copy(update={"feast": FeastConfig(ttl_days=ttl_days)})
    cohort = generate_cohort(n_rows=feature_rows, seed=seed)
    result = ingest(cfg, write_dataset(cohort, root / "cohort.parquet"), publish=apply_model)
    snapshot = Path(result.snapshot.path)

    rng = np.random.default_rng(seed + 1)
    entity, ts = cfg.source.entity, cfg.timestamp_column
    ids = cohort[entity].unique()
    pids = rng.choice(ids, entity_rows)
    unknown = rng.random(entity_rows) < UNKNOWN_SHARE
    pids[unknown] = ids.max() + 1 + rng.integers(0, 1_000, int(unknown.sum()))
    lo = (cohort[ts].min() - pd.Timedelta(days=30)).value // 1_000
    hi = cohort[ts].max().value // 1_000
    micros = rng.integers(lo, hi + 1, entity_rows)
    entity_df = pd.DataFrame(
        {
            "row_id": (
                rng.permutation(entity_rows) if shuffle_row_ids else np.arange(entity_rows)
            ).astype(np.int64),
            entity: pids.astype(np.int64),
            ts: pd.Series(micros.astype("datetime64[us]")).dt.tz_localize("UTC"),
            cfg.label: rng.integers(0, 2, entity_rows).astype(np.int64),
        }
    )
    return cfg, snapshot, entity_df


def baseline_sql(cfg: Any, snapshot: Path) -> str:
    """The hand-written point-in-time join: one ASOF LEFT JOIN, TTL as a CASE on the match."""
    entity, ts = cfg.source.entity, cfg.timestamp_column

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def feature(name: str) -> str:
        if not cfg.feast.ttl_days:
            return f"f.{q(name)}"
        ttl_us = round(cfg.feast.ttl_days * 86_400 * 1_000_000)
        return (
            f"CASE WHEN f.__ts + to_microseconds({ttl_us}) >= e.{q(ts)} "
            f"THEN f.{q(name)} END AS {q(name)}"
        )

    path = str(snapshot).replace("'", "''")
    return (
        f"SELECT e.row_id, e.{q(entity)}, e.{q(ts)}, e.{q(cfg.label)}, "
        + ", ".join(feature(n) for n in cfg.feature_names)
        + f" FROM entity_df AS e ASOF LEFT JOIN (SELECT {q(entity)}, {q(ts)} AS __ts, "
        + ", ".join(q(n) for n in cfg.feature_names)
        + f" FROM read_parquet('{path}')) AS f"
        + f" ON e.{q(entity)} = f.{q(entity)} AND e.{q(ts)} >= f.__ts"
    )


def run_baseline(sql: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entity_df", entity_df)
        # Arrow then pandas: about twice as fast as DuckDB's own .df() for string columns.
        return con.sql(sql).to_arrow_table().to_pandas()
    finally:
        con.close()


@contextmanager
def offline_store(kind: str) -> Iterator[None]:
    """Point ``retrieval.get_store`` (the store ``get_training_frame`` asks by default) at one
    offline store for the duration (benchmark only)."""
    from feast import FeatureStore

    from mlsteward.features import retrieval
    from mlsteward.features.store import repo_config

    if kind == "configured":
        yield
        return
    original = retrieval.get_store
    retrieval.get_store = lambda: FeatureStore(  # type: ignore[assignment]
        config=repo_config(offline_store_type=kind)
    )
    try:
        yield
    finally:
        retrieval.get_store = original  # type: ignore[assignment]


def run_feast(cfg: Any, entity_df: pd.DataFrame) -> pd.DataFrame:
    from mlsteward.features.retrieval import get_training_frame

    return get_training_frame(cfg, entity_df)


def run_feast_raw(cfg: Any, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Only ``get_historical_features(...).to_df()``, on the frame the adapter would hand it."""
    from mlsteward.features import retrieval

    store = retrieval.get_store()  # as patched by ``offline_store``
    service = store.get_feature_service(cfg.feature_service_name)
    query = pd.DataFrame(
        {
            "__mlsteward_row_id": entity_df["row_id"].to_numpy(),
            cfg.source.entity: entity_df[cfg.source.entity].to_numpy(),
            "event_timestamp": entity_df[cfg.timestamp_column],
        }
    )
    return store.get_historical_features(entity_df=query, features=service).to_df()


def timed(fn: Callable[[], pd.DataFrame]) -> tuple[float, pd.DataFrame]:
    gc.collect()  # the previous side's garbage is not this side's cost
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def check(cfg: Any, feast: pd.DataFrame, base: pd.DataFrame) -> tuple[bool, str]:
    """Same rows, same feature values (nulls included) after sorting both by row id."""
    from mlsteward.features.dtypes import canonical

    if len(feast) != len(base):
        return False, f"row counts differ: feast {len(feast):,} vs baseline {len(base):,}"
    a = feast.sort_values("row_id", kind="mergesort").reset_index(drop=True)
    b = base.sort_values("row_id", kind="mergesort").reset_index(drop=True)
    if not a["row_id"].equals(b["row_id"]):
        return False, "row ids differ"
    b = canonical(b, {f.name: f.dtype for f in cfg.features})
    bad = [n for n in cfg.feature_names if not a[n].equals(b[n])]
    nulls = int(a[cfg.feature_names[0]].isna().sum())
    text = (
        f"{len(a):,} rows each, {len(cfg.feature_names) - len(bad)}/{len(cfg.feature_names)} "
        f"features identical by row_id ({nulls:,} rows without a match, null on both sides)"
    )
    return not bad, text + (f"; differ: {bad}" if bad else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--feature-rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ttl-days", type=float, default=None, help="feature view TTL")
    parser.add_argument("--offline-store", choices=["configured", "duckdb", "both"], default="both")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw Feast timing")
    parser.add_argument(
        "--shuffle-row-ids",
        action="store_true",
        help="row ids in random order (the adapter then sorts); default 0..n-1 as the flows do",
    )
    args = parser.parse_args(argv)
    # ibis 12 on duckdb 2.0 warns about fetch_arrow_table() on every stock-store query.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    with tempfile.TemporaryDirectory(prefix="pit_join_") as tmp:
        root = Path(tmp)
        set_environment(root)
        from mlsteward.features.store import repo_config

        t0 = time.perf_counter()
        cfg, snapshot, entity_df = build_data(
            root, args.feature_rows, args.entity_rows, args.ttl_days, args.shuffle_row_ids
        )
        print(
            f"data: {args.feature_rows:,} feature rows ({len(cfg.feature_names)} features, "
            f"ttl_days={cfg.feast.ttl_days}), {len(entity_df):,} entity rows "
            f"(row ids {'shuffled' if args.shuffle_row_ids else 'in order'}); built and "
            f"ingested in {time.perf_counter() - t0:.1f} s"
        )
        print(f"configured offline store: {repo_config().offline_store.type}")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # again: feast resets it
        sql = baseline_sql(cfg, snapshot)
        stores = ["configured", "duckdb"] if args.offline_store == "both" else [args.offline_store]

        sides: dict[str, Callable[[], pd.DataFrame]] = {
            "baseline": lambda: run_baseline(sql, entity_df)
        }
        for kind in stores:

            def feast_side(kind: str = kind) -> pd.DataFrame:
                with offline_store(kind):
                    return run_feast(cfg, entity_df)

            def raw_side(kind: str = kind) -> pd.DataFrame:
                with offline_store(kind):
                    return run_feast_raw(cfg, entity_df)

            sides[f"feast[{kind}]"] = feast_side
            if not args.no_raw:
                sides[f"raw[{kind}]"] = raw_side

        times: dict[str, list[float]] = {name: [] for name in sides}
        results: dict[str, pd.DataFrame] = {}
        for name, fn in sides.items():  # warm-up
            elapsed, results[name] = timed(fn)
            print(f"warm-up {name}: {elapsed:.2f} s", flush=True)
        for _ in range(args.repeats):
            for name, fn in sides.items():
                elapsed, results[name] = timed(fn)
                times[name].append(elapsed)

        ok = True
        for kind in stores:
            good, text = check(cfg, results[f"feast[{kind}]"], results["baseline"])
            ok &= good
            print(f"check feast[{kind}] vs baseline: {'OK' if good else 'MISMATCH'}: {text}")
            if not args.no_raw and len(results[f"raw[{kind}]"]) != len(entity_df):
                ok = False
                print(f"check raw[{kind}]: MISMATCH: {len(results[f'raw[{kind}]']):,} rows")

        base_best, base_median = min(times["baseline"]), statistics.median(times["baseline"])
        print(f"\ntimes over {args.repeats} runs (s): best / median")
        for name, values in times.items():
            best, median = min(values), statistics.median(values)
            ratio = (
                ""
                if name == "baseline"
                else f"   ratio {best / base_best:.2f}x / {median / base_median:.2f}x"
            )
            runs = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {name:<18} {best:6.2f} / {median:6.2f}{ratio}   runs: {runs}")
        if "configured" in stores:
            on_best = min(times["feast[configured]"]) / base_best
            on_median = statistics.median(times["feast[configured]"]) / base_median
            print(
                f"target feast[configured] / baseline <= 1.5x: best {on_best:.2f}x "
                f"({'met' if on_best <= 1.5 else 'MISSED'}), median {on_median:.2f}x "
                f"({'met' if on_median <= 1.5 else 'MISSED'})"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

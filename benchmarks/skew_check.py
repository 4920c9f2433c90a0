"""What does the training-serving skew check cost on a large prediction log?

Prints wall time, CPU time and peak memory of ``mlsteward.monitoring.skew.check_skew`` over a
synthetic prediction log of ``--rows`` rows (default 1,000,000) in a temporary
``MLSTEWARD_HOME``, each run in its own fresh subprocess, and the ratio against the one part of
the check it cannot do without: Feast's point-in-time join of the same rows
(``features.retrieval.get_training_frame``, the baseline, in its own worker).

The data:

* **Feature rows**: ``generate_cohort(--feature-rows)`` (default 200,000 visits of ~67,000
  patients) through ``ingestion.ingest`` and ``feast apply``, so the check's offline side is
  the project's real point-in-time retrieval (the ASOF DuckDB offline store) on a real snapshot.
* **The log**: ``--rows`` rows written with ``prediction_log.append_table`` in files of
  ``--rows-per-file`` (default 1,000: a busy service's one-second flushes), scored over the 20
  hours before the check, typed as the service types them. 96 % are the service's online-store
  rows, each patient's latest visit (what the online store holds once materialized); 2 % were
  sent as ``instances`` (no entity id) and 2 % were batch-scored (no ``request_id``): neither is
  compared. Planted skew among the online rows: ``bmi`` 10 % higher on 2 % of them, ``smoking``
  another category on 1.5 %, and 0.5 % of patients the offline store never saw (no offline
  value for any feature).
* **The check**: the rule's defaults (``max_rows`` 200,000: the newest 200,000 online rows of
  the 24-hour window are compared) and, with ``--all-rows``, every online row of the window too.

Every run's figures are checked against the planted skew: per feature, the mismatch and
missing-offline counts in the compared rows must equal the counts planted there, and the skewed
features must be exactly ``bmi`` and ``smoking``; the script exits 1 otherwise.

Memory per worker as in ``benchmarks/drift.py``: ``peak`` is the whole process's RSS
high-water mark during the run (``/proc/self/status`` ``VmHWM``, reset just before the clock
starts), so it includes the imports; ``added`` is the peak minus the RSS before the run.

Run: ``.venv/bin/python benchmarks/skew_check.py [--rows 1000000] [--rows-per-file 1000]
[--feature-rows 200000] [--all-rows]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from process_memory import reset_peak, status_mb

MODEL = "heart_disease"
ROOT = Path(__file__).resolve().parents[1]
HOURS = 20
INSTANCE_SHARE, BATCH_SHARE = 0.02, 0.02
BMI_SHARE, SMOKING_SHARE, UNKNOWN_SHARE = 0.02, 0.015, 0.005
EXPECTED_SKEWED = ["bmi", "smoking"]
TARGET_SECONDS, TARGET_PEAK_MB = 30.0, 1536.0


def set_environment(home: Path) -> None:
    os.environ["MLSTEWARD_HOME"] = str(home)
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(ROOT)
    os.environ.pop("MLSTEWARD_CONFIG_DIR", None)
    os.environ.pop("MLSTEWARD_PROFILE", None)
    os.environ.setdefault("FEAST_USAGE", "False")


def build(home: Path, rows: int, per_file: int, feature_rows: int, now: pd.Timestamp) -> dict:
    """Ingest the feature rows, write the log; returns the planted truth per online row."""
    import pyarrow as pa

    from mlsteward.config.models import get_model_config
    from mlsteward.data.ingestion import ingest
    from mlsteward.data.synthetic import generate_cohort, write_dataset
    from mlsteward.features.repo import apply_model
    from mlsteward.monitoring import prediction_log

    cfg = get_model_config(MODEL)
    entity, ts = cfg.source.entity, cfg.timestamp_column
    t = time.perf_counter()
    cohort = generate_cohort(n_rows=feature_rows, seed=0)
    snap = ingest(cfg, write_dataset(cohort, home.parent / "cohort.parquet"), publish=apply_model)
    snapshot = pd.read_parquet(snap.snapshot.path)
    latest = snapshot.sort_values(ts, kind="stable").drop_duplicates(entity, keep="last")
    latest = latest.reset_index(drop=True)
    print(
        f"feature rows: {len(snapshot):,} visits of {len(latest):,} patients ingested "
        f"({time.perf_counter() - t:.1f} s)"
    )

    t = time.perf_counter()
    rng = np.random.default_rng(1)
    kinds = {f.name: f.dtype for f in cfg.features}
    # scored_at: distinct microseconds, increasing, over the HOURS before now
    span = HOURS * 3600 * 10**6
    step = span // rows
    offsets = np.arange(rows, dtype=np.int64) * step + rng.integers(0, step, rows)
    scored = (now.value // 1000 - span + offsets).astype("datetime64[us]")
    origin = rng.choice(3, rows, p=[1 - INSTANCE_SHARE - BATCH_SHARE, INSTANCE_SHARE, BATCH_SHARE])
    pick = rng.integers(0, len(latest), rows)
    online = origin == 0
    unknown = online & (rng.random(rows) < UNKNOWN_SHARE)
    bmi_off = online & ~unknown & (rng.random(rows) < BMI_SHARE)
    smoking_off = online & ~unknown & (rng.random(rows) < SMOKING_SHARE)
    ids = latest[entity].to_numpy()[pick].astype(np.int64)
    ids[unknown] = int(latest[entity].max()) + 1 + np.arange(int(unknown.sum()))
    columns: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = latest[name].to_numpy()[pick]
        if name == "bmi":
            values = np.where(bmi_off, values * 1.1, values)
        if name == "smoking":
            other = {"never": "former", "former": "current", "current": "never"}
            values = np.where(smoking_off, [other[v] for v in values], values)
        arrow = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}.get(kind or "")
        columns[name] = pa.array(values, arrow or pa.string())
    ts_type = pa.timestamp("us", tz="UTC")
    stamps = pa.array(scored, pa.timestamp("us")).cast(ts_type)
    proba = rng.random(rows)
    table = pa.table(
        {
            entity: pa.array(np.where(origin == 1, 0, ids), pa.int64(), mask=origin == 1),
            ts: stamps,
            **columns,
            "prediction_proba": proba,
            "prediction": (proba >= 0.5).astype(np.int64),
            "model_version": pa.array(["1"] * rows),
            "arm": pa.array(["champion"] * rows),
            "request_id": pa.array([f"{n:016x}" for n in range(rows)]),
            "scored_at": stamps,
        }
    )
    files = 0
    for start in range(0, rows, per_file):
        part = table.slice(start, per_file)
        kind = origin[start : start + per_file]
        if (kind != 2).any():
            prediction_log.append_table(cfg.name, part.filter(pa.array(kind != 2)))
            files += 1
        if (kind == 2).any():  # batch scoring writes its own files, with no request ids
            batch = part.filter(pa.array(kind == 2)).drop_columns(["arm", "request_id"])
            prediction_log.append_table(cfg.name, batch)
            files += 1
    print(
        f"log: {rows:,} rows in {files:,} files ({int(online.sum()):,} online, "
        f"{int((origin == 1).sum()):,} instances, {int((origin == 2).sum()):,} batch-scored) "
        f"({time.perf_counter() - t:.1f} s)"
    )
    order = np.flatnonzero(online)[::-1]  # newest first, as the check reads them
    return {
        "unknown": unknown[order],
        "bmi": bmi_off[order],
        "smoking": smoking_off[order],
        "online": int(online.sum()),
        "features": list(kinds),
    }


def worker(kind: str, home: Path, now: str, max_rows: int) -> dict:
    """One run in this fresh process: the whole check, or the baseline join alone."""
    set_environment(home)
    import pyarrow as pa

    from mlsteward.config.models import get_model_config
    from mlsteward.features.retrieval import ROW_ID, get_training_frame
    from mlsteward.features.store import get_store
    from mlsteward.monitoring import skew

    cfg = get_model_config(MODEL)
    until = pd.Timestamp(now)
    frame = None
    if kind == "join":  # the rows, read before the clock starts: the join alone is timed
        served, _, _ = skew.read_served(cfg, until - pd.Timedelta(hours=24), until, max_rows)
        frame = pd.DataFrame(
            {
                ROW_ID: np.arange(served.num_rows, dtype=np.int64),
                cfg.source.entity: served.column(cfg.source.entity).to_numpy(),
                cfg.timestamp_column: served.column("scored_at").to_pandas(),
            }
        )
        del served
    get_store().get_feature_service(cfg.feature_service_name)  # the registry, read once
    pa.default_memory_pool().release_unused()
    base_mb = status_mb("VmRSS")
    peak_reset = reset_peak()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"kind": kind}
    if kind == "join":
        assert frame is not None
        joined = get_training_frame(cfg, frame, with_label=False, with_attributes=False)
        out["rows"] = len(joined)
    else:
        result = skew.check_skew(cfg, now=until.to_pydatetime(), max_rows=max_rows)
        out["rows"] = result.rows_checked
        out["rows_in_window"] = result.rows_in_window
        out["excluded"] = result.excluded
        out["skewed"] = result.skewed
        out["without_offline"] = result.rows_without_offline
        out["features"] = {
            n: [f.differing, f.missing_offline, f.mismatch_rate] for n, f in result.features.items()
        }
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    out.update(
        seconds=seconds,
        cpu=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        peak_mb=status_mb("VmHWM"),
        base_mb=base_mb,
        peak_reset=peak_reset,
    )
    return out


def _spawn(kind: str, home: Path, now: str, max_rows: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(home), "--now", now]
    done = subprocess.run(
        [*cmd, "--max-rows", str(max_rows)], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _verify(run: dict, truth: dict) -> list[str]:
    """Differences between what the check found and what was planted in the rows it read."""
    n = run["rows"]
    unknown, bmi, smoking = truth["unknown"][:n], truth["bmi"][:n], truth["smoking"][:n]
    problems = []
    for name in truth["features"]:
        planted = {"bmi": bmi, "smoking": smoking}.get(name)
        want = [int(planted.sum()) if planted is not None else 0, int(unknown.sum())]
        got = run["features"][name][:2]
        if got != want:
            problems.append(f"{name}: found {got} (differing, missing offline), planted {want}")
    if run["skewed"] != EXPECTED_SKEWED:
        problems.append(f"skewed {run['skewed']}, planted {EXPECTED_SKEWED}")
    if run["without_offline"] != int(unknown.sum()):
        problems.append(
            f"{run['without_offline']} rows without offline values, planted {unknown.sum()}"
        )
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="prediction-log rows")
    p.add_argument("--rows-per-file", type=int, default=1_000, help="rows per logged batch")
    p.add_argument("--feature-rows", type=int, default=200_000, help="offline feature rows")
    p.add_argument("--all-rows", action="store_true", help="also check every online row")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--now", help=argparse.SUPPRESS)
    p.add_argument("--max-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), args.now, args.max_rows)))
        return

    with tempfile.TemporaryDirectory(prefix="mlsteward-skew-bench-") as tmp:
        home = Path(tmp) / "home"
        set_environment(home)
        now = pd.Timestamp.now(tz="UTC").floor("s")
        truth = build(home, args.rows, args.rows_per_file, args.feature_rows, now)
        from mlsteward.config.models import get_model_config

        default_cap = get_model_config(MODEL).alerts.rules.skew.max_rows
        caps = [default_cap] + ([truth["online"]] if args.all_rows else [])
        failed = False
        print(
            f"\n{'run':<34} {'rows':>9} {'seconds':>8} {'CPU s':>7} {'peak MB':>8} "
            f"{'added MB':>9} {'check/join':>10}"
        )
        for cap in caps:
            join = _spawn("join", home, now.isoformat(), cap)
            check = _spawn("check", home, now.isoformat(), cap)
            runs = (
                (f"join alone (baseline), {cap:,}", join),
                (f"check_skew, max_rows {cap:,}", check),
            )
            for name, r in runs:
                ratio = f"{check['seconds'] / join['seconds']:.2f}x" if r is check else ""
                print(
                    f"{name:<34} {r['rows']:>9,} {r['seconds']:>8.2f} {r['cpu']:>7.2f} "
                    f"{r['peak_mb']:>8.0f} {r['peak_mb'] - r['base_mb']:>9.0f} {ratio:>10}"
                )
            problems = _verify(check, truth)
            met = check["seconds"] <= TARGET_SECONDS and check["peak_mb"] <= TARGET_PEAK_MB
            rates = ", ".join(
                f"{n} {v[2]:.2%}" for n, v in check["features"].items() if n in EXPECTED_SKEWED
            )
            print(
                f"  checked {check['rows']:,} of {check['rows_in_window']:,} online rows "
                f"(excluded {check['excluded']}); skewed: {', '.join(check['skewed'])} ({rates}); "
                f"{check['without_offline']:,} rows without offline values; planted skew "
                f"{'found exactly' if not problems else 'NOT found: ' + '; '.join(problems)}; "
                f"target <= {TARGET_SECONDS:g} s and <= {TARGET_PEAK_MB:g} MB "
                f"{'met' if met else 'MISSED'}"
                + ("" if check["peak_reset"] else " (peak not reset: includes start-up)")
            )
            failed |= bool(problems)
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

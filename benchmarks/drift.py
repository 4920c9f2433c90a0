"""What does our drift flow cost against Evidently's plain ``DataDriftPreset``?

Prints wall time and peak memory for the same reference/current pair checked three or four ways,
each in its own fresh subprocess (so one side's memory high-water mark never leaks into another's),
and the ratios preset / ours from the same run:

* **preset** -- ``Report([DataDriftPreset()])`` with Evidently's default choices, on the same
  ``DataDefinition`` we use (numeric vs categorical declared, so both sides test the same column
  kinds). With more than 1,000 rows Evidently's defaults are Wasserstein (normed) for numeric
  and Jensen-Shannon for categorical columns, which is also what the demo config asks for, so
  the methods match column by column; the script prints the methods each side used and flags
  any difference. ``include_tests=True`` is set so the preset's per-column verdicts can be read
  the same way as ours.
* **preset, types inferred** (``--preset-inferred``) -- the same preset on bare frames, as
  the Evidently docs show it: Evidently infers each column's type (and method) from the data.
* **ours (no sampling)** -- ``mlsteward.monitoring.drift.compute_drift`` with ``max_rows`` >= the
row count:
  the same statistics on every row.
* **ours (sampled)** -- ``compute_drift`` with the config's ``max_rows`` (default 200,000), a
  seeded sample stratified by the label.

Data: ``generate_cohort(rows, seed=0)`` as reference and ``generate_batch(rows, seed=1)`` with a
covariate shift of bmi and cholesterol (0.5 sd) as current, so both "drifted" and "not drifted"
verdicts are compared. Columns (20): the 14 heart-disease features, the label
``heart_disease``, ``prediction_proba`` (sigmoid of the generator's true risk logit, i.e. a
perfectly calibrated model), and 4 derived features: ``pulse_pressure_proxy`` (resting_bp / age),
``glucose_per_bmi``, ``heart_rate_reserve`` (220 - age - max_heart_rate) as numeric, and
``age_band`` (<45 / 45-64 / >=65) as categorical. The derived features are added to the model
config for the run, so ``compute_drift`` checks 18 features plus the prediction and the label,
the same 20 columns the preset gets.

Memory, per worker: the RSS after the libraries are imported (``imports``), what reading the
two frames added (``frames``: the Arrow reader's freed buffers are handed back to the OS first,
so this is the frames themselves), and the high-water mark of the whole process during the run
(``peak``; ``/proc/self/status`` ``VmHWM``, reset through ``/proc/self/clear_refs`` just before
the clock starts), so ``peak`` includes the imports and the frames and ``added`` = ``peak``
minus the RSS before the run is what the drift computation itself needed. Not ``ru_maxrss``:
a child started by ``subprocess`` (vfork + exec) inherits the parent's high-water mark, so
every worker would report at least the parent's peak from generating the data. The data are
generated once by the parent and written to parquet in a temporary directory.

Time: wall seconds of the run (the target's measure) and the CPU seconds the worker used (all
its threads), which move less when other jobs share the machine's cores.

HTML: every run writes its HTML report into the temporary directory inside the timed section,
as the monitoring flow does (``detect_drift`` always passes ``html_path``); ``--no-html`` leaves
it out of both sides.

Verdicts: per column, drifted or not in every run; a column missing from any run counts as a
disagreement. The last lines say whether each ``compute_drift`` run met the targets (<= 10 s,
whole-process peak <= 1 GB, the preset's verdicts on every column) and the largest score
difference from the preset. MB are MiB throughout; 1 GB is taken as 1024 MiB.

Reading the current window (``--log-rows N``, e.g. 2,000,000): a prediction log of N rows
(batches of 200,000 with three SHAP explanation pairs; outcomes for every third row) in a
temporary ``MLSTEWARD_HOME``, read two ways, each in a fresh worker, peak memory measured as above:
**full read** -- ``prediction_log.read_with_labels`` on the whole window, every column (what the
drift flow read before the window was sampled while read), and **bounded read** --
``mlsteward.monitoring.current_window.read_current_window`` (the drift columns only, a seeded
pre-sample of 2 x ``--max-rows`` rows). Only the read is timed; drift itself is measured above.

Run: ``.venv/bin/python benchmarks/drift.py [--rows 1000000] [--max-rows 200000] [--skip-preset]
[--preset-inferred] [--no-html] [--log-rows 2000000 [--log-only]]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from process_memory import reset_peak, status_mb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXTRA_FEATURES = [
    {"name": "pulse_pressure_proxy", "dtype": "float"},
    {"name": "glucose_per_bmi", "dtype": "float"},
    {"name": "heart_rate_reserve", "dtype": "float"},
    {"name": "age_band", "dtype": "category", "categories": ["<45", "45-64", ">=65"]},
]
SHIFT = {"bmi": 0.5, "cholesterol": 0.5}


def _config(max_rows: int):
    from mlsteward.config.models import ModelConfig, load_model_config

    base = load_model_config(ROOT / "config" / "models" / "heart_disease.yaml").model_dump()
    base["features"] = [*base["features"], *EXTRA_FEATURES]
    base["drift"]["max_rows"] = max_rows
    return ModelConfig.model_validate(base)


def _make_frame(rows: int, seed: int, shift) -> pd.DataFrame:
    from mlsteward.data.synthetic import generate_batch, generate_cohort
    from mlsteward.data.synthetic_risk import risk_logit

    if seed == 0:
        df = generate_cohort(rows, seed=0)
    else:
        df = generate_batch(rows, seed=seed, shift=shift)
    df = df.drop(columns=["patient_id", "event_timestamp"])
    df["prediction_proba"] = 1.0 / (1.0 + np.exp(-risk_logit(df)))
    df["pulse_pressure_proxy"] = df["resting_bp"] / df["age"]
    df["glucose_per_bmi"] = df["fasting_glucose"] / df["bmi"]
    df["heart_rate_reserve"] = (220 - df["age"] - df["max_heart_rate"]).astype(np.float64)
    df["age_band"] = pd.cut(
        df["age"], [-np.inf, 45, 65, np.inf], right=False, labels=["<45", "45-64", ">=65"]
    ).astype(object)
    return df


def _method_ids() -> dict[str, str]:
    """Evidently records auto-chosen methods by display name ("Wasserstein distance (normed)");
    map those back to method ids ("wasserstein") so the two sides compare. Benchmark-only use
    of Evidently's stat-test registry."""
    from evidently.legacy.calculations.stattests import registry

    out = {}
    for name, by_type in registry._registered_stat_tests.items():
        for test in by_type.values():
            out[test.display_name] = name
    return out


def _read_preset(snapshot) -> dict[str, dict]:
    """Per-column ValueDrift results of the preset, read by metric config, never by position."""
    ids = _method_ids()
    out = {}
    for result in snapshot.metric_results.values():
        loc = getattr(result, "metric_value_location", None)
        params = dict(loc.metric.params) if loc is not None else {}
        if not str(params.get("type", "")).endswith("ValueDrift"):
            continue
        statuses = {str(getattr(t.status, "value", t.status)).upper() for t in result.tests}
        out[params["column"]] = {
            "method": ids.get(params.get("method"), params.get("method")),
            "threshold": params.get("threshold"),
            "score": float(result.value),
            "drifted": statuses == {"FAIL"},
        }
    return out


def worker(kind: str, data_dir: Path, max_rows: int, html: bool) -> dict:
    """Run one side in this (fresh) process and return its figures as a dict."""
    # imports are first-call costs, not drift work: load them before the clock starts
    import evidently.metrics
    import evidently.presets  # noqa: F401
    import pyarrow as pa
    from evidently import DataDefinition, Dataset, Report

    import mlsteward.training.fitting  # noqa: F401  (scikit-learn, for the performance comparison)
    from mlsteward.monitoring.drift import column_methods, compute_drift

    imports_mb = status_mb("VmRSS")
    ref = pd.read_parquet(data_dir / "reference.parquet")
    cur = pd.read_parquet(data_dir / "current.parquet")
    pa.default_memory_pool().release_unused()  # the reader's freed buffers, not the frames
    cfg = _config(max_rows)
    html_path = data_dir / f"{kind}-{max_rows}.html" if html else None

    base_mb = status_mb("VmRSS")
    peak_reset = reset_peak()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if kind in ("preset", "preset-inferred"):
        from evidently.presets import DataDriftPreset

        report = Report([DataDriftPreset()], include_tests=True)
        if kind == "preset":
            kinds = {c: k for c, (_, _, k) in column_methods(cfg).items()}
            kinds |= {"prediction_proba": "numeric", cfg.label: "categorical"}
            definition = DataDefinition(
                numerical_columns=[c for c, k in kinds.items() if k == "numeric"],
                categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
            )
            snap = report.run(
                Dataset.from_pandas(cur, data_definition=definition),
                Dataset.from_pandas(ref, data_definition=definition),
            )
        else:
            snap = report.run(cur, ref)
        if html_path is not None:
            snap.save_html(str(html_path))
        columns = _read_preset(snap)
        extra: dict = {}
    else:
        result = compute_drift(ref, cur, cfg, label_column=cfg.label, html_path=html_path)
        columns = {
            c: {
                "method": r.method,
                "threshold": r.threshold,
                "score": r.score,
                "drifted": r.drifted,
            }
            for c, r in result.columns.items()
        }
        for r in (result.prediction_drift, result.target_drift):
            if r is not None:
                columns[r.column] = {
                    "method": r.method,
                    "threshold": r.threshold,
                    "score": r.score,
                    "drifted": r.drifted,
                }
        extra = {"sampling": result.sampling}
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "kind": kind,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_mb": status_mb("VmHWM"),
        "peak_reset": peak_reset,
        "imports_mb": imports_mb,
        "base_mb": base_mb,
        "html_mb": html_path.stat().st_size / 2**20 if html_path is not None else None,
        "columns": columns,
        **extra,
    }


LOG_BATCH_ROWS = 200_000


def _write_log(home: Path, rows: int) -> None:
    """A prediction log of ``rows`` scored rows for the demo model, with outcomes for a third."""
    import os

    os.environ["MLSTEWARD_HOME"] = str(home)
    from mlsteward.config.models import load_model_config
    from mlsteward.data.synthetic import generate_batch
    from mlsteward.data.synthetic_risk import risk_logit
    from mlsteward.monitoring import prediction_log

    cfg = load_model_config(ROOT / "config" / "models" / "heart_disease.yaml")
    scored_at = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    done = 0
    for i in range(0, rows, LOG_BATCH_ROWS):
        n = min(LOG_BATCH_ROWS, rows - i)
        df = generate_batch(n, seed=100 + i // LOG_BATCH_ROWS, id_offset=10**7 + i)
        labels = df.iloc[::3][[cfg.source.entity, cfg.timestamp_column, cfg.label]]
        df = df.drop(columns=[cfg.label])
        df["prediction_proba"] = 1.0 / (1.0 + np.exp(-risk_logit(df)))
        df["prediction"] = (df["prediction_proba"] >= 0.5).astype(np.int64)
        df["model_version"] = "1"
        df["scored_at"] = scored_at
        rng = np.random.default_rng(i)
        for r in range(1, 4):
            df[f"shap_{r}_feature"] = "age"
            df[f"shap_{r}_value"] = rng.normal(size=n)
        prediction_log.append(cfg.name, df)
        prediction_log.attach_labels(
            cfg.name,
            labels,
            entity=cfg.source.entity,
            timestamp=cfg.timestamp_column,
            label=cfg.label,
        )
        done += n
    print(f"log: {done:,} rows in {-(-rows // LOG_BATCH_ROWS)} batch files, outcomes for a third")


def log_worker(kind: str, home: Path, max_rows: int) -> dict:
    """Read the log's window one way in this (fresh) process; figures as a dict."""
    import os

    os.environ["MLSTEWARD_HOME"] = str(home)
    import pyarrow as pa

    from mlsteward.monitoring import prediction_log
    from mlsteward.monitoring.current_window import read_current_window

    cfg = _config(max_rows)
    cfg = cfg.model_copy(update={"features": cfg.features[: -len(EXTRA_FEATURES)]})
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)
    pa.default_memory_pool().release_unused()
    base_mb = status_mb("VmRSS")
    peak_reset = reset_peak()
    t0 = time.perf_counter()
    if kind == "full":
        frame = prediction_log.read_with_labels(cfg.name, since=since.to_pydatetime())
        held, rows, cols = len(frame), len(frame), frame.shape[1]
    else:
        window = read_current_window(cfg, since.to_pydatetime())
        held, rows, cols = window.peak_retained_rows, window.rows, window.frame.shape[1]
    return {
        "kind": kind,
        "seconds": time.perf_counter() - t0,
        "peak_mb": status_mb("VmHWM"),
        "base_mb": base_mb,
        "peak_reset": peak_reset,
        "rows": rows,
        "rows_held": held,
        "columns": cols,
    }


def _log_comparison(rows: int, max_rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mlsteward-log-bench-") as tmp:
        home = Path(tmp)
        t = time.perf_counter()
        _write_log(home, rows)
        print(f"(written in {time.perf_counter() - t:.1f} s)")
        out = {}
        for kind in ("full", "bounded"):
            cmd = [sys.executable, __file__, "--log-worker", kind, "--data", str(home)]
            done = subprocess.run(
                [*cmd, "--max-rows", str(max_rows)], check=True, capture_output=True, text=True
            )
            out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\n{'current window read':<36} {'seconds':>8} {'peak MB':>8} {'added MB':>9} "
        f"{'rows':>10} {'rows held':>10} {'columns':>8}"
    )
    for kind, name in (("full", "read_with_labels, all columns"), ("bounded", "sample_window")):
        r = out[kind]
        print(
            f"{name:<36} {r['seconds']:>8.2f} {r['peak_mb']:>8.0f} "
            f"{r['peak_mb'] - r['base_mb']:>9.0f} {r['rows']:>10,} {r['rows_held']:>10,} "
            f"{r['columns']:>8}"
        )
    full, bounded = out["full"], out["bounded"]
    added = (full["peak_mb"] - full["base_mb"]) / max(1.0, bounded["peak_mb"] - bounded["base_mb"])
    print(
        f"ratio full / bounded read of {rows:,} logged rows (max_rows {max_rows:,}): "
        f"time {full['seconds'] / bounded['seconds']:.1f}x, "
        f"peak {full['peak_mb'] / bounded['peak_mb']:.1f}x, "
        f"added memory {added:.1f}x"
    )


def _spawn(kind: str, data_dir: Path, max_rows: int, html: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data_dir)]
    out = subprocess.run(
        [*cmd, "--max-rows", str(max_rows), *([] if html else ["--no-html"])],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


TARGET_SECONDS = 10.0
TARGET_PEAK_MB = 1024.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows per side")
    p.add_argument("--max-rows", type=int, default=200_000, help="sample cap of the sampled run")
    p.add_argument("--skip-preset", action="store_true", help="leave out the slow preset run")
    p.add_argument(
        "--preset-inferred",
        action="store_true",
        help="also run the preset on bare frames (Evidently infers column types; slowest)",
    )
    p.add_argument("--no-html", action="store_true", help="write no HTML report on any side")
    p.add_argument(
        "--log-rows", type=int, default=0, help="also compare reading a logged window (rows)"
    )
    p.add_argument("--log-only", action="store_true", help="only the logged-window comparison")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--log-worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    html = not args.no_html

    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), args.max_rows, html)))
        return
    if args.log_worker:
        print(json.dumps(log_worker(args.log_worker, Path(args.data), args.max_rows)))
        return
    if args.log_rows:
        _log_comparison(args.log_rows, args.max_rows)
        if args.log_only:
            return

    from mlsteward.data.synthetic import Shift

    with tempfile.TemporaryDirectory(prefix="mlsteward-drift-bench-") as tmp:
        data_dir = Path(tmp)
        t = time.perf_counter()
        ref = _make_frame(args.rows, 0, None)
        cur = _make_frame(args.rows, 1, Shift(covariate=SHIFT))
        ref.to_parquet(data_dir / "reference.parquet", index=False)
        cur.to_parquet(data_dir / "current.parquet", index=False)
        print(
            f"data: {len(ref):,} reference rows, {len(cur):,} current rows, "
            f"{ref.shape[1]} columns each; current shifted {SHIFT} sd "
            f"(generated in {time.perf_counter() - t:.1f} s); HTML written: {html}"
        )
        del ref, cur

        runs = []
        if not args.skip_preset:
            runs.append(
                ("Report([DataDriftPreset()])", _spawn("preset", data_dir, args.rows, html))
            )
        if args.preset_inferred:
            runs.append(
                (
                    "DataDriftPreset, types inferred",
                    _spawn("preset-inferred", data_dir, args.rows, html),
                )
            )
        no_sample = max(args.rows, 1_000)
        runs.append(
            (f"compute_drift, max_rows={no_sample:,}", _spawn("ours", data_dir, no_sample, html))
        )
        runs.append(
            (
                f"compute_drift, max_rows={args.max_rows:,}",
                _spawn("ours", data_dir, args.max_rows, html),
            )
        )
    short = (["preset"] if not args.skip_preset else []) + (
        ["preset, inferred"] if args.preset_inferred else []
    )
    short += ["ours, all rows", "ours, sampled"]

    print()
    print(
        f"{'run':<36} {'seconds':>8} {'CPU s':>6} {'peak MB':>8} {'added MB':>9} "
        f"{'imports MB':>11} {'frames MB':>10} {'HTML MB':>8}"
    )
    for name, r in runs:
        html_mb = "-" if r["html_mb"] is None else f"{r['html_mb']:.1f}"
        print(
            f"{name:<36} {r['seconds']:>8.2f} {r['cpu_seconds']:>6.1f} {r['peak_mb']:>8.0f} "
            f"{r['peak_mb'] - r['base_mb']:>9.0f} {r['imports_mb']:>11.0f} "
            f"{r['base_mb'] - r['imports_mb']:>10.0f} {html_mb:>8}"
        )
    if not all(r["peak_reset"] for _, r in runs):
        print("note: /proc/self/clear_refs not writable: peak MB is the high-water mark since exec")
    if not args.skip_preset:
        preset = runs[0][1]
        for name, r in runs[1:]:
            if r["kind"] != "ours":
                continue
            added = (preset["peak_mb"] - preset["base_mb"]) / max(1.0, r["peak_mb"] - r["base_mb"])
            print(
                f"ratio preset / {name}: time {preset['seconds'] / r['seconds']:.1f}x, "
                f"peak {preset['peak_mb'] / r['peak_mb']:.1f}x, "
                f"added memory {added:.1f}x"
            )
    for name, r in runs:
        if r.get("sampling"):
            print(f"sampling in {name!r}: {r['sampling']}")

    print()
    header = "".join(f" {name:>26}" for name in short)
    print(f"{'column':<24}{header}")
    # our order (config order), then any column only another run has
    cols = list(
        dict.fromkeys([*runs[-1][1]["columns"], *(c for _, r in runs for c in r["columns"])])
    )
    disagree = []
    method_diff = []
    for c in cols:
        cells = []
        verdicts = set()
        methods = set()
        for _, r in runs:
            x = r["columns"].get(c)
            if x is None:
                cells.append(f" {'-':>26}")
                verdicts.add("missing")
                continue
            verdicts.add(x["drifted"])
            methods.add(x["method"])
            mark = "DRIFT" if x["drifted"] else "ok"
            cells.append(f" {x['method'][:12]:>12} {x['score']:>7.4f} {mark:>5}")
        if len(verdicts) > 1:
            disagree.append(c)
        if len(methods) > 1:
            method_diff.append(c)
        print(f"{c:<24}{''.join(cells)}")
    print()
    print(f"columns compared: {len(cols)}")
    print(f"verdicts disagree on: {disagree or 'none'}")
    print(f"methods differ on: {method_diff or 'none'}")
    drifted = [c for c in cols if runs[-1][1]["columns"].get(c, {}).get("drifted")]
    print(f"drifted (sampled run): {drifted}")

    for name, r in runs:
        if r["kind"] != "ours":
            continue
        if args.skip_preset:
            same = "not checked (--skip-preset)"
        else:
            theirs = runs[0][1]["columns"]
            ok = set(theirs) == set(r["columns"]) and all(
                theirs[c]["drifted"] == r["columns"][c]["drifted"] for c in theirs
            )
            diff = max(
                (
                    abs(theirs[c]["score"] - r["columns"][c]["score"])
                    for c in theirs
                    if c in r["columns"]
                ),
                default=float("nan"),
            )
            same = (
                f"{'yes' if ok else 'NO'} ({len(theirs)} columns; max score difference {diff:.2g})"
            )
        print(
            f"targets, {name}: time {r['seconds']:.1f} s "
            f"{'<=' if r['seconds'] <= TARGET_SECONDS else '>'} {TARGET_SECONDS:.0f} s; "
            f"peak {r['peak_mb']:.0f} MB "
            f"{'<=' if r['peak_mb'] <= TARGET_PEAK_MB else '>'} {TARGET_PEAK_MB:.0f} MB; "
            f"same verdicts as the preset: {same}"
        )


if __name__ == "__main__":
    main()

"""What do the production checks cost on a large prediction log?

Builds a synthetic prediction log of ``--rows`` rows (default 1,000,000) in a temporary
``MLSTEWARD_HOME`` with ``prediction_log.append_table``, in batches of ``--batch-rows`` spread
over the last 20 hours (all inside both checks' windows): the heart-disease model's 14 features,
``sex`` (a sensitive attribute and a feature) and ``age`` (bucketed for fairness), a
classifier's probability and label, the version, the event and scoring times, and the top-3
SHAP columns (``shap_{1,2,3}_feature`` / ``_value``) as batch scoring and the service write
them; outcomes for ``--labelled`` of the rows (default 30%) attached with
``prediction_log.attach_labels``, as ``mlsteward labels`` attaches them. Men's outcomes follow
the score and women's do not, so equal opportunity by sex is breached (about 0.25 against the
demo's limit 0.2) and the check has something to find.

Then each check runs in its own fresh worker process:

* **attribution** -- ``monitoring.attribution.check_attribution`` against a reference built from
  random full contributions (the reference is a few hundred rows; its cost is not the log's);
* **bias** -- ``monitoring.bias.check_bias`` over the labelled window;

and, as the baseline each is compared with in the same run, the same numbers from the whole
window read into pandas:

* **attribution, pandas** -- ``prediction_log.read`` of the window's explanation columns, then
  the same per-feature sums with ``groupby``;
* **bias, pandas** -- ``prediction_log.read_with_labels`` of the window (the columns the check
  reads), then ``governance.fairness.assess_fairness`` on the labelled rows.

Memory, per worker: RSS after the imports, and the process's high-water mark during the check
(``/proc/self/status`` ``VmHWM``, reset through ``/proc/self/clear_refs`` just before the clock
starts), so ``peak`` includes the imports; ``added`` is what the check itself needed. Not
``ru_maxrss``: a child started by ``subprocess`` inherits the parent's high-water mark from
building the log. Time: wall and CPU seconds of the check alone. Targets: each check at most
30 s and 1.5 GB peak on 2 cores. MB are MiB; 1.5 GB is taken as 1536 MiB.

Run: ``.venv/bin/python benchmarks/production_checks.py [--rows 1000000] [--labelled 0.3]
[--batch-rows 100000] [--skip-baseline]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from process_memory import reset_peak, status_mb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "heart_disease"
VERSION = "7"
TARGET_SECONDS = 30.0
TARGET_MB = 1536.0


# -- the log ------------------------------------------------------------------------------------


def build_log(rows: int, batch_rows: int, labelled: float, now: datetime) -> dict:
    """Write the synthetic log and its outcomes into the current ``MLSTEWARD_HOME``."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from mlsteward.config.models import get_model_config
    from mlsteward.monitoring import prediction_log

    cfg = get_model_config(MODEL)
    rng = np.random.default_rng(0)
    names = np.array(cfg.feature_names, dtype=object)
    # skewed like real explanations: a few features are most rows' top reasons
    weights = np.linspace(3.0, 0.2, len(names))
    weights /= weights.sum()
    started = time.perf_counter()
    labels = []
    batches = -(-rows // batch_rows)
    for b in range(batches):
        n = min(batch_rows, rows - b * batch_rows)
        ids = np.arange(b * batch_rows, b * batch_rows + n, dtype=np.int64)
        scored_at = now - timedelta(hours=20) + timedelta(hours=20 * b / batches)
        ts = pa.array(np.full(n, pd.Timestamp(scored_at).value // 1000), pa.int64()).cast(
            prediction_log.TS_TYPE
        )
        proba = rng.random(n)
        sex = rng.choice(["F", "M"], n)
        columns: dict[str, pa.Array] = {
            "patient_id": pa.array(ids),
            "event_timestamp": ts,
            "age": pa.array(rng.integers(18, 95, n)),
            "sex": pa.array(sex),
            "resting_bp": pa.array(rng.normal(130, 15, n)),
            "cholesterol": pa.array(rng.normal(220, 40, n)),
            "max_heart_rate": pa.array(rng.normal(150, 20, n)),
            "bmi": pa.array(rng.normal(27, 4, n)),
            "smoking": pa.array(rng.choice(["never", "former", "current"], n)),
            "diabetes": pa.array(rng.random(n) < 0.1),
            "chest_pain_type": pa.array(rng.choice(["typical", "atypical", "asymptomatic"], n)),
            "exercise_angina": pa.array(rng.random(n) < 0.3),
            "st_depression": pa.array(rng.exponential(1.0, n)),
            "fasting_glucose": pa.array(rng.normal(100, 20, n)),
            "resting_ecg": pa.array(rng.choice(["normal", "lv_hypertrophy"], n)),
            "physical_activity_hours": pa.array(rng.exponential(3.0, n)),
            "prediction_proba": pa.array(proba),
            "prediction": pa.array((proba >= 0.5).astype(np.int64)),
            "model_version": pa.array([VERSION] * n, pa.string()),
            "scored_at": ts,
        }
        # three distinct features per row, drawn by weight; values decreasing in |v|
        top = np.argsort(rng.random((n, len(names))) ** (1 / weights), axis=1)[:, ::-1][:, :3]
        size = np.sort(rng.exponential(0.5, (n, 3)), axis=1)[:, ::-1]
        sign = rng.choice([-1.0, 1.0], (n, 3))
        for r in range(3):
            columns[f"shap_{r + 1}_feature"] = pa.array(names[top[:, r]], pa.string())
            columns[f"shap_{r + 1}_value"] = pa.array(size[:, r] * sign[:, r])
        prediction_log.append_table(cfg.name, pa.table(columns), batch_id=f"bench-{b:04d}")
        keep = rng.random(n) < labelled
        # men's outcomes follow the score; women's do not (their TPR falls to ~0.5 from ~0.75)
        chance = np.where(sex[keep] == "F", 0.5, proba[keep])
        outcome = rng.random(int(keep.sum())) < chance
        labels.append(
            pd.DataFrame(
                {
                    "patient_id": ids[keep],
                    "event_timestamp": pd.Series(
                        pd.Timestamp(scored_at), index=range(int(keep.sum()))
                    ),
                    cfg.label: outcome.astype(np.int64),
                }
            )
        )
    written = time.perf_counter() - started
    frame = pd.concat(labels, ignore_index=True)
    started = time.perf_counter()
    attached = prediction_log.attach_labels(
        cfg.name, frame, entity="patient_id", timestamp="event_timestamp", label=cfg.label
    )
    return {
        "rows": rows,
        "batches": batches,
        "labels": len(frame),
        "matched": attached["matched"],
        "write_s": written,
        "attach_s": time.perf_counter() - started,
        "log_mb": sum(f.stat().st_size for f in prediction_log.batch_files(cfg.name, None, None))
        / 2**20,
    }


# -- the workers --------------------------------------------------------------------------------


def worker(kind: str, now: datetime) -> dict:
    """Run one check in this (fresh) process and return its figures."""
    # the imports are first-call costs, not the check's work: load them before the clock
    import numpy as np
    import pandas as pd

    from mlsteward.config.models import get_model_config
    from mlsteward.governance.fairness import assess_fairness
    from mlsteward.monitoring import prediction_log
    from mlsteward.monitoring.attribution import check_attribution, reference_from_contributions
    from mlsteward.monitoring.bias import check_bias

    cfg = get_model_config(MODEL)
    reference = reference_from_contributions(
        MODEL,
        VERSION,
        cfg.feature_names,
        np.random.default_rng(1).normal(size=(500, len(cfg.feature_names))),
        top_k=3,
        source="benchmark",
    )
    imports_mb = status_mb("VmRSS")
    peak_reset = reset_peak()
    cpu, wall = time.process_time(), time.perf_counter()
    extra: dict = {}
    if kind == "attribution":
        result = check_attribution(cfg, reference, now=now)
        extra = {"compared_rows": result.compared_rows, "drifted": result.drifted}
    elif kind == "bias":
        bias = check_bias(cfg, now=now, version=VERSION)
        sex = bias.attributes["sex"].fairness
        extra = {
            "labelled_rows": bias.labelled_rows,
            "breached": bias.breached,
            "eo_sex": sex.metrics["equal_opportunity_difference"] if sex else None,
        }
    elif kind == "attribution-pandas":
        since = pd.Timestamp(now) - pd.Timedelta(hours=24)
        cols = [f"shap_{r}_{p}" for r in (1, 2, 3) for p in ("feature", "value")]
        frame = prediction_log.read(MODEL, since=since, until=now, columns=[*cols, "model_version"])
        frame = frame[frame["model_version"] == VERSION]
        long = pd.concat(
            [
                pd.DataFrame({"f": frame[f"shap_{r}_feature"], "v": frame[f"shap_{r}_value"].abs()})
                for r in (1, 2, 3)
            ]
        )
        sums = long.groupby("f")["v"].sum()
        extra = {"compared_rows": len(frame), "top": str(sums.idxmax())}
    elif kind == "bias-pandas":
        since = pd.Timestamp(now) - pd.Timedelta(days=30)
        cols = ["patient_id", "event_timestamp", "prediction_proba", "prediction", "sex", "age"]
        frame = prediction_log.read_with_labels(
            MODEL, since=since, until=now, columns=[*cols, "model_version"]
        )
        frame = frame[(frame["model_version"] == VERSION) & frame["label"].notna()]
        fairness = assess_fairness(
            frame.reset_index(drop=True),
            frame["label"].astype(int).to_numpy(),
            frame["prediction_proba"].to_numpy(),
            0.5,
            cfg,
        )
        extra = {
            "labelled_rows": len(frame),
            "eo_sex": fairness["sex"].metrics["equal_opportunity_difference"],
        }
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    return {
        "kind": kind,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "imports_mb": imports_mb,
        "peak_mb": status_mb("VmHWM"),
        "peak_reset": peak_reset,
        **extra,
    }


def run_worker(kind: str, home: Path, now: datetime) -> dict:
    env = {**os.environ, "MLSTEWARD_HOME": str(home), "MLSTEWARD_PROJECT_ROOT": str(ROOT)}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--now", now.isoformat()],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-rows", type=int, default=100_000)
    p.add_argument("--labelled", type=float, default=0.3)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--now", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, datetime.fromisoformat(args.now))))
        return

    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-checks-") as tmp:
        home = Path(tmp) / "home"
        os.environ["MLSTEWARD_HOME"] = str(home)
        os.environ["MLSTEWARD_PROJECT_ROOT"] = str(ROOT)
        built = build_log(args.rows, args.batch_rows, args.labelled, now)
        print(
            f"log: {built['rows']:,} rows in {built['batches']} batch files "
            f"({built['log_mb']:.0f} MB), written in {built['write_s']:.1f} s; "
            f"{built['labels']:,} outcomes attached in {built['attach_s']:.1f} s "
            f"({built['matched']:,} matched)"
        )
        kinds = ["attribution", "bias"]
        if not args.skip_baseline:
            kinds += ["attribution-pandas", "bias-pandas"]
        results = {k: run_worker(k, home, now) for k in kinds}
    print()
    print(f"{'check':<20} {'wall s':>7} {'cpu s':>7} {'imports MB':>11} {'peak MB':>8} "
          f"{'added MB':>9}  result")  # fmt: skip
    for k, r in results.items():
        shown = {
            x: r[x]
            for x in ("compared_rows", "labelled_rows", "drifted", "breached", "eo_sex", "top")
            if x in r
        }
        print(
            f"{k:<20} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} {r['imports_mb']:>11.0f} "
            f"{r['peak_mb']:>8.0f} {r['peak_mb'] - r['imports_mb']:>9.0f}  {shown}"
            + ("" if r["peak_reset"] else "  (peak not reset: includes start-up)")
        )
    print()
    for check in ("attribution", "bias"):
        r = results[check]
        ok = r["wall_s"] <= TARGET_SECONDS and r["peak_mb"] <= TARGET_MB
        line = (
            f"{check}: {r['wall_s']:.1f} s, peak {r['peak_mb']:.0f} MB "
            f"(target <= {TARGET_SECONDS:.0f} s, <= {TARGET_MB:.0f} MB): "
            f"{'met' if ok else 'NOT met'}"
        )
        base = results.get(f"{check}-pandas")
        if base is not None:
            added = (base["peak_mb"] - base["imports_mb"]) / max(r["peak_mb"] - r["imports_mb"], 1)
            line += (
                f"; pandas baseline {base['wall_s'] / r['wall_s']:.2f}x the time, "
                f"{added:.1f}x the added memory"
            )
        print(line)


if __name__ == "__main__":
    main()

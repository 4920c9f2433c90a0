"""What do the governance guarantees cost at scale? Figures against the issue's targets.

Sections (run all, or pick with ``--sections``):

* **audit** -- the hash-chained audit trail with ``--records`` records (default 1,000,000)
  spread over ``--models`` models (default 20, so ~50,000 per model) and every action, time
  stamps spread over the past year. Built through the store's ``_bulk_append`` (batched
  inserts / COPY, but the real chain: every record's canonical serialisation and SHA-256 as
  ``append`` computes them), then measured through the public API only:

  - ``query(model=M, limit=100)``, the page a CLI or UI asks for -- target <= 100 ms;
  - ``query(model=M)``, every record of one model (~50,000) -- held to the same 100 ms target;
  - ``last(model=M, action=PROMOTED)`` and ``query(model=M, since=<7 days ago>)``;
  - ``append`` one record (one transaction, fsync'd), the cost each governance decision pays;
  - ``verify()`` over every record, as it runs by default (parallel helper processes when the
    chain is large and there is more than one free core) -- target <= 5 s -- and with
    ``verify_workers=1`` (one process) to show what the parallelism buys.

  Queries cycle through the models so no run repeats the previous one's rows; one warm-up
  call of each kind goes first (the file is then in the OS page cache, as on a server that
  has been up for a while). Medians and bests are over ``--repeats`` runs (``verify`` over
  ``--verify-repeats``).

* **promotion** -- not written yet: the promotion-latency section goes here (see
  ``SECTIONS`` at the bottom; a section is a function taking the parsed arguments and
  returning ``Figure`` rows).

The store is temporary: a SQLite file in a temp ``MLSTEWARD_HOME`` (default), or, with
``--backend postgres``, a fresh database created on ``--pg-server`` and dropped at the end.

Run: ``.venv/bin/python benchmarks/governance.py [--records N] [--models N] [--repeats N]
[--verify-repeats N] [--backend sqlite|postgres] [--pg-server URL] [--sections audit,...]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

QUERY_TARGET_S = 0.100
"""Issue target: an audit query by model over 1M records."""
VERIFY_TARGET_S = 5.0
"""Issue target: ``audit verify`` over 1M records."""


@dataclass
class Figure:
    name: str
    runs: list[float]
    target: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "PASS" if self.median <= self.target else "MISS"


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    runs, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    return runs, result


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms" if seconds < 1 else f"{seconds:9.2f} s "


# ----------------------------------------------------------------------------- audit section

ACTION_WEIGHTS = {
    "ingestion_accepted": 10,
    "ingestion_rejected": 1,
    "version_registered": 10,
    "validation_passed": 12,
    "validation_failed": 4,
    "approval_requested": 6,
    "approval_granted": 5,
    "approval_rejected": 1,
    "approval_timed_out": 1,
    "promoted": 5,
    "promotion_refused": 2,
    "alias_changed": 5,
    "rollback": 1,
    "integrity_failed": 1,
}


def synthetic_records(n: int, models: int, seed: int = 7) -> Iterator[dict]:
    """``n`` plausible governance records, time-ordered over the past year."""
    rng = random.Random(seed)
    names = list(ACTION_WEIGHTS)
    weights = list(ACTION_WEIGHTS.values())
    actions = rng.choices(names, weights, k=n)
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / max(n, 1)
    for i, action in enumerate(actions):
        auc = round(0.75 + rng.random() * 0.2, 4)
        yield {
            "action": action,
            "model": f"model_{i % models:02d}",
            "version": str(1 + i // (models * 25)),
            "reason": f"{action.replace('_', ' ')}: auc {auc} vs threshold 0.85",
            "actor": "flow-run:" + uuid.UUID(int=rng.getrandbits(128)).hex[:12],
            "details": {
                "auc": auc,
                "threshold": 0.85,
                "fairness": {"max_gap": round(rng.random() * 0.1, 4), "groups": 4},
                "trials": rng.randint(10, 60),
            },
            "ts": (start + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }


@contextmanager
def temporary_store(args: argparse.Namespace) -> Iterator[object]:
    """A fresh audit store in a temp home (SQLite) or a temp database (PostgreSQL)."""
    from mlsteward.audit import audit_store

    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-") as tmp:
        os.environ["MLSTEWARD_HOME"] = str(Path(tmp) / "home")
        os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
        os.environ.pop("MLSTEWARD_AUDIT_URL", None)
        if args.backend == "sqlite":
            store = audit_store()
            try:
                yield store
            finally:
                store.close()
            return
        import psycopg

        name = f"mlsteward_bench_audit_{uuid.uuid4().hex[:10]}"
        server = args.pg_server.rstrip("/")
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            store = audit_store(f"{server}/{name}")
            try:
                yield store
            finally:
                store.close()
        finally:
            with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def bench_audit(args: argparse.Namespace) -> list[Figure]:
    from mlsteward.audit import Action

    figures: list[Figure] = []
    with temporary_store(args) as store:
        print(f"audit store: {store!r}")
        print(f"building {args.records:,} records over {args.models} models ...", flush=True)
        start = time.perf_counter()
        built = store._bulk_append(synthetic_records(args.records, args.models))
        build_s = time.perf_counter() - start
        print(f"  built {built:,} records in {build_s:.1f} s ({built / build_s:,.0f} records/s)")
        if args.backend == "postgres":
            import psycopg

            with psycopg.connect(store.url, autocommit=True) as conn:
                conn.execute(f"VACUUM ANALYZE {store.prefix}")
        figures.append(Figure("build (bulk, real chain; not a target)", [build_s]))

        models = [f"model_{i:02d}" for i in range(args.models)]
        cycle = iter(range(10**9))

        def next_model() -> str:
            return models[next(cycle) % len(models)]

        week_ago = datetime.now(UTC) - timedelta(days=7)
        cases: list[tuple[str, Callable[[], object], float | None, int]] = [
            ("query(model=M, limit=100)", lambda: store.query(model=next_model(), limit=100),
             QUERY_TARGET_S, args.repeats),
            ("query(model=M)  [all of one model]", lambda: store.query(model=next_model()),
             QUERY_TARGET_S, args.repeats),
            ("last(model=M, action=PROMOTED)",
             lambda: store.last(model=next_model(), action=Action.PROMOTED), None, args.repeats),
            ("query(model=M, since=7 days ago)",
             lambda: store.query(model=next_model(), since=week_ago), None, args.repeats),
        ]  # fmt: skip
        for name, fn, target, repeats in cases:
            fn()  # warm-up
            runs, result = timed(fn, repeats)
            size = len(result) if isinstance(result, list) else 1
            figures.append(Figure(name, runs, target, f"{size:,} records returned"))

        runs, _ = timed(
            lambda: store.append(
                Action.PROMOTED, model="model_00", reason="benchmark", details={"auc": 0.9}
            ),
            args.repeats * 5,
        )
        figures.append(Figure("append (one transaction, durable)", runs))

        default_runs, result = timed(store.verify, args.verify_repeats)
        assert result.ok, result.problem
        figures.append(
            Figure(
                "verify()  [default: parallel helpers]",
                default_runs,
                VERIFY_TARGET_S,
                f"{result.records:,} records, {result.records / min(default_runs):,.0f}/s",
            )
        )
        store.verify_workers = 1
        try:
            single_runs, single = timed(store.verify, 1)
        finally:
            store.verify_workers = None
        assert single == result, (single, result)
        figures.append(
            Figure(
                "verify()  [verify_workers=1: one process]",
                single_runs,
                VERIFY_TARGET_S,
                f"{single.records:,} records, {single.records / single_runs[0]:,.0f}/s",
            )
        )
    return figures


# ----------------------------------------------------------------------------- sections

SECTIONS: dict[str, Callable[[argparse.Namespace], list[Figure]]] = {
    "audit": bench_audit,
    # "promotion": bench_promotion,   <- promotion latency goes here (returns Figure rows)
}


def report(section: str, figures: list[Figure]) -> None:
    print(f"\n== {section} ==")
    print(f"{'operation':44} {'median':>12} {'best':>12} {'runs':>5} {'target':>13}  verdict")
    for f in figures:
        target = f"<= {fmt_s(f.target).strip()}" if f.target is not None else ""
        print(
            f"{f.name:44} {fmt_s(f.median)} {fmt_s(f.best)} {len(f.runs):5d} {target:>13}  "
            f"{f.verdict:4}  {f.note}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9, help="runs per query figure")
    parser.add_argument("--verify-repeats", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    print(f"{cores} cores; load average {os.getloadavg()[0]:.2f} at start; backend {args.backend}")
    results = {section: SECTIONS[section](args) for section in chosen}
    for section, figures in results.items():
        report(section, figures)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
  - signed checkpoints (``mlsteward.audit.checkpoints``, anchored in a file beside the temp
    home): the first ``write_checkpoint`` (it checks the whole chain once), one after each new
    record (it checks only the records since the previous one), and ``audit verify`` against
    the newest checkpoint -- target <= 5 s -- as ``verify_with_checkpoint()`` and as the
    ``mlsteward audit verify`` command in a new process (start-up included).

  Queries cycle through the models so no run repeats the previous one's rows; one warm-up
  call of each kind goes first (the file is then in the OS page cache, as on a server that
  has been up for a while). Medians and bests are over ``--repeats`` runs (``verify`` over
  ``--verify-repeats``).

* **promotion** -- how long a promotion takes once the gates have been computed: a small
  cohort is ingested, v1 trained (champion by the no-champion path) and v2 trained and
  validated against it (``promote=False``: challenger). Then, ``--repeats`` times: promote v2
  (timed), roll back to v1 (timed separately). Each promotion is the whole guarded path: the
  per-model lock, re-reading the registry, the stale-validation check, re-hashing the stored
  artifact, moving the alias, lifecycle tags, the audit record. Target <= 0.5 s. For context
  (no target) the same promotion through the ``promote-model`` Prefect flow, whose extra
  cost is the flow run itself.

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
PROMOTION_TARGET_S = 0.5
"""Issue target: promotion latency once the gates are computed."""


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
        figures += bench_checkpoints(args, store)
    return figures


def bench_checkpoints(args: argparse.Namespace, store: object) -> list[Figure]:
    """Signed checkpoints over the same chain: the first one (which checks the whole chain
    once), one after a new record (only the records since the previous one), and
    ``audit verify`` against the newest checkpoint, as a function and as the command."""
    import subprocess

    from mlsteward.audit import Action
    from mlsteward.audit.checkpoints import verify_with_checkpoint, write_checkpoint

    anchor = Path(os.environ["MLSTEWARD_HOME"]).parent / "anchor" / "checkpoints.jsonl"
    os.environ["MLSTEWARD_AUDIT_ANCHOR"] = anchor.as_uri()
    figures: list[Figure] = []
    first_runs, first = timed(
        lambda: write_checkpoint(store, actor="system", reason="benchmark"),
        1,  # type: ignore[arg-type]
    )
    figures.append(
        Figure("write_checkpoint()  [first: whole chain]", first_runs, None, f"seq {first.seq:,}")
    )

    def next_checkpoint() -> object:
        store.append(Action.PROMOTED, model="model_00", reason="benchmark")  # type: ignore[attr-defined]
        return write_checkpoint(store, actor="system", reason="benchmark")  # type: ignore[arg-type]

    runs, _ = timed(next_checkpoint, args.repeats)
    figures.append(
        Figure("append + write_checkpoint()  [incremental]", runs, None, "after each promotion")
    )
    # in turns with plain verify(), so both see the same load on a shared machine
    runs, plain_runs = [], []
    for _ in range(args.verify_repeats):
        plain_run, _ = timed(store.verify, 1)  # type: ignore[attr-defined]
        run, checked = timed(lambda: verify_with_checkpoint(store), 1)  # type: ignore[arg-type]
        assert checked.ok and checked.checkpoint, checked.problem
        plain_runs += plain_run
        runs += run
    extra = statistics.median(b - a for a, b in zip(plain_runs, runs, strict=True))
    figures.append(
        Figure(
            "verify_with_checkpoint()  [default workers]",
            runs,
            VERIFY_TARGET_S,
            f"{checked.records:,} records, against checkpoint {checked.checkpoint['seq']:,}; "
            f"verify() in turns: median {fmt_s(statistics.median(plain_runs)).strip()}, "
            f"checkpoint adds {extra * 1000:+.0f} ms",
        )
    )
    env = {**os.environ, "MLSTEWARD_AUDIT_URL": store.url}  # type: ignore[attr-defined]
    command = [str(Path(sys.executable).parent / "mlsteward"), "audit", "verify", "--json"]
    cli_runs = []
    for _ in range(args.verify_repeats):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        cli_runs.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stdout + done.stderr
    figures.append(
        Figure(
            "mlsteward audit verify  [command, checkpoint]",
            cli_runs,
            VERIFY_TARGET_S,
            "a new process: start-up included",
        )
    )
    return figures


# ------------------------------------------------------------------------- promotion section


def bench_promotion(args: argparse.Namespace) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-promo-") as tmp:
        os.environ["MLSTEWARD_HOME"] = str(Path(tmp) / "home")
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
        os.environ.pop("MLSTEWARD_AUDIT_URL", None)
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True)
        from prefect.testing.utilities import prefect_test_harness

        from flows.governance import promotion_flow
        from flows.ingestion import ingestion_flow
        from flows.training import training_flow
        from mlsteward.config.models import get_model_config
        from mlsteward.data.synthetic import generate_cohort, write_dataset
        from mlsteward.governance import promotion as governance
        from mlsteward.governance import registry

        model = "heart_disease"
        with prefect_test_harness(server_startup_timeout=120):
            source = write_dataset(generate_cohort(n_rows=4_000, seed=7), Path(tmp) / "c.parquet")
            ingestion_flow(model=model, source=str(source))
            print("training v1 (champion) and v2 (validated challenger) ...", flush=True)
            training_flow(model=model, max_evals=1)
            v2 = training_flow(model=model, max_evals=3, seed=1, promote=False)
            if v2.governance.decision != "challenger":
                raise SystemExit(f"v2 did not pass the gates: {v2.governance}")
            cfg = get_model_config(model)
            size = registry.get_version(model, "2")
            print(f"  v2 artifact {size.artifact_sha256[:12]}; measuring ...", flush=True)

            promote_runs, rollback_runs, flow_runs = [], [], []
            # once, while v2 was never rolled back from (the flow takes no override)
            start = time.perf_counter()
            promotion_flow(model=model, version="2", requested_by="user:bench")
            flow_runs.append(time.perf_counter() - start)
            governance.rollback(cfg, reason="benchmark", actor="user:bench", to_version="1")
            # v2 is rolled back from after the first cycle: bringing it back is an override
            override = {"by": "user:bench", "reason": "benchmark cycle"}
            for _ in range(args.repeats):
                start = time.perf_counter()
                governance.promote(
                    cfg, "2", actor="user:bench", reason="benchmark", override=override
                )
                promote_runs.append(time.perf_counter() - start)
                start = time.perf_counter()
                governance.rollback(cfg, reason="benchmark", actor="user:bench", to_version="1")
                rollback_runs.append(time.perf_counter() - start)
            with governance.open_audit() as audit:
                chain = audit.verify()
            assert chain.ok, chain.problem
    note = "lock, registry re-read, SHA-256 re-check, alias, tags, audit record"
    return [
        Figure("promote (gates already computed)", promote_runs, PROMOTION_TARGET_S, note),
        Figure("rollback", rollback_runs, None, "same guarded path"),
        Figure("promote-model flow (Prefect run)", flow_runs, None, "context: flow overhead"),
    ]


# ----------------------------------------------------------------------------- sections

SECTIONS: dict[str, Callable[[argparse.Namespace], list[Figure]]] = {
    "audit": bench_audit,
    "promotion": bench_promotion,
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

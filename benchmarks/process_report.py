"""What does the process report cost over a year of delivery history?

Plants a synthetic history with the test suite's generator (``tests/support/process_history``):
``--models`` models for ``--weeks`` weeks, data versions ingested, trained, gated, approved and
promoted, drift detections, rollbacks, and the flow runs behind them (training, ingestion and
scoring runs, some failed, crashed or cancelled), with a planted shift half-way (lead times
jump, a gate fails more often). The audit records go into a real SQLite audit store through
the store's own bulk path, topped up with ``batch_scored`` filler records to ``--records``
(default 100,000); the runs, ``--runs`` of them (default 10,000), go into the database of a
real Prefect server (the test harness's, a subprocess serving the REST API), which the report
then reads through the API like any other client.

Timed, each once the history is in place:

* **report** -- ``process.build.build_report`` for every model and all together (the audit
  trail and Prefect's runs read, the metrics, the control charts and Cpk), then the HTML and
  JSON written with every chart drawn (``process.render.write_report``): what ``mlsteward
  process report`` does;
* **baseline** -- the same records and runs read with no processing: ``store.query`` of every
  record, and every flow run paged out of Prefect with ``read_flow_runs`` (200 a page).

Target: the report at most 10 s on 2 cores. Run: ``.venv/bin/python benchmarks/process_report.py
[--records 100000] [--runs 10000] [--models 3] [--weeks 52]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 10.0


def _plant(args: argparse.Namespace, url: str) -> tuple[object, datetime, datetime]:
    from tests.support.process_history import write_synthetic_history

    start = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
    models = [f"model_{i}" for i in range(args.models)]
    common = {
        "models": models,
        "start": start,
        "weeks": args.weeks,
        "shift_at": start + timedelta(weeks=args.weeks // 2),
        "lead_time_hours": (12.0, 30.0),
        "gate_failure_rate": (0.1, 0.35),
        "seed": 11,
        "versions_per_week": args.versions_per_week,
    }
    # scoring runs fill the run count up to --runs (each model-week's versions bring a
    # training and an ingestion run each)
    model_weeks = args.models * args.weeks
    per_week = max(
        0, math.ceil((args.runs - 2 * model_weeks * args.versions_per_week) / model_weeks)
    )
    dry = Path(tempfile.mkdtemp(prefix="process-bench-dry-")) / "audit.db"
    probe = write_synthetic_history(f"sqlite:///{dry}", other_runs_per_week=per_week, **common)
    filler = max(0, args.records - probe.records)
    truth = write_synthetic_history(
        url, other_runs_per_week=per_week, filler_records=filler, **common
    )
    return truth, start, start + timedelta(weeks=args.weeks + 1)


@contextmanager
def prefect_server(db: Path) -> Iterator[None]:
    """A Prefect server subprocess on the database file ``db``, as the test harness starts one
    on a temporary file: so a planted history can be kept (``--keep``) and measured again."""
    import prefect.settings
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.testing.utilities import _find_available_port

    url = f"sqlite+aiosqlite:///{db}"
    with ExitStack() as stack:
        stack.enter_context(temporary_database_interface())
        stack.enter_context(
            prefect.settings.temporary_settings(
                updates={prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: url}
            )
        )
        server = SubprocessASGIServer(port=_find_available_port())
        SubprocessASGIServer._instances[None] = server
        server.start(timeout=120)
        stack.enter_context(
            prefect.settings.temporary_settings(
                updates={prefect.settings.PREFECT_API_URL: server.api_url}
            )
        )
        try:
            yield
        finally:
            server.stop()


def _timed(label: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall = time.perf_counter() - t0
    print(f"  {label:34s} {wall:6.2f} s wall, {time.process_time() - c0:6.2f} s CPU here")
    return out, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--versions-per-week", type=int, default=5)
    parser.add_argument(
        "--keep",
        type=Path,
        help="Keep the planted history in this folder and reuse it when run again with the "
        "same sizes (planting 10,000 runs takes about two minutes).",
    )
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="process-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["MLSTEWARD_HOME"] = str(home / "home")
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(ROOT)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # its writes lock SQLite
    url = f"sqlite:///{home}/audit.db"
    sizes = {k: getattr(args, k) for k in ("records", "runs", "models", "weeks")}
    sizes["versions_per_week"] = args.versions_per_week
    marker, truth_file = home / "sizes.json", home / "truth.pickle"
    reuse = marker.exists() and json.loads(marker.read_text()) == sizes
    if not reuse:
        for stale in (home / "audit.db", home / "prefect.db", marker):
            stale.unlink(missing_ok=True)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    from mlsteward.audit import audit_store
    from mlsteward.config.models import ModelConfig, get_model_config
    from mlsteward.process import build
    from mlsteward.process.history import read_audit, read_runs
    from mlsteward.process.metrics import process_metrics
    from mlsteward.process.render import write_report
    from mlsteward.process.review import review
    from tests.support.process_history import create_synthetic_runs

    if reuse:
        truth, since, until = pickle.loads(truth_file.read_bytes())
    else:
        t = time.perf_counter()
        truth, since, until = _plant(args, url)
        print(f"audit trail planted in {time.perf_counter() - t:.1f} s")
    with audit_store(url) as store:
        records = len(store.query())

    # the synthetic models borrow the heart-disease config (targets, rules) under their names
    base = get_model_config("heart_disease")
    models = sorted({v.model for v in truth.versions})
    configs = {m: ModelConfig.model_validate({**base.model_dump(), "name": m}) for m in models}
    build.model_configs = lambda model: configs if model is None else {model: configs[model]}

    with prefect_server(home / "prefect.db"):
        if not reuse:
            t = time.perf_counter()
            create_synthetic_runs(truth.runs)
            print(f"prefect: runs planted in {time.perf_counter() - t:.1f} s")
            truth_file.write_bytes(pickle.dumps((truth, since, until)))
            marker.write_text(json.dumps(sizes))
        runs = len(truth.runs)

        def baseline() -> int:
            with audit_store(url) as store:
                n = len(store.query())
            seen = 0
            window = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))  # type: ignore[arg-type]
            with get_client(sync_client=True) as client:
                while True:
                    page = client.read_flow_runs(flow_run_filter=window, limit=200, offset=seen)
                    seen += len(page)
                    if len(page) < 200:
                        break
            return n + seen

        def report() -> int:
            with audit_store(url) as store:
                result = build.build_report(since=since, until=until, audit=store)
            write_report(result, home / "reports", "bench")
            return sum(len(r.charts) for r in result.scopes.values())

        baseline(), report()  # warm: imports, matplotlib's fonts, the server's caches
        print(f"{records:,} audit records, {runs:,} flow runs, {args.models} models, "
              f"{args.weeks} weeks")  # fmt: skip
        _, base_s = _timed("baseline: every record and run read", baseline)
        charts, report_s = _timed("report: build_report + write_report", report)
        print("where the report's time goes:")
        with audit_store(url) as store:
            events, _ = _timed(
                "read the audit trail", lambda: read_audit(store, since=since - timedelta(days=90))
            )
        runs_read, _ = _timed("read Prefect's runs", lambda: read_runs(since=since, until=until))
        from mlsteward.process.history import History

        history = History(audit=events, runs=runs_read, since=since, until=until)
        metrics, _ = _timed(
            "metrics", lambda: process_metrics(history, models, since=since, until=until)
        )
        result, _ = _timed(
            "charts, rules, Cpk", lambda: review(metrics, configs, since=since, until=until)
        )
        _timed(
            f"HTML and JSON ({charts} charts drawn)",
            lambda: write_report(result, home / "reports", "bench2"),
        )
    ratio = report_s / base_s
    verdict = "within" if report_s <= TARGET_SECONDS else "OVER"
    print(
        f"report / baseline: {ratio:.2f}x; report {report_s:.2f} s, {verdict} the "
        f"{TARGET_SECONDS:.0f} s target"
    )


if __name__ == "__main__":
    main()

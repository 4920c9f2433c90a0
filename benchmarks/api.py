"""How fast does the governance API answer? p50/p99 against the 0.5 s promotion target.

Against a real server (``python -m mlsteward.api`` on uvicorn, a subprocess) on a temporary
``MLSTEWARD_HOME``: a small cohort is ingested, v1 trained (champion) and v2 trained and
validated against it (challenger). Then, over one keep-alive HTTP connection with an admin's
bearer token, one request at a time:

* ``GET /api/v1/health`` -- no token, no state: the floor of an answer on this machine;
* ``GET /api/v1/models/heart_disease`` -- the model's status: token check, champion and
  challenger from the registry, the policy, last drift, active rollout, pending approvals and
  the latest decisions from the audit trail (``--reads`` times);
* a promotion through the API, ``--promotions`` times: ``POST .../versions/2/promote`` (v2
  becomes champion: the whole guarded path of ``governance.decisions.promote`` -- permission,
  the ledger's standing, the candidate check, the per-model lock, the registry re-read, the
  artifact's SHA-256, alias, tags, audit record), then ``POST .../rollback`` to v1 (timed on
  its own). Each call changes the champion. After the first rollback v2 is a version that was
  rolled back from, so every promotion goes with the admin's ``override`` and a reason, the
  first included, so all are alike.

For context the same promotion is timed in-process (``decisions.promote`` without HTTP).
Figures: p50, p99 (with under 100 runs, p99 is about the slowest run), mean, and the ratio of
p50 and p99 to the 0.5 s target.

Run: ``.venv/bin/python benchmarks/api.py [--reads 300] [--promotions 30]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

TARGET_S = 0.5
"""Issue target: a promotion through the API, as the promotion itself."""
MODEL = "heart_disease"
API = "/api/v1"


def percentile(runs: list[float], q: float) -> float:
    ordered = sorted(runs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, runs: list[float], target: float | None) -> str:
    p50, p99 = percentile(runs, 0.5), percentile(runs, 0.99)
    ratio = f"{p50 / target:5.2f}x / {p99 / target:5.2f}x of {target:g} s" if target else ""
    return (
        f"{name:44} p50 {p50 * 1000:8.1f} ms  p99 {p99 * 1000:8.1f} ms  "
        f"mean {statistics.fmean(runs) * 1000:8.1f} ms  n={len(runs):<4} {ratio}"
    )


def timed(call: Callable[[], httpx.Response], expect: int = 200) -> float:
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    if response.status_code != expect:
        raise SystemExit(f"HTTP {response.status_code}: {response.text[:500]}")
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(tmp: Path) -> None:
    """v1 champion, v2 a validated challenger, in the temporary home."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.ingestion import ingestion_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    with prefect_test_harness(server_startup_timeout=120):
        source = write_dataset(generate_cohort(n_rows=4_000, seed=7), tmp / "cohort.parquet")
        ingestion_flow(model=MODEL, source=str(source))
        print("training v1 (champion) and v2 (validated challenger) ...", flush=True)
        training_flow(model=MODEL, max_evals=1)
        v2 = training_flow(model=MODEL, max_evals=3, seed=1, promote=False)
        if v2.governance.decision != "challenger":
            raise SystemExit(f"v2 did not pass the gates: {v2.governance}")


def admin_token() -> str:
    from mlsteward.identity import identity_store, local_principal

    with identity_store() as store:
        store.add_principal("bench", roles=["admin"], by=local_principal())
        return store.create_token("user:bench", by=local_principal())[1]


def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlsteward.api", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API did not answer within 60 s")


def measure(args: argparse.Namespace, port: int, token: str) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}{API}"
    promote_body = {"reason": "benchmark", "override": True}
    rollback_body = {"reason": "benchmark", "to": "1"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        for _ in range(5):  # warm-up: connections, imports, caches
            timed(lambda: http.get("/health"))
            timed(lambda: http.get(f"/models/{MODEL}"))
        health = [timed(lambda: http.get("/health")) for _ in range(args.reads)]
        status = [timed(lambda: http.get(f"/models/{MODEL}")) for _ in range(args.reads)]
        promotions, rollbacks = [], []
        for _ in range(args.promotions):
            promotions.append(
                timed(lambda: http.post(f"/models/{MODEL}/versions/2/promote", json=promote_body))
            )
            rollbacks.append(
                timed(lambda: http.post(f"/models/{MODEL}/rollback", json=rollback_body))
            )
    in_process = promote_in_process(args.promotions)
    return [
        line("GET /api/v1/health (no token, floor)", health, None),
        line(f"GET /api/v1/models/{MODEL}", status, TARGET_S),
        line("POST .../versions/2/promote (API)", promotions, TARGET_S),
        line("POST .../rollback (API)", rollbacks, TARGET_S),
        line("decisions.promote in-process (context)", in_process, TARGET_S),
    ]


def promote_in_process(repeats: int) -> list[float]:
    """The same promotion without HTTP, for how much the API adds."""
    from mlsteward.governance import decisions
    from mlsteward.identity import identity_store

    with identity_store() as store:
        admin = store.get_principal("user:bench")
    assert admin is not None
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        decisions.promote(admin, MODEL, "2", reason="benchmark", override=True)
        runs.append(time.perf_counter() - start)
        decisions.rollback(admin, MODEL, reason="benchmark", to="1")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=300, help="GET requests per figure")
    parser.add_argument("--promotions", type=int, default=30, help="promote + rollback pairs")
    args = parser.parse_args(argv)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    print(f"{cores} cores; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-api-") as d:
        tmp = Path(d)
        os.environ["MLSTEWARD_HOME"] = str(tmp / "home")
        os.environ["PREFECT_HOME"] = str(tmp / "prefect")
        os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
        for name in ("MLSTEWARD_AUDIT_URL", "MLSTEWARD_PROFILE", "MLFLOW_TRACKING_URI"):
            os.environ.pop(name, None)
        (tmp / "prefect").mkdir()
        train(tmp)
        token = admin_token()
        port = free_port()
        server = start_server(port, tmp / "api.log")
        try:
            lines = measure(args, port, token)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print()
    print("\n".join(lines))
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

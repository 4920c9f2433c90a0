"""The prediction log survives SIGKILL: every answered prediction is in the log after a restart.

Two points of the same fault. The cheap one kills the service's log writer as the service
runs it (the write-ahead file, the writer thread and its child process) in a process of its
own, in the middle of a stream of acknowledged appends; the full one kills the real
prediction service of a trained stack under load from clients in this process, restarts it,
and counts answered predictions against rows in the log. Each records the rows lost (the
answered predictions missing from the log: must be none), the replay's time as the
recovery, and the fsync lag the write-ahead file showed: the window a machine crash (as
opposed to a killed process) could lose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlsteward.monitoring import prediction_log
from mlsteward.serving.logbook import PredictionLogWriter
from tests.conftest import REPO_ROOT
from tests.faults.conftest import FaultResult
from tests.support.disk import buckets, metric, quantile, scrape
from tests.support.fault_checks import assert_invariants
from tests.support.governance import MODEL, write_config
from tests.support.serving import FAST_TUNING, SERVICE_SETTINGS, Service

FAULT = "service-sigkill-prediction-log"
PREDICT = f"/v1/models/{MODEL}/predict"
KINDS = {"patient_id": "int", "model_version": "string", "arm": "string",
         "request_id": "string", "scored_at": "timestamp"}  # fmt: skip

# The service's log writer in a process of its own: each request's rows appended (write-ahead
# file, then the queue), then acknowledged on stdout, as the service answers after put().
WRITER_SCRIPT = """
import sys, time
from datetime import UTC, datetime
from mlsteward.serving.logbook import PredictionLogWriter
kinds = %(kinds)r
lags, written = [], []
w = PredictionLogWriter(max_rows=100_000, flush_seconds=0.2, fsync_seconds=0.1,
                        on_fsync_lag=lambda model, lag: lags.append(lag),
                        on_written=lambda model, rows: written.append(rows))
w.register(%(model)r, kinds)
w.start()
n = 0
while True:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    rows = [{"patient_id": 3 * n + k, "prediction_proba": 0.5, "model_version": "1",
             "arm": "champion", "request_id": f"req-{n}", "scored_at": now_us}
            for k in range(3)]
    assert w.offer(%(model)r, rows)
    print(f"ack {n} {max(lags, default=0.0):.4f} {sum(written)}", flush=True)
    n += 1
    time.sleep(0.0005)
"""


def acked_until_killed(after_seconds: float) -> tuple[set[str], float, int]:
    """Run the writer script, SIGKILL its whole process group (the writer's child too, as an
    out-of-memory kill of a container does) ``after_seconds`` after its first batch was
    published, mid-stream; the request ids it acknowledged, the largest fsync lag it saw and
    its pid."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT % {"kinds": KINDS, "model": MODEL}],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    acked: set[str] = set()
    lag = 0.0
    assert proc.stdout is not None
    started = None
    try:
        for line in proc.stdout:
            _, n, seen, published = line.decode().split()
            acked.add(f"req-{n}")
            lag = max(lag, float(seen))
            if started is None and int(published):
                started = time.monotonic()
            if started is not None and time.monotonic() - started >= after_seconds:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert acked, f"the writer acknowledged nothing:\n{stderr}"
    return acked, lag, proc.pid


def logged_requests() -> dict[str, int]:
    frame = prediction_log.read(MODEL, columns=["request_id"])
    return frame["request_id"].value_counts().to_dict() if len(frame) else {}


@pytest.mark.fault_subset
def test_the_log_writer_killed_mid_stream_loses_no_acknowledged_row(
    fault_result: FaultResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_HOME", str(tmp_path / "home"))  # not the module's stack
    acked, lag, _ = acked_until_killed(after_seconds=1.0)
    before = logged_requests()
    restarted = PredictionLogWriter(max_rows=100_000, flush_seconds=0.2)
    restarted.register(MODEL, KINDS)
    restarted.start()  # replays what the killed writer left
    try:
        logged = logged_requests()
    finally:
        assert restarted.close() == 0
    lost = sorted(acked - set(logged))
    twice = {r: n for r, n in logged.items() if n != 3}
    assert not lost, f"{len(lost)} acknowledged request(s) missing from the log: {lost[:5]}"
    assert not twice, f"requests not logged exactly once (3 rows each): {list(twice)[:5]}"
    assert restarted.replay.rows > 0, "the kill left nothing to replay: it struck too late"
    assert before, "nothing was published before the kill: it struck too early"
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        FAULT,
        point="the service's log writer (write-ahead file, writer thread and process), killed "
        "with its process group mid-stream",
        outcome="recovered",
        user_sees="every acknowledged prediction is in the log after the restart's replay",
        recovery_seconds=round(restarted.replay.seconds, 3),
        rows_lost=3 * len(lost),
        requests_failed=0,
        checks=checks,
        figures={
            "acknowledged_requests": len(acked),
            "rows_published_before_restart": 3 * sum(1 for r in before if r in acked),
            "rows_replayed": restarted.replay.rows,
            "segments_replayed": restarted.replay.segments,
            "torn_bytes_dropped": restarted.replay.torn_bytes,
            "max_fsync_lag_seconds": round(lag, 4),
            "fsync_interval_seconds": 0.1,
        },
    )


# -- the real service ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def stack(champion_and_challenger: dict[str, Any], mlsteward_home: Path) -> dict[str, Any]:
    write_config(mlsteward_home.parent / "config", tuning=FAST_TUNING, **SERVICE_SETTINGS)
    return champion_and_challenger


class Answered:
    """Clients posting one entity a request until stopped; the request ids answered 200."""

    def __init__(self, service: Service, ids: list[Any], clients: int = 4) -> None:
        self.ids = ids
        self.request_ids: set[str] = set()
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(service, k), daemon=True)
            for k in range(clients)
        ]

    def __enter__(self) -> Answered:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self, service: Service, k: int) -> None:
        n = k
        with httpx.Client(base_url=service.url, headers=service.headers, timeout=5) as client:
            while not self._stop.is_set():
                n += len(self._threads)
                try:
                    r = client.post(PREDICT, json={"entity_ids": [self.ids[n % len(self.ids)]]})
                except httpx.HTTPError:
                    with self._lock:
                        self.failed += 1
                    time.sleep(0.01)  # the service is gone: the kill, as intended
                    continue
                with self._lock:
                    if r.status_code == 200:
                        self.request_ids.add(r.json()["request_id"])
                    else:
                        self.failed += 1


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_service_killed_under_load_loses_no_answered_prediction(
    stack: dict[str, Any], start_service: Callable[..., Service], fault_result: FaultResult
) -> None:
    service = start_service()
    with Answered(service, stack["ids"]) as load:
        wait_until(lambda: len(load.request_ids) >= 300, timeout=60)
        metrics = scrape(service.url)  # the fsync lag as the service has seen it so far
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(10)
    answered = load.request_ids
    lag = buckets(metrics, "mlsteward_prediction_log_fsync_lag_seconds")
    restarted = start_service()  # replays before it answers: ready means replayed
    after = scrape(restarted.url)
    logged = logged_requests()
    lost = sorted(answered - set(logged))
    twice = {r: n for r, n in logged.items() if n != 1}
    assert not lost, f"{len(lost)} answered prediction(s) missing from the log: {lost[:5]}"
    assert not twice, f"predictions logged more than once: {list(twice)[:5]}"
    replayed = metric(after, "mlsteward_prediction_log_replayed_rows")
    replay_seconds = metric(after, "mlsteward_prediction_log_replay_seconds")
    r = httpx.post(
        f"{restarted.url}{PREDICT}", json={"entity_ids": [stack["ids"][0]]},
        headers=restarted.headers, timeout=10,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    restarted.stop()
    checks = assert_invariants([MODEL])
    fault_result.record(
        FAULT,
        point="the prediction service under load from 4 clients, killed with SIGKILL",
        outcome="recovered",
        user_sees="requests in flight at the kill fail; every answered prediction is in the "
        "log after the restart, which replays the write-ahead file before it answers",
        recovery_seconds=round(replay_seconds, 3),
        rows_lost=len(lost),
        requests_failed=load.failed,
        checks=checks,
        figures={
            "answered_before_kill": len(answered),
            "rows_replayed": int(replayed),
            "fsync_lag_p50_seconds_at_most": quantile(lag, 0.5),
            "fsync_lag_p99_seconds_at_most": quantile(lag, 0.99),
            "fsync_lag_max_bucket_seconds": quantile(lag, 1.0),
            "fsync_count": lag[-1][1] if lag else 0,
            "fsync_interval_seconds": 0.1,
        },
    )

"""The disk that holds the prediction log, full: predict answers 503 naming the log within 5 s
instead of hanging, ``/healthz`` says why, and when space returns everything recovers by
itself with no accepted row lost.

The disk is real: a small tmpfs mounted as the model's prediction-log directory, filled to
the last byte by a file, then freed by deleting it. The cheap point is the service's log
writer alone; the full one is the prediction service of a trained stack, over ``/v1`` and the
Open Inference Protocol alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlsteward.config.settings import predictions_dir
from mlsteward.monitoring import prediction_log
from mlsteward.serving.logbook import PredictionLogUnavailable, PredictionLogWriter
from tests.faults.conftest import FaultResult
from tests.support.disk import fill, metric, scrape, tmpfs
from tests.support.fault_checks import assert_invariants
from tests.support.governance import MODEL, write_config
from tests.support.serving import FAST_TUNING, SERVICE_SETTINGS, Service

FAULT = "disk-full-prediction-log"
PREDICT = f"/v1/models/{MODEL}/predict"
INFER = f"/v2/models/{MODEL}/infer"
UNWRITABLE = "prediction log cannot be written"
REFUSAL_BOUND_SECONDS = 5.0
RECOVERY_TIMEOUT_SECONDS = 60.0
KINDS = {"patient_id": "int", "model_version": "string", "arm": "string",
         "request_id": "string", "scored_at": "timestamp"}  # fmt: skip


def rows(request: int, n: int = 3) -> list[dict[str, object]]:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    return [
        {"patient_id": 10 * request + k, "prediction_proba": 0.5, "model_version": "1",
         "arm": "champion", "request_id": f"req-{request}", "scored_at": now_us}
        for k in range(n)
    ]  # fmt: skip


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def logged_requests() -> set[str]:
    frame = prediction_log.read(MODEL, columns=["request_id"])
    return set(frame["request_id"]) if len(frame) else set()


@pytest.mark.fault_subset
def test_the_log_writer_refuses_at_once_on_a_full_disk_and_recovers(
    fault_result: FaultResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_HOME", str(tmp_path / "home"))
    log_dir = predictions_dir(MODEL)
    with tmpfs(log_dir, "2m"):
        w = PredictionLogWriter(max_rows=100_000, flush_seconds=1.0, fsync_seconds=0.05)
        w.register(MODEL, KINDS)
        w.start()
        try:
            accepted, n = [], 0
            for n in range(20):
                assert w.offer(MODEL, rows(n))
                accepted.append(f"req-{n}")
            wait_until(lambda: w.depth() == 0, 30)
            for n in range(20, 25):  # queued, not yet written when the disk fills
                assert w.offer(MODEL, rows(n))
                accepted.append(f"req-{n}")
            filler = fill(log_dir)
            held = w.depth()
            for n in range(25, 25 + 200):  # rows queued behind the full disk, until it refuses
                started = time.monotonic()
                try:
                    w.offer(MODEL, rows(n))
                except PredictionLogUnavailable as exc:
                    refused_in = time.monotonic() - started
                    message = exc.message
                    break
                accepted.append(f"req-{n}")
            else:
                pytest.fail("a full disk never refused an append")
            assert (
                message == f"prediction log cannot be written: No space left on device ({log_dir})"
            )
            assert w.failure == message
            with pytest.raises(PredictionLogUnavailable):
                w.offer(MODEL, rows(999))  # and keeps refusing while it is full
            filler.unlink()
            recovered_in = wait_until(lambda: w.failure is None and w.depth() == 0, 30)
            assert w.offer(MODEL, rows(1000))
            accepted.append("req-1000")
            assert w.close() == 0
            lost = sorted(set(accepted) - logged_requests())
            assert not lost, f"accepted rows lost: {lost}"
        finally:
            w.close()
    checks = assert_invariants([MODEL], champions=False)
    fault_result.record(
        FAULT,
        point="the service's log writer on a 2 MB tmpfs, filled to the last byte",
        outcome="recovered",
        user_sees=message.replace(str(log_dir), "<the model's log directory>"),
        recovery_seconds=round(recovered_in, 3),
        rows_lost=0,
        requests_failed=0,
        checks=checks,
        figures={
            "refused_in_seconds": round(refused_in, 6),
            "rows_held_through_the_fault": held,
            "appends_accepted_after_fill": len(accepted) - 26,
            "accepted_requests": len(accepted),
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


def timed_post(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(path, json=body)
    return response, time.monotonic() - started


def infer_body(entity: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "patient_id", "datatype": "INT64", "shape": [1], "data": [entity]}]}


def test_the_service_on_a_full_disk_answers_503_says_why_and_recovers(
    stack: dict[str, Any], start_service: Callable[..., Service], fault_result: FaultResult
) -> None:
    ids = stack["ids"]
    log_dir = predictions_dir(MODEL)
    before = logged_requests()  # the module's earlier rows are on the disk under the mount
    with tmpfs(log_dir, "4m"):
        service = start_service()
        try:
            answered: set[str] = set()
            with httpx.Client(base_url=service.url, headers=service.headers, timeout=30) as c:
                for n in range(20):
                    r = c.post(PREDICT, json={"entity_ids": [ids[n]]})
                    assert r.status_code == 200, r.text
                    answered.add(r.json()["request_id"])
                filler = fill(log_dir)
                # answered until the segment's last page is full, then refused
                slowest, refusal = 0.0, None
                after_fill = 0
                for n in range(20, 2_000):
                    r, took = timed_post(c, PREDICT, {"entity_ids": [ids[n % len(ids)]]})
                    slowest = max(slowest, took)
                    if r.status_code == 200:
                        answered.add(r.json()["request_id"])
                        after_fill += 1
                        continue
                    refusal = r
                    break
                assert refusal is not None, "a full disk never refused a prediction"
                assert refusal.status_code == 503, refusal.text
                expected = f"{UNWRITABLE}: No space left on device ({log_dir})"
                assert refusal.json()["detail"][0]["msg"] == expected
                # every later request, in either protocol, is refused at once and says why
                v1, v1_took = timed_post(c, PREDICT, {"entity_ids": [ids[0]]})
                v2, v2_took = timed_post(c, INFER, infer_body(ids[0]))
                assert v1.status_code == 503 and v1.json()["detail"][0]["msg"] == expected
                assert v2.status_code == 503 and expected in v2.json()["error"], v2.text
                assert v1.headers["retry-after"] == "1" and v2.headers["retry-after"] == "1"
                worst = max(slowest, v1_took, v2_took)
                assert worst < REFUSAL_BOUND_SECONDS, f"an answer took {worst:.2f} s"
                health = httpx.get(f"{service.url}/healthz", timeout=10)
                assert health.status_code == 503 and health.json()["reason"] == expected
                ready = httpx.get(f"{service.url}/readyz", timeout=10)
                assert ready.status_code == 503 and ready.json()["reason"] == expected
                assert httpx.get(f"{service.url}/v2/health/ready", timeout=10).status_code == 503
                metrics = scrape(service.url)
                assert metric(metrics, "mlsteward_prediction_log_writable") == 0
                shed = metric(metrics, "mlsteward_requests_shed_total", 'reason="prediction_log"')
                assert shed >= 2

                filler.unlink()  # space returns: no restart, no operator
                freed = time.monotonic()
                wait_until(
                    lambda: httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200,
                    RECOVERY_TIMEOUT_SECONDS,
                )
                recovered_in = time.monotonic() - freed
                assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
                r = c.post(PREDICT, json={"entity_ids": [ids[1]]})
                assert r.status_code == 200, r.text
                answered.add(r.json()["request_id"])
                v2 = c.post(INFER, json=infer_body(ids[2]))
                assert v2.status_code == 200, v2.text
            assert service.stop() is not None  # SIGTERM: writes what is queued
            lost = sorted(answered - logged_requests())
            assert not lost, f"{len(lost)} answered prediction(s) missing from the log"
            checks = assert_invariants([MODEL])
        finally:
            service.stop()
    assert before <= logged_requests(), "the log under the mount is back as it was"
    fault_result.record(
        FAULT,
        point="the prediction service, its prediction-log directory a 4 MB tmpfs filled to "
        "the last byte",
        outcome="recovered",
        user_sees=f"predict (/v1, /v2): 503 '{UNWRITABLE}: No space left on device (<the "
        "model's log directory>)' with Retry-After; /healthz and /readyz: 503 with the same "
        "reason; 200 again once space returns, no restart",
        recovery_seconds=round(recovered_in, 3),
        rows_lost=len(lost),
        requests_failed=3,
        checks=checks,
        figures={
            "slowest_answer_seconds": round(worst, 4),
            "answered_after_fill_before_refusal": after_fill,
            "answered": len(answered),
        },
    )

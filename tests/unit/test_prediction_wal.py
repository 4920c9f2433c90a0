"""The prediction log's write-ahead file: its records, their torn tails and the replay a start
makes of what a dead service left, on real files and a real log-writer process."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from mlsteward.config.settings import predictions_dir
from mlsteward.monitoring import prediction_log
from mlsteward.serving import wal
from mlsteward.serving.admission import RateLimiter
from mlsteward.serving.logbook import PredictionLogUnavailable, PredictionLogWriter
from mlsteward.serving.settings import ServingConfigError, ServingSettings

MODEL = "heart_disease"
KINDS = {"patient_id": "int", "model_version": "string", "arm": "string",
         "request_id": "string", "scored_at": "timestamp"}  # fmt: skip


def rows(first: int, n: int) -> list[dict[str, object]]:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    return [
        {"patient_id": i, "prediction_proba": 0.5, "model_version": "1", "arm": "champion",
         "request_id": f"r{i}", "scored_at": now_us}
        for i in range(first, first + n)
    ]  # fmt: skip


def record_bytes(model: str, batch: list[dict[str, object]]) -> bytes:
    return b"".join(wal.encode(model, len(batch), pickle.dumps(batch, protocol=5)))


def dead_instance(segments: dict[str, bytes]) -> Path:
    """A service's write-ahead directory as a SIGKILL leaves it: segments, nobody's lock."""
    directory = wal.wal_root(predictions_dir(MODEL)) / prediction_log.new_id()
    directory.mkdir(parents=True)
    for name, data in segments.items():
        (directory / f"{name}{wal.SUFFIX}").write_bytes(data)
    return directory


def writer() -> PredictionLogWriter:
    w = PredictionLogWriter(max_rows=1_000, flush_seconds=0.05, fsync_seconds=0.01)
    w.register(MODEL, KINDS)
    return w


def logged_ids() -> list[str]:
    frame = prediction_log.read(MODEL)
    return sorted(frame["request_id"]) if len(frame) else []


def test_records_read_back_and_a_torn_tail_is_dropped_with_its_byte_count() -> None:
    first, second = record_bytes(MODEL, rows(0, 2)), record_bytes(MODEL, rows(2, 3))
    records, torn = wal.decode(first + second)
    assert torn == 0
    assert [(r.model, r.rows) for r in records] == [(MODEL, 2), (MODEL, 3)]
    assert pickle.loads(records[1].blob)[0]["request_id"] == "r2"
    for cut in range(1, len(second)):  # a crash can stop the second record at any byte
        records, torn = wal.decode(first + second[:cut])
        assert len(records) == 1 and torn == cut, cut


def test_a_record_failing_its_crc_ends_the_segment() -> None:
    first, second = record_bytes(MODEL, rows(0, 2)), bytearray(record_bytes(MODEL, rows(2, 3)))
    second[-1] ^= 0xFF
    records, torn = wal.decode(first + bytes(second) + record_bytes(MODEL, rows(5, 1)))
    assert len(records) == 1
    assert torn == len(second) + len(record_bytes(MODEL, rows(5, 1)))


def test_a_start_replays_a_dead_services_rows_once_before_it_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published = prediction_log.new_id()
    unpublished = prediction_log.new_id()
    torn_tail = record_bytes(MODEL, rows(90, 1))[:-7]
    directory = dead_instance(
        {published: record_bytes(MODEL, rows(0, 2)),
         unpublished: record_bytes(MODEL, rows(2, 3)) + record_bytes(MODEL, rows(5, 1)) + torn_tail}
    )  # fmt: skip
    # the dead service had published its first batch, but died before deleting the segment
    table = pa.table(
        {"request_id": ["r0", "r1"], "patient_id": [0, 1],
         "scored_at": pa.array([datetime.now(UTC)] * 2, prediction_log.TS_TYPE)}
    )  # fmt: skip
    prediction_log.append_table(MODEL, table, batch_id=published)
    w = writer()
    w.start()
    try:
        assert logged_ids() == ["r0", "r1", "r2", "r3", "r4", "r5"], "once each, none lost"
        assert (w.replay.rows, w.replay.segments) == (6, 2)
        assert w.replay.torn_bytes == len(torn_tail)
        assert f"{len(torn_tail)} byte(s)" in caplog.text
        assert not directory.exists(), "replayed segments, and their directory, are deleted"
        assert set(prediction_log.read(MODEL)["batch_id"]) == {published, unpublished}
    finally:
        assert w.close() == 0


def test_a_live_services_segments_are_never_replayed() -> None:
    live = writer()
    live.start()
    try:
        assert live.offer(MODEL, rows(0, 3))
        other = writer()
        other.start()  # a second service on the same home, while the first one runs
        assert other.replay.rows == 0
        assert other.close() == 0
    finally:
        assert live.close() == 0
    assert logged_ids() == ["r0", "r1", "r2"]


def test_published_segments_go_and_a_clean_close_leaves_no_write_ahead_file() -> None:
    w = writer()
    w.start()
    root = wal.wal_root(predictions_dir(MODEL))
    assert w.offer(MODEL, rows(0, 4))
    segments = list(root.glob(f"*/*{wal.SUFFIX}"))
    assert len(segments) == 1 and segments[0].stat().st_size > 0
    assert w.close() == 0
    assert logged_ids() == ["r0", "r1", "r2", "r3"]
    assert not any(root.glob(f"*/*{wal.SUFFIX}")) and not any(root.glob("*.lock"))
    # the batch is published under the name its segment had
    assert set(prediction_log.read(MODEL)["batch_id"]) == {segments[0].stem}


def test_a_batch_cut_off_between_two_days_is_finished_on_retry() -> None:
    day1, day2 = datetime(2025, 3, 1, 23, 59, tzinfo=UTC), datetime(2025, 3, 2, 0, 1, tzinfo=UTC)
    table = pa.table(
        {"request_id": ["a", "b"], "scored_at": pa.array([day1, day2], prediction_log.TS_TYPE)}
    )
    prediction_log.append_table(MODEL, table.slice(0, 1), batch_id="cut")  # the first day only
    with pytest.raises(FileExistsError, match="append-only"):
        prediction_log.append_table(MODEL, table, batch_id="cut")
    prediction_log.append_table(MODEL, table, batch_id="cut", resume=True)
    assert logged_ids() == ["a", "b"]


def test_a_log_that_stopped_keeping_up_refuses_after_a_bounded_wait_and_loses_nothing() -> None:
    w = PredictionLogWriter(max_rows=10, flush_seconds=0.05, room_wait_seconds=0.3)
    w.register(MODEL, KINDS)
    w.start()
    assert w.offer(MODEL, rows(0, 1))
    deadline = time.monotonic() + 30
    while w.depth():  # the writer process is up and has written a batch
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = w._sink._proc
    assert child is not None and child.pid is not None
    os.kill(child.pid, signal.SIGSTOP)  # a disk so slow that nothing is written
    try:
        assert w.offer(MODEL, rows(1, 8))
        started = time.monotonic()
        with pytest.raises(PredictionLogUnavailable, match=r"^prediction log is behind: 8 "):
            asyncio.run(w.put(MODEL, rows(20, 5)))
        waited = time.monotonic() - started
        assert 0.3 <= waited < 2, waited
        assert w.failure is None, "behind is not broken: /healthz stays 200"
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert w.close() == 0
    assert logged_ids() == sorted(f"r{i}" for i in range(9))


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MLSTEWARD_SERVING_LOG_FSYNC_MS", "0"), ("MLSTEWARD_SERVING_LOG_FSYNC_MS", "fast"),
     ("MLSTEWARD_SERVING_MAX_IN_FLIGHT", "-3"), ("MLSTEWARD_SERVING_RATE_LIMIT", "nan")],
)  # fmt: skip
def test_a_setting_that_does_not_parse_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ServingConfigError, match=variable):
        ServingSettings.from_env()


def test_settings_defaults_and_the_derived_admission_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = ServingSettings.from_env()
    assert settings.log_fsync_ms == 100 and settings.rate_limit == 0
    assert settings.in_flight_limit(128) == 2 * 128
    monkeypatch.setenv("MLSTEWARD_SERVING_MAX_IN_FLIGHT", "7")
    monkeypatch.setenv("MLSTEWARD_SERVING_LOG_FSYNC_MS", "250")
    settings = ServingSettings.from_env()
    assert settings.in_flight_limit(128) == 7 and settings.log_fsync_ms == 250


def test_the_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.wait(b"t", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait(b"t", 0.0) == pytest.approx(0.1)
    assert limiter.wait(b"other", 0.0) == 0.0, "each token has its own bucket"
    assert limiter.wait(b"t", 0.1) == 0.0
    small = RateLimiter(rate=1, max_keys=4)
    for n in range(100):  # a flood of keys cannot grow it
        small.wait(str(n).encode(), 0.0)
    assert len(small._buckets) <= 4

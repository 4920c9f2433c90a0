"""The service's prediction-log writer: a real child process writing real parquet files.

Rows must reach the log typed like batch scoring's, all of them, once each: through a full
queue, a failing disk, a killed writer process and shutdown.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from mlsteward.config.settings import predictions_dir
from mlsteward.monitoring import prediction_log
from mlsteward.serving.logbook import PredictionLogWriter

MODEL = "heart_disease"
KINDS = {"age": "int", "chol": "float", "sex": "category", "smoker": "bool",
         "patient_id": "int", "model_version": "string", "arm": "string",
         "request_id": "string"}  # fmt: skip


def rows(first: int, n: int, explain: bool = False) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    out = []
    for i in range(first, first + n):
        row: dict[str, object] = {
            "patient_id": i, "event_timestamp": now, "age": 40 + i % 30, "chol": 200.5,
            "sex": "F" if i % 2 else "M", "smoker": bool(i % 3), "prediction_proba": 0.25,
            "prediction": 0, "model_version": "1", "arm": "champion",
            "request_id": f"r{i}", "scored_at": now,
        }  # fmt: skip
        if explain:
            row |= {"shap_1_feature": "age", "shap_1_value": 0.5}
        out.append(row)
    return out


def writer(**kw: object) -> PredictionLogWriter:
    w = PredictionLogWriter(max_rows=kw.pop("max_rows", 1_000), flush_seconds=0.05, **kw)  # type: ignore[arg-type]
    w.register(MODEL, KINDS)
    w.start()
    return w


def wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_rows_are_written_typed_with_sparse_columns_as_nulls() -> None:
    w = writer()
    assert w.offer(MODEL, rows(0, 3))
    assert w.offer(MODEL, rows(3, 2, explain=True))
    assert w.close() == 0
    logged = prediction_log.read(MODEL).sort_values("patient_id")
    assert logged["patient_id"].tolist() == [0, 1, 2, 3, 4]
    assert logged["shap_1_feature"].tolist() == [None, None, None, "age", "age"]
    files = list(predictions_dir(MODEL).rglob("batch-*.parquet"))
    schema = pq.read_schema(files[0])
    assert schema.field("age").type == pa.int64()
    assert schema.field("chol").type == pa.float64()
    assert schema.field("smoker").type == pa.bool_()
    assert schema.field("sex").type == pa.string()
    assert schema.field("scored_at").type == pa.timestamp("us", tz="UTC")


def test_a_full_queue_makes_requests_wait_and_loses_nothing() -> None:
    w = writer(max_rows=10)
    assert w.offer(MODEL, rows(0, 8))
    assert not w.offer(MODEL, rows(8, 5)), "room for 2 rows must refuse a 5-row request"

    async def requests() -> None:
        await asyncio.gather(*(w.put(MODEL, rows(100 + 5 * k, 5)) for k in range(6)))

    asyncio.run(requests())
    assert w.close() == 0
    logged = prediction_log.read(MODEL)
    assert sorted(logged["patient_id"]) == list(range(8)) + list(range(100, 130))


def test_a_failing_disk_keeps_rows_until_they_are_written_once() -> None:
    blocker = predictions_dir(MODEL) / f"date={datetime.now(UTC).date().isoformat()}"
    blocker.write_text("not a directory")  # every write fails: the day directory cannot be made
    w = writer()
    assert w.offer(MODEL, rows(0, 4))
    wait_for(lambda: w.failures >= 2)
    assert w.depth() == 4, "failed rows still count against the queue"
    blocker.unlink()
    wait_for(lambda: w.depth() == 0)
    assert w.close() == 0
    assert sorted(prediction_log.read(MODEL)["patient_id"]) == [0, 1, 2, 3]


def test_a_killed_writer_process_is_replaced() -> None:
    w = writer()
    assert w.offer(MODEL, rows(0, 3))
    wait_for(lambda: w.depth() == 0)
    proc = w._sink._proc
    assert proc is not None and proc.is_alive()
    proc.kill()
    proc.join(5)
    assert w.offer(MODEL, rows(3, 3))
    assert w.close() == 0
    logged = prediction_log.read(MODEL)
    assert sorted(logged["patient_id"]) == list(range(6))
    assert logged["request_id"].is_unique


def test_close_writes_everything_still_queued() -> None:
    w = PredictionLogWriter(max_rows=100_000, flush_seconds=3600)  # never flushes by itself
    w.register(MODEL, KINDS)
    w.start()
    for k in range(20):
        assert w.offer(MODEL, rows(10 * k, 10))
    assert w.close() == 0
    assert len(prediction_log.read(MODEL)) == 200

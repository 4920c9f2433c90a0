"""Prediction log: append/read round trip, time window, atomic publish, labels, concurrency."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsteward.config.settings import predictions_dir
from mlsteward.monitoring import prediction_log as plog
from mlsteward.monitoring import window_sample
from tests.support.forking import in_child

MODEL = "heart_disease"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def scored(n: int, scored_at: datetime, first_id: int = 0, top_k: int = 1) -> pd.DataFrame:
    """A frame shaped like ``ScoredBatch.frame``."""
    rng = np.random.default_rng(first_id)
    ids = np.arange(first_id, first_id + n)
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "event_timestamp": pd.Timestamp("2025-01-01", tz="UTC")
            + pd.to_timedelta(ids, unit="h"),
            "age": rng.integers(18, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "prediction_proba": rng.random(n),
        }
    )
    frame["prediction"] = (frame.prediction_proba >= 0.5).astype(int)
    frame["model_version"] = "1"
    frame["scored_at"] = pd.Series(pd.Timestamp(scored_at), index=frame.index).astype(
        "datetime64[us, UTC]"
    )
    for r in range(1, top_k + 1):
        frame[f"shap_{r}_feature"] = "age"
        frame[f"shap_{r}_value"] = rng.normal(size=n)
    return frame


def test_append_read_round_trip() -> None:
    batch = scored(50, T0)
    path = plog.append(MODEL, batch, batch_id="b1")
    assert path == predictions_dir(MODEL) / "date=2025-03-01" / "batch-b1.parquet"
    back = plog.read(MODEL)
    assert (back["batch_id"] == "b1").all()
    # Timestamps are stored as microseconds (UTC); everything else round-trips exactly.
    expected = batch.astype({"event_timestamp": "datetime64[us, UTC]"})
    pd.testing.assert_frame_equal(back.drop(columns="batch_id"), expected)
    assert list(plog.read(MODEL, columns=["patient_id", "prediction"]).columns) == [
        "patient_id",
        "prediction",
    ]


def test_empty_log_reads_empty() -> None:
    assert plog.read(MODEL).empty
    assert list(plog.read(MODEL, columns=["a"]).columns) == ["a"]
    assert plog.read_with_labels(MODEL).empty


def test_two_appends_both_read_and_ids_are_unique() -> None:
    p1 = plog.append(MODEL, scored(10, T0, 0))
    p2 = plog.append(MODEL, scored(20, T0, 100, top_k=3))  # a wider schema reads too
    assert p1 != p2
    back = plog.read(MODEL)
    assert len(back) == 30
    assert back["batch_id"].nunique() == 2
    assert back["shap_3_value"].isna().sum() == 10
    assert sorted(back.patient_id) == [*range(10), *range(100, 120)]


def test_time_filter_on_scored_at() -> None:
    for d in range(5):  # one batch per day: 2025-03-01 ... 2025-03-05 at 12:00
        plog.append(MODEL, scored(10, T0 + timedelta(days=d), d * 10), batch_id=f"d{d}")
    window = plog.read(MODEL, since=T0 + timedelta(days=1), until=T0 + timedelta(days=3))
    assert sorted(window.batch_id.unique()) == ["d1", "d2"]  # since inclusive, until exclusive
    assert len(plog.read(MODEL, since=T0 + timedelta(days=3, hours=1))) == 10
    assert len(plog.read(MODEL, until=T0)) == 0
    # Naive bounds are UTC.
    naive = plog.read(MODEL, since=datetime(2025, 3, 5), until=datetime(2025, 3, 6))
    assert list(naive.batch_id.unique()) == ["d4"]
    with pytest.raises(ValueError, match="not in the prediction log"):
        plog.read(MODEL, columns=["nope"])


def test_batch_spanning_days_is_split_by_day() -> None:
    batch = pd.concat([scored(5, T0, 0), scored(5, T0 + timedelta(days=1), 5)], ignore_index=True)
    path = plog.append(MODEL, batch, batch_id="span")
    assert path.parent.name == "date=2025-03-01"
    assert (predictions_dir(MODEL) / "date=2025-03-02" / "batch-span.parquet").exists()
    assert len(plog.read(MODEL, since=T0 + timedelta(hours=13))) == 5


def test_files_are_never_rewritten() -> None:
    path = plog.append(MODEL, scored(5, T0), batch_id="same")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="append-only"):
        plog.append(MODEL, scored(7, T0), batch_id="same")
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="batch_id"):
        plog.append(MODEL, scored(5, T0), batch_id="../escape")
    with pytest.raises(ValueError, match="scored_at"):
        plog.append(MODEL, scored(5, T0).drop(columns="scored_at"))


def test_write_is_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is written under a hidden temp name; readers never see a partial file, and a
    failed write leaves nothing behind."""
    seen: list[str] = []
    real_link = os.link

    def spy_link(src, dst, *args, **kwargs):
        seen.append(Path(src).name)
        assert not Path(dst).exists()
        assert plog.read(MODEL).empty  # the complete temp file is invisible to readers
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(plog.os, "link", spy_link)
    path = plog.append(MODEL, scored(5, T0), batch_id="atomic")
    assert seen and seen[0].startswith(".batch-atomic.parquet.") and seen[0].endswith(".tmp")
    assert [p.name for p in path.parent.iterdir()] == ["batch-atomic.parquet"]

    def broken_write(*args, **kwargs):
        Path(args[1]).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(plog.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        plog.append(MODEL, scored(5, T0), batch_id="broken")
    assert [p.name for p in path.parent.iterdir()] == ["batch-atomic.parquet"]
    assert len(plog.read(MODEL)) == 5


def test_attach_labels_counts_and_join() -> None:
    plog.append(MODEL, scored(10, T0, 0), batch_id="a")
    plog.append(MODEL, scored(10, T0 + timedelta(days=1), 10), batch_id="b")
    preds = plog.read(MODEL)
    labels = preds.loc[[0, 1, 2, 12], ["patient_id", "event_timestamp"]].copy()
    labels["heart_disease"] = [1, 0, 1, 0]
    extra = pd.DataFrame(
        {
            "patient_id": [999, 2],
            "event_timestamp": [pd.Timestamp("2030-01-01", tz="UTC"), labels.event_timestamp[2]],
            "heart_disease": [1, 0],
        }
    )
    labels = pd.concat([labels, extra], ignore_index=True)  # an unknown key; key 2 repeated
    counts = plog.attach_labels(
        MODEL, labels, entity="patient_id", timestamp="event_timestamp", label="heart_disease"
    )
    assert (counts["matched"], counts["unmatched"], counts["duplicates"]) == (4, 1, 1)
    assert counts["stored"] == 5 and counts["relabelled"] == 0
    assert counts["unmatched_examples"] == [[999, "2030-01-01T00:00:00+00:00"]]
    assert Path(counts["path"]).parent == predictions_dir(MODEL) / "labels"

    out = plog.read_with_labels(MODEL)
    assert len(out) == 20
    got = out.set_index("patient_id")["label"]
    assert got[[0, 1, 2, 12]].tolist() == [1, 0, 0, 0]  # key 2: the last row of the ingest
    assert got.drop([0, 1, 2, 12]).isna().all()
    assert out["label_ingested_at"].notna().sum() == 4

    # A later ingest relabels key 0; the newest label wins. The window still applies.
    again = plog.attach_labels(
        MODEL,
        labels.iloc[[0]].assign(heart_disease=0),
        entity="patient_id",
        timestamp="event_timestamp",
        label="heart_disease",
    )
    assert (again["matched"], again["relabelled"]) == (1, 1)
    out = plog.read_with_labels(MODEL, until=T0 + timedelta(hours=1))
    assert len(out) == 10
    assert out.set_index("patient_id")["label"][0] == 0
    cols = plog.read_with_labels(MODEL, columns=["prediction"])
    assert list(cols.columns) == ["prediction", "label", "label_ingested_at"]


def test_attach_labels_validates_columns_and_entity_types() -> None:
    plog.append(MODEL, scored(5, T0), batch_id="a")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['y'\]"):
        plog.attach_labels(
            MODEL,
            pd.DataFrame({"patient_id": [1], "t": [T0]}),
            entity="patient_id",
            timestamp="t",
            label="y",
        )
    preds = plog.read(MODEL)
    text_ids = pd.DataFrame(
        {
            "patient_id": preds.patient_id.astype(str),  # e.g. read from CSV
            "event_timestamp": preds.event_timestamp.dt.tz_localize(None),  # naive = UTC
            "y": 1,
        }
    )
    counts = plog.attach_labels(
        MODEL, text_ids, entity="patient_id", timestamp="event_timestamp", label="y"
    )
    assert (counts["matched"], counts["unmatched"]) == (5, 0)
    assert plog.read_with_labels(MODEL)["label"].tolist() == [1] * 5


def test_labels_before_any_prediction_are_unmatched_not_dropped() -> None:
    labels = pd.DataFrame(
        {
            "patient_id": [1, 2, 7],
            "event_timestamp": pd.to_datetime(
                ["2025-01-01 01:00", "2025-01-01 02:00", "2025-01-01 00:00"], utc=True
            ),
            "y": [0, 1, 1],
        }
    )
    counts = plog.attach_labels(
        MODEL, labels, entity="patient_id", timestamp="event_timestamp", label="y"
    )
    assert (counts["matched"], counts["unmatched"], counts["stored"]) == (0, 3, 3)
    # Predictions logged afterwards pick the stored labels up at read time (patient i has its
    # event at 2025-01-01 + i hours, so patient 7's label at 00:00 still matches nothing).
    plog.append(MODEL, scored(8, T0, 0), batch_id="late")
    got = plog.read_with_labels(MODEL).set_index("patient_id")["label"]
    assert got[[1, 2]].tolist() == [0, 1]
    assert got.drop([1, 2]).isna().all()


def _append_many(home: str, worker: int, batches: int, rows: int) -> None:
    os.environ["MLSTEWARD_HOME"] = home
    for b in range(batches):
        plog.append(MODEL, scored(rows, T0, first_id=worker * 10_000 + b * rows))


def test_two_processes_appending_at_once(mlsteward_home: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=in_child(_append_many), args=(str(mlsteward_home), w, 8, 100))
        for w in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    back = plog.read(MODEL)
    assert len(back) == 2 * 8 * 100
    assert back["batch_id"].nunique() == 16
    assert back.patient_id.is_unique
    leftovers = [p for p in predictions_dir(MODEL).rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# -- bounded window sample (drift) ---------------------------------------------------------------
DRIFT_COLUMNS = ["patient_id", "age", "sex", "prediction_proba"]


def _big_log(days: int = 6, per_day: int = 10_000, labelled_every: int = 3) -> pd.DataFrame:
    """``days`` batches of ``per_day`` rows (one per day, the first with its rows' scoring times
    spread over the day, so the window's lower bound cuts through a file), and outcomes for
    every ``labelled_every``-th row, a quarter of them positive. Returns the log as read."""
    for d in range(days):
        batch = scored(per_day, T0 + timedelta(days=d), first_id=d * per_day, top_k=2)
        if d == 0:
            spread = T0 - timedelta(hours=11) + pd.to_timedelta(np.arange(per_day), unit="s")
            batch["scored_at"] = pd.Series(spread, index=batch.index).astype("datetime64[us, UTC]")
        plog.append(MODEL, batch, batch_id=f"big{d}")
    logged = plog.read(MODEL)
    labels = logged.iloc[::labelled_every][["patient_id", "event_timestamp"]].copy()
    labels["heart_disease"] = (np.arange(len(labels)) % 4 == 0).astype(int)
    plog.attach_labels(
        MODEL, labels, entity="patient_id", timestamp="event_timestamp", label="heart_disease"
    )
    return logged


SINCE = T0 - timedelta(hours=10)  # 1 h into the first day's spread: 3,600 of its rows cut


def test_window_above_the_cap_is_read_within_the_bound_and_recorded() -> None:
    _big_log()
    whole = plog.read_with_labels(MODEL, since=SINCE, columns=DRIFT_COLUMNS)
    max_rows, batch_rows = 1_000, 1_000
    cap = 2 * max_rows
    w = window_sample.sample_window(
        MODEL, since=SINCE, columns=DRIFT_COLUMNS, max_rows=max_rows, seed=7, batch_rows=batch_rows
    )
    assert w.rows == len(whole) == 56_400  # 5 whole days, 6,400 of the first day's rows
    assert w.labelled_rows == int(whole["label"].notna().sum())
    # Each of the two buffers holds at most cap + max(batch, cap / 4) rows plus one batch,
    # whatever the window's size.
    bound = 2 * (cap + max(batch_rows, cap // 4) + batch_rows)
    assert 0 < w.peak_retained_rows <= bound < w.rows / 6
    assert len(w.frame) == cap and list(w.frame.columns) == [
        *DRIFT_COLUMNS,
        "label",
        "label_ingested_at",
    ]
    # A subset of the window's rows, each with the label the whole read gives it.
    expected = whole.set_index("patient_id").loc[w.frame["patient_id"]]
    assert w.frame["patient_id"].is_unique
    np.testing.assert_array_equal(w.frame["age"].to_numpy(), expected["age"].to_numpy())
    pd.testing.assert_series_equal(
        w.frame["label"].reset_index(drop=True),
        expected["label"].reset_index(drop=True),
        check_names=False,
    )
    assert w.frame["patient_id"].is_monotonic_increasing  # log order
    # Labelled rows drawn on their own: sparse outcomes still give up to cap of them.
    assert w.labelled is not None and len(w.labelled) == cap
    assert w.labelled["label"].notna().all()
    assert w.presample == {
        "rows_in_window": w.rows,
        "labelled_rows_in_window": w.labelled_rows,
        "rows": cap,
        "rate": pytest.approx(1.25 * cap / w.rows),
        "seed": 7,
        "key": window_sample.PRESAMPLE_KEY,
        "method": w.presample["method"],
        "labelled": {
            "rows_in_window": w.labelled_rows,
            "rows": cap,
            "method": f"the {cap:,} labelled rows with the smallest seeded key hash",
            "seed": 7,
            "key": window_sample.PRESAMPLE_KEY,
        },
    }


def test_presample_depends_on_the_seed_only() -> None:
    _big_log(days=4)

    def draw(seed: int, batch_rows: int) -> window_sample.WindowSample:
        return window_sample.sample_window(
            MODEL, since=SINCE, columns=DRIFT_COLUMNS, max_rows=1_000, seed=seed,
            batch_rows=batch_rows,
        )  # fmt: skip

    first = draw(3, 1_000)
    pd.testing.assert_frame_equal(first.frame, draw(3, 1_000).frame)
    # The same rows however the files are cut into batches: bottom-k does not see order.
    pd.testing.assert_frame_equal(first.frame, draw(3, 7_777).frame)
    assert first.labelled is not None
    pd.testing.assert_frame_equal(first.labelled, draw(3, 7_777).labelled)
    other = set(draw(4, 1_000).frame["patient_id"])
    overlap = len(other & set(first.frame["patient_id"])) / len(other)
    assert overlap < 0.2  # two independent 2,000-of-~35,000 samples share ~6%


def test_presample_keeps_the_label_strata() -> None:
    _big_log()
    whole = plog.read_with_labels(MODEL, since=SINCE, columns=DRIFT_COLUMNS)
    w = window_sample.sample_window(
        MODEL, since=SINCE, columns=DRIFT_COLUMNS, max_rows=1_000, seed=1
    )

    def shares(frame: pd.DataFrame) -> pd.Series:
        return frame["label"].value_counts(normalize=True, dropna=False).sort_index()

    # 2,000 uniform rows: a share's standard error is below 0.011; 0.04 is ~4 of them.
    pd.testing.assert_series_equal(shares(w.frame), shares(whole), atol=0.04, check_names=False)
    assert w.labelled is not None
    positive = whole["label"].dropna().mean()
    assert w.labelled["label"].mean() == pytest.approx(positive, abs=0.04)


def test_window_below_the_cap_is_read_whole_unchanged() -> None:
    _big_log(days=2, per_day=1_000)
    since = T0 - timedelta(hours=11, minutes=-5)
    before = plog.read_with_labels(MODEL, since=since, columns=DRIFT_COLUMNS)
    w = window_sample.sample_window(
        MODEL, since=since, columns=DRIFT_COLUMNS, max_rows=1_000, seed=9
    )
    assert len(before) == 1_700  # 2,000 logged, 300 before the bound; <= cap (2,000)
    pd.testing.assert_frame_equal(w.frame, before)
    assert w.presample is None and w.labelled is None
    assert (w.rows, w.labelled_rows) == (1_700, int(before["label"].notna().sum()))


def test_only_the_needed_columns_are_read() -> None:
    _big_log(days=3)
    w = window_sample.sample_window(
        MODEL, since=SINCE, columns=["age", "prediction_proba", "not_logged"], max_rows=1_000
    )
    assert w.presample is not None
    # features asked for (those logged), the label's join key, and the time filter's column
    assert w.columns_read == [
        "age",
        "prediction_proba",
        "patient_id",
        "event_timestamp",
        "scored_at",
    ]
    assert list(w.frame.columns) == ["age", "prediction_proba", "label", "label_ingested_at"]
    unread = {"sex", "prediction", "model_version", "batch_id", "shap_1_feature", "shap_2_value"}
    assert unread <= set(plog.read(MODEL).columns) and not unread & set(w.columns_read)


def test_empty_window_samples_nothing() -> None:
    w = window_sample.sample_window(MODEL, columns=DRIFT_COLUMNS, max_rows=1_000)
    assert (w.rows, len(w.frame), w.presample) == (0, 0, None)

"""`mlsteward gc`: only snapshots nothing references go, and only once they are old enough.

Real stack throughout (Prefect flows, MLflow on SQLite, Feast, the audit store); the one
training run of the module registers the version whose data must survive.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.ingestion import ingestion_flow
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.settings import mlflow_tracking_uri, snapshot_root
from mlsteward.data.snapshots import snapshot_path
from mlsteward.governance import mlflow_adapter
from mlsteward.platform import gc
from mlsteward.platform.gc import collect_garbage, referenced_digests

MODEL = "heart_disease"
HOUR = 3600.0


def ingest(path: Path) -> str:
    return ingestion_flow(model=MODEL, source=str(path)).data_version


def variant(source: Path, dst: Path, drop: int) -> Path:
    """The same cohort without its first ``drop`` rows: another data version."""
    pd.read_parquet(source).iloc[drop:].to_parquet(dst, index=False)
    return dst


def age(directory: Path, seconds: float = 2 * HOUR) -> None:
    """Backdate every file, as if ingested ``seconds`` ago."""
    past = time.time() - seconds
    for path in directory.iterdir():
        os.utime(path, (past, past))


def collected() -> list:
    store = audit_store()
    try:
        return store.query(action=Action.SNAPSHOTS_COLLECTED)
    finally:
        store.close()


def digests(entries: list[dict]) -> list[str | None]:
    return [e["digest"] for e in entries]


@pytest.fixture
def two_versions(small_cohort_path: Path, tmp_path: Path) -> tuple[str, str]:
    """Digest A (no longer referenced, backdated) and B (current)."""
    a = ingest(small_cohort_path)
    b = ingest(variant(small_cohort_path, tmp_path / "b.parquet", drop=50))
    age(snapshot_path(MODEL, a).parent)
    return a, b


def test_only_the_unreferenced_snapshot_is_collected_and_audited(
    small_cohort_path: Path, tmp_path: Path
) -> None:
    from flows.training import training_flow

    a = ingest(small_cohort_path)
    trained = training_flow(model=MODEL, max_evals=1)
    assert trained.lineage["data_digest"] == a
    b = ingest(variant(small_cohort_path, tmp_path / "b.parquet", drop=50))
    c = ingest(variant(small_cohort_path, tmp_path / "c.parquet", drop=100))
    assert len({a, b, c}) == 3
    store = snapshot_path(MODEL, a).parent
    age(store)

    # A training run that opened its MLflow run on B keeps B while it runs.
    run_id = mlflow_adapter.start_run(MODEL, "train-gc", {"mlsteward.data_digest": b})
    refs = referenced_digests()[MODEL]
    assert refs[a] == [f"registered {MODEL} v{trained.version}"]
    assert refs[b] == [f"running training run {run_id}"]
    assert refs[c] == ["current snapshot", "feature store source"]
    assert collect_garbage(dry_run=False, min_age_seconds=0).removed == []
    mlflow_adapter.end_run(run_id)

    dry = collect_garbage(dry_run=True, min_age_seconds=0)
    assert digests(dry.removed) == [b]
    assert dry.bytes_freed == snapshot_path(MODEL, b).stat().st_size > 0
    assert all(snapshot_path(MODEL, d).exists() for d in (a, b, c))
    assert collected() == []

    done = collect_garbage(dry_run=False, min_age_seconds=0)
    assert digests(done.removed) == [b]
    assert not snapshot_path(MODEL, b).exists()
    assert snapshot_path(MODEL, a).exists() and snapshot_path(MODEL, c).exists()
    kept = {k["digest"]: k["reasons"] for k in done.kept}
    assert set(kept) == {a, c} and "current snapshot" in kept[c]
    [record] = collected()
    assert record.seq == done.audit_seq and record.model == MODEL
    assert record.details["digests"] == [b]

    assert collect_garbage(dry_run=False, min_age_seconds=0).removed == []
    assert len(collected()) == 1  # nothing removed, nothing recorded


def test_young_temp_and_unknown_files(two_versions: tuple[str, str]) -> None:
    a, b = two_versions
    store = snapshot_path(MODEL, a).parent
    young_tmp = store / "tmpyoung.parquet.tmp"
    young_tmp.write_bytes(b"partial")
    old_tmp = store / "tmpold.parquet.tmp"
    old_tmp.write_bytes(b"crashed write")
    strangers = [store / "notes.parquet", store / "README.txt", store / f"{a.upper()}.parquet"]
    for path in strangers:
        path.write_bytes(b"not a snapshot")
    age(store)  # everything old: A, the strangers, old_tmp ...
    now = time.time()
    os.utime(young_tmp, (now, now))  # ... but the half-written file is fresh
    os.utime(snapshot_path(MODEL, a), (now, now))  # and so is A

    result = collect_garbage(dry_run=False, min_age_seconds=HOUR)
    assert [r["path"] for r in result.removed] == [str(old_tmp)]
    assert not old_tmp.exists() and young_tmp.exists()
    assert sorted(digests(result.too_young), key=str) == sorted([a, None], key=str)
    assert snapshot_path(MODEL, a).exists()
    assert sorted(result.unknown) == sorted(str(p) for p in strangers)
    assert all(p.exists() for p in strangers)
    assert digests(result.kept) == [b]


def test_registered_versions_on_later_pages_are_kept(
    two_versions: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_versions
    uri = mlflow_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in ("aa_other", "ab_other", MODEL):  # MODEL sorts last: on the second page
        client.create_registered_model(name)
    for n in range(3):  # only the third version (second page) references A
        tags = {"lineage.data_digest": a} if n == 2 else {}
        client.create_model_version(MODEL, source=str(snapshot_root()), tags=tags)
    monkeypatch.setattr(gc, "_PAGE", 2)

    assert referenced_digests()[MODEL][a] == [f"registered {MODEL} v3"]
    result = collect_garbage(dry_run=False, min_age_seconds=0)
    assert result.removed == []
    assert set(digests(result.kept)) == {a, b}


def test_an_unreadable_registry_deletes_nothing(
    two_versions: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two_versions
    broken = tmp_path / "not-a-database.db"
    broken.write_text("this is not SQLite")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{broken}")
    with pytest.raises(Exception, match="file is not a database"):
        collect_garbage(dry_run=False, min_age_seconds=0)
    assert snapshot_path(MODEL, a).exists()
    assert collected() == []


def test_snapshot_root_elsewhere_is_honoured(
    small_cohort_path: Path, tmp_path: Path, mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "shared-store"
    monkeypatch.setenv("MLSTEWARD_SNAPSHOT_ROOT", str(elsewhere))
    a = ingest(small_cohort_path)
    b = ingest(variant(small_cohort_path, tmp_path / "b.parquet", drop=50))
    assert (elsewhere / MODEL / f"{a}.parquet").exists()
    assert not (mlsteward_home / "snapshots" / MODEL / f"{a}.parquet").exists()
    age(elsewhere / MODEL)

    result = collect_garbage(dry_run=False, min_age_seconds=0)
    assert result.root == str(elsewhere.resolve())
    assert [r["path"] for r in result.removed] == [str(elsewhere / MODEL / f"{a}.parquet")]
    assert not (elsewhere / MODEL / f"{a}.parquet").exists()
    assert (elsewhere / MODEL / f"{b}.parquet").exists()


def test_cli_gc_dry_run_then_collect(two_versions: tuple[str, str]) -> None:
    a, b = two_versions
    runner = CliRunner()

    dry = runner.invoke(app, ["gc", "--dry-run", "--min-age", "1", "--json"])
    assert dry.exit_code == 0, dry.output
    out = json.loads(dry.stdout)
    assert out["dry_run"] is True and digests(out["removed"]) == [a]
    assert snapshot_path(MODEL, a).exists()

    human = runner.invoke(app, ["gc", "--dry-run"])
    assert human.exit_code == 0, human.output
    assert f"would remove {MODEL} {a}" in human.stdout
    assert "kept 1 referenced" in human.stdout

    done = runner.invoke(app, ["gc", "--min-age", "1", "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert digests(out["removed"]) == [a] and digests(out["kept"]) == [b]
    assert out["bytes_freed"] > 0 and out["audit_seq"] is not None
    assert not snapshot_path(MODEL, a).exists()

    young = runner.invoke(app, ["gc", "--min-age", "1000", "--json"])
    assert young.exit_code == 0 and json.loads(young.stdout)["removed"] == []


def test_partitions_of_killed_trainings_go_and_running_ones_stay() -> None:
    from mlsteward.config.settings import training_sets_dir
    from mlsteward.training.partitioned_set import release_directory, staging_directory
    from tests.unit.test_partitioned_set import backdate, left_by_a_dead_process

    root = training_sets_dir(MODEL)
    running = staging_directory(root)
    killed = left_by_a_dead_process(root)
    backdate(running)
    backdate(killed)
    try:
        dry = collect_garbage(dry_run=True, min_age_seconds=HOUR)
        assert [d["path"] for d in dry.removed_staging] == [str(killed)] and killed.exists()
        result = collect_garbage(dry_run=False, min_age_seconds=HOUR)
        assert result.removed_staging == [{"model": MODEL, "path": str(killed), "bytes": 10}]
        assert not killed.exists() and running.exists()
        record = collected()[-1]
        assert record.details["removed_staging"][0]["path"] == str(killed)
        assert "1 abandoned partition director(y/ies)" in record.reason
    finally:
        release_directory(running)

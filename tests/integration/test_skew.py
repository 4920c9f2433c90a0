"""Training-serving skew on the real stack: a trained champion, Feast (DuckDB offline, SQLite
online), the prediction service answering by entity id, its prediction log, and the alert
engine with its audit records.

One feature is corrupted in the online store for a quarter of the entities (as a write that
bypassed the source would); the service answers with it; the check finds exactly that feature,
fires one alert naming it, and, once the online store holds the source's values again and the
service has answered with them, resolves it.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlsteward.alerts.engine import observe
from mlsteward.alerts.state import Transition
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.features.online import online_features
from mlsteward.features.store import get_store
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.skew import MISSING_OFFLINE, check_skew
from tasks.skew import check_skew as check_skew_task
from tests.fixtures.serving import MakeClient
from tests.support.governance import MODEL
from tests.support.serving import FAST_TUNING, SERVICE_SETTINGS, shut_down

PREDICT = f"/v1/models/{MODEL}/predict"
CORRUPTED = "bmi"
ACTOR = "user:skew-test"


@pytest.fixture(scope="module")
def module_config() -> dict[str, Any]:
    """Fast tuning, and a service that writes its log every 0.2 s."""
    return {"tuning": FAST_TUNING, **SERVICE_SETTINGS}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def champion(mlsteward_home: Path) -> dict[str, Any]:
    """A promoted champion on a 3,000-row cohort, its features materialized."""
    from flows.ingestion import ingestion_flow, materialize_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = generate_cohort(n_rows=3_000, seed=5)
    source = write_dataset(cohort, mlsteward_home.parent / "cohort.parquet")
    ingestion_flow(model=MODEL, source=str(source))
    trained = training_flow(model=MODEL)
    assert trained.governance.decision == "promoted", trained.governance
    materialize_flow(model=MODEL)
    assert os.environ["MLSTEWARD_CONFIG_DIR"]  # the module's config, with the fast log
    return {"version": trained.version, "ids": sorted(cohort["patient_id"].unique().tolist())}


def write_online(cfg: ModelConfig, rows: pd.DataFrame) -> None:
    """Rows of the feature view written straight into the online store (every column of the
    view, as Feast's write needs), past the offline source."""
    store = get_store()
    view = store.get_feature_view(cfg.feature_view_name)
    frame = rows[[cfg.source.entity, *(f.name for f in view.features)]].copy()
    frame[cfg.timestamp_column] = pd.Timestamp.now(tz="UTC")
    frame[view.batch_source.created_timestamp_column] = pd.Timestamp.now(tz="UTC")
    store.write_to_online_store(cfg.feature_view_name, frame)


def served_rows() -> int:
    return len(prediction_log.read(MODEL, columns=["request_id"]))


def wait_for_log(rows: int) -> None:
    deadline = time.monotonic() + 30
    while served_rows() < rows:
        assert time.monotonic() < deadline, f"the log holds {served_rows()} rows, not {rows}"
        time.sleep(0.1)


def predict(client: Any, ids: list[Any]) -> None:
    for start in range(0, len(ids), 40):
        r = client.post(PREDICT, json={"entity_ids": ids[start : start + 40]})
        assert r.status_code == 200, r.text


def test_a_corrupted_online_feature_alerts_by_name_and_a_clean_run_resolves_it(
    champion: dict[str, Any], make_serving_client: MakeClient
) -> None:
    cfg = get_model_config(MODEL)
    ids = champion["ids"][:120]
    corrupted = ids[:30]
    source_values = online_features(cfg, corrupted, attributes=True)
    write_online(cfg, source_values.assign(bmi=source_values[CORRUPTED] * 1.25))

    client = make_serving_client()
    predict(client, ids)
    # features the client sent: no online read, never compared
    instance = source_values.drop(columns=["patient_id"]).iloc[0].to_dict()
    instance = {k: (v.item() if hasattr(v, "item") else v) for k, v in instance.items()}
    r = client.post(PREDICT, json={"instances": [instance]})
    assert r.status_code == 200, r.text
    wait_for_log(121)

    result = check_skew(cfg)
    assert (result.rows_in_window, result.rows_checked) == (120, 120)
    assert result.excluded == {"request": 1, "batch": 0}
    assert result.versions == {champion["version"]: 120}
    assert result.skewed == [CORRUPTED]
    bmi = result.features[CORRUPTED]
    assert (bmi.rows, bmi.differing, bmi.missing_offline) == (120, 30, 0)
    assert bmi.max_abs_diff == pytest.approx(0.25 * source_values[CORRUPTED].max())
    worst = bmi.worst[0]
    assert worst.entity in corrupted and worst.served == pytest.approx(worst.offline * 1.25)
    for name, feature in result.features.items():
        if name != CORRUPTED:
            assert feature.mismatches == 0, (name, feature.to_dict())

    outcomes = observe(cfg, result.observations(cfg, champion["version"]), actor=ACTOR)
    assert {o.observation.subject for o in outcomes} == set(cfg.feature_names)
    fired = [o for o in outcomes if o.transition is Transition.FIRED]
    assert [o.observation.subject for o in fired] == [CORRUPTED]
    assert all(o.observation.breached is False for o in outcomes if o not in fired)
    with audit_store() as audit:
        [record] = audit.query(model=MODEL, action=Action.ALERT_FIRED)
    assert record.details["rule"] == "skew" and record.details["subject"] == CORRUPTED
    assert record.details["value"] == pytest.approx(0.25)
    assert record.details["details"]["worst_entities"][0]["entity"] in corrupted
    assert CORRUPTED in record.reason

    # The source's values back in the online store; the service answers with them.
    write_online(cfg, source_values)
    restored = datetime.now(UTC)
    predict(client, ids)
    wait_for_log(241)
    shut_down(client)

    clean = check_skew(cfg, since=restored)
    assert clean.rows_checked == 120 and clean.skewed == []
    assert all(f.mismatches == 0 for f in clean.features.values())
    outcomes = observe(cfg, clean.observations(cfg, champion["version"]), actor=ACTOR)
    resolved = [o.observation.subject for o in outcomes if o.transition is Transition.RESOLVED]
    assert resolved == [CORRUPTED]
    with audit_store() as audit:
        [record] = audit.query(model=MODEL, action=Action.ALERT_RESOLVED)
    assert record.details["subject"] == CORRUPTED


def test_served_values_the_offline_store_never_had_are_counted_apart(
    champion: dict[str, Any], make_serving_client: MakeClient
) -> None:
    """An entity written only to the online store: every feature has no offline value."""
    cfg = get_model_config(MODEL)
    known = online_features(cfg, champion["ids"][:1], attributes=True)
    stranger = max(champion["ids"]) + 1_000
    write_online(cfg, known.assign(patient_id=stranger))
    began = datetime.now(UTC)
    before = served_rows()
    client = make_serving_client()
    predict(client, [stranger])
    wait_for_log(before + 1)
    shut_down(client)

    result = check_skew_task(cfg, since=began)  # the monitor's task, as a flow calls it
    assert result.rows_checked == 1 and result.rows_without_offline == 1
    assert set(result.skewed) == set(cfg.feature_names)
    for feature in result.features.values():
        assert (feature.differing, feature.missing_offline) == (0, 1)
        assert feature.worst[0].kind == MISSING_OFFLINE and feature.worst[0].offline is None

"""Canary rollouts on the real stack: the prediction service as a subprocess following the
registry, live traffic, Prometheus scrapes, the prediction log, MLflow and the audit trail.

One trained home for the module: v1 a weak (stump) champion, v2 a stronger challenger that
passed every gate. The tests run in file order and build on each other: v2 is rolled back on
errors, on latency and on prediction shift, refused while another canary is open, ended for
want of traffic, aborted when the service goes away mid-step, then promoted; the model card
shows all of it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.rollout import rollout_flow
from mlsteward.audit import Action
from mlsteward.config.models import get_model_config
from mlsteward.governance import canary as canary_state
from mlsteward.governance import promotion as governance
from mlsteward.governance import registry
from mlsteward.governance.candidate import needs_validation
from mlsteward.governance.mlflow_adapter import client
from mlsteward.rollout.eligibility import RolloutRefused
from mlsteward.rollout.service import ServiceUnavailable, shows_canary
from mlsteward.rollout.step import challenger_rows
from tests.support.governance import MODEL, write_config
from tests.support.platform import free_port
from tests.support.serving import FAST_TUNING, Service, issue_token, live_traffic

StartService = Callable[..., Service]

FAST_ROLLOUT = {
    "tuning": FAST_TUNING,  # as v2 was trained with
    "rollout": {
        "steps": [0.2, 0.5, 1.0],
        "min_requests": 30,
        "check_interval_seconds": 0.5,
        "step_timeout_seconds": 90,
        # A step's p99 here rests on a few dozen requests, i.e. it is their maximum: on a busy
        # test machine that moves by 5-10 ms between arms with nothing wrong. 20 ms keeps the
        # healthy runs clear of scheduler noise and is still far below the 60 ms injected delay.
        "guardrails": {"latency_slack_ms": 20},
    },
    "serving": {"poll_seconds": 0.3, "log_flush_seconds": 0.3},
}


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    """One home for the module (overrides the per-test one): the trained stack is shared."""
    return module_home


@pytest.fixture(scope="module")
def stack(champion_and_challenger: dict[str, Any]) -> dict[str, Any]:
    # From here on only rollout and serving settings differ from what v2 was validated with.
    write_config(Path(os.environ["MLSTEWARD_CONFIG_DIR"]), **FAST_ROLLOUT)
    return champion_and_challenger


@pytest.fixture
def service_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point the flow at a service (by its URL) for one test, with a viewer's token to watch it
    with (the service answers a description only to a caller who may read)."""

    def use(url: str) -> None:
        monkeypatch.setenv("MLSTEWARD_SERVING_URL", url)
        monkeypatch.setenv("MLSTEWARD_SERVING_TOKEN", issue_token("viewer", "rollout-watch"))

    yield use


def records(action: Action, version: str | None = None) -> list[Any]:
    with governance.open_audit() as store:
        return store.query(model=MODEL, action=action, version=version)


def assert_no_canary() -> None:
    target = canary_state.read_target(MODEL)
    assert target.canary is None, target
    tags = client().get_registered_model(MODEL).tags or {}
    assert not any(k.startswith("rollout.") for k in tags), tags


# -- pure helpers (no stack) -----------------------------------------------------------------

SCRAPE = """# TYPE mlsteward_predictions_total counter
mlsteward_predictions_total{{model="heart_disease",version="2",arm="challenger"}} {p}
# TYPE mlsteward_arm_errors_total counter
mlsteward_arm_errors_total{{model="heart_disease",version="2",arm="challenger"}} {e}
"""


def test_challenger_rows_count_answered_and_failed_rows_in_the_window() -> None:
    start, end = SCRAPE.format(p=10, e=2), SCRAPE.format(p=25, e=9)
    assert challenger_rows(start, end, MODEL, "2") == 15 + 7
    assert challenger_rows(start, end, MODEL, "3") == 0  # another version's rows do not count
    assert challenger_rows(start, start, MODEL, "2") == 0


def test_shows_canary_needs_the_rollout_the_version_and_the_fraction() -> None:
    t1, t0 = "2026-01-02T03:04:05.000006+00:00", "2026-01-02T03:04:05.000001+00:00"
    described = {
        "canary": {"started_at": t1, "challenger_version": "2", "fraction": 0.5, "step": 2},
        "challenger": {"version": "2"},
        "fraction": 0.5,
    }
    assert shows_canary(described, t1, "2")
    assert shows_canary(described, t1, "2", 0.5, 2)
    assert not shows_canary(described, t0, "2")
    assert not shows_canary(described, t1, "3")
    assert not shows_canary(described, t1, "2", 0.2)
    assert not shows_canary(described, t1, "2", 0.5, 1)
    assert not shows_canary({**described, "challenger": None}, t1, "2")
    assert not shows_canary({"canary": None, "challenger": None, "fraction": 0.0}, t1, "2")


def test_rollout_history_reads_each_rollout_from_its_records() -> None:
    from mlsteward.report import AuditEvent, ModelCard, render_markdown, rollout_history

    def ev(seq: int, action: str, rid: str, **details: Any) -> AuditEvent:
        ts = f"2026-01-01T00:00:{seq:02d}.000000Z"
        details = {"rollout_id": rid, "champion": "1", **details}
        return AuditEvent(seq, ts, action, "2", "bob", f"why {seq}", details)

    breach = {"check": "error_rate", "message": "challenger error rate 1.000 (40 of 40 rows)",
              "observed": {"error_rate": 1.0}, "limit": {"max_error_rate": 0.01}}  # fmt: skip
    config = {"rollout": {"steps": [0.2, 0.5, 1.0]}}
    events = [
        ev(1, "rollout_started", "a", config=config),
        ev(2, "rollout_rolled_back", "a", step=1, breaches=[breach]),
        ev(3, "rollout_started", "b", config=config),
        ev(4, "rollout_step_passed", "b", step=1),
        ev(5, "rollout_aborted", "b", step=2, reason="insufficient_traffic"),
        ev(6, "rollout_started", "c", config=config),
        ev(7, "rollout_step_passed", "c", step=1),
        ev(8, "rollout_step_passed", "c", step=2),
        ev(9, "rollout_step_passed", "c", step=3),
        ev(10, "rollout_completed", "c", decision="promoted"),
        ev(11, "rollout_started", "d", config=config),
        ev(12, "promoted", "x"),  # not a rollout record
    ]
    runs = rollout_history(events)
    assert [r.rollout_id for r in runs] == ["d", "c", "b", "a"]
    d, c, b, a = runs
    assert (a.decision, a.steps_reached, a.breach) == ("rolled_back", 1, "error_rate")
    assert (b.decision, b.steps_reached, b.steps_passed) == ("aborted", 2, [1])
    assert (c.decision, c.steps_reached, c.steps_passed) == ("promoted", 3, [1, 2, 3])
    assert (d.decision, d.steps_reached) == ("running", 0)
    assert a.planned_steps == [0.2, 0.5, 1.0] and a.champion == "1"
    card = ModelCard("m", "", "o", "2026-01-01T00:00:00", None, None, rollouts=runs)
    md = render_markdown(card)
    section = md.split("## Rollouts")[1].split("## Timeline")[0]
    assert "40 of 40 rows" in section and "rolled back" in section
    assert "3 of 3 (100%)" in section and "2 of 3 (50%)" in section
    empty = render_markdown(ModelCard("m", "", "o", "2026-01-01T00:00:00", None, None))
    assert "No canary rollouts yet." in empty


# -- the real stack ---------------------------------------------------------------------------


def test_the_fast_config_keeps_the_challenger_validated(stack: dict[str, Any]) -> None:
    """Only rollout/serving settings changed after training: v2's report is still current."""
    cfg = get_model_config(MODEL)
    assert cfg.rollout.steps == [0.2, 0.5, 1.0]
    assert cfg.serving.poll_seconds == 0.3
    info = registry.get_version(MODEL, stack["challenger"])
    assert info.validation_status == "passed"
    assert not needs_validation(info)
    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == stack["champion"]


def test_a_failing_challenger_is_rolled_back_at_the_first_step(
    stack: dict[str, Any], start_service: StartService, service_url: Any
) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    faults = {"challenger": {"error_rate": 1.0, "delay_ms": 0}}
    service = start_service(faults)
    service_url(service.url)
    with live_traffic(service, MODEL, stack["ids"]) as traffic:
        result = rollout_flow(model=MODEL)  # default: the challenger alias, v2
    assert traffic.failed == 0, traffic.errors[:3]  # the champion answered every row
    assert result.decision == "rolled_back", result
    assert result.version == v2
    assert result.step == 1
    assert [b["check"] for b in result.breaches] == ["error_rate"]
    observed = result.breaches[0]["observed"]
    assert observed["error_rate"] == 1.0
    assert observed["errors"] >= 30

    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v1
    assert_no_canary()
    assert registry.get_version(MODEL, v2).lifecycle == governance.Lifecycle.REJECTED
    assert registry.version_by_alias(MODEL, registry.CHALLENGER) is None
    [rolled] = records(Action.ROLLOUT_ROLLED_BACK, v2)
    assert rolled.details["rollout_id"] == result.rollout_id
    assert rolled.details["breaches"][0]["check"] == "error_rate"
    assert rolled.details["breaches"][0]["observed"]["error_rate"] == 1.0
    assert rolled.details["breaches"][0]["limit"]["max_error_rate"] == 0.01
    assert "error_rate" in rolled.reason
    [told] = records(Action.ALERT_FIRED, v2)  # the rollback is an alert, not only a record
    assert (told.details["rule"], told.details["subject"]) == ("error_rate", "canary")
    assert told.details["severity"] == "critical" and told.details["value"] == 1.0
    [started] = records(Action.ROLLOUT_STARTED, v2)
    assert started.details["config"]["rollout"]["steps"] == [0.2, 0.5, 1.0]
    assert started.details["service_url"] == service.url
    assert records(Action.ROLLOUT_STEP_PASSED, v2) == []


def test_a_rejected_challenger_is_not_rolled_out_by_default(stack: dict[str, Any]) -> None:
    """After the rollback v2 lost the challenger alias: naming no version is refused."""
    before = len(records(Action.ROLLOUT_REFUSED))
    with pytest.raises(RolloutRefused, match="no challenger"):
        rollout_flow(model=MODEL)
    assert len(records(Action.ROLLOUT_REFUSED)) == before + 1
    assert_no_canary()


def test_a_slow_challenger_is_rolled_back_on_latency(
    stack: dict[str, Any], start_service: StartService, service_url: Any
) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    # Still passed: a rollback rejects the lifecycle, not the validation.
    assert registry.get_version(MODEL, v2).validation_status == "passed"
    faults = {"challenger": {"error_rate": 0.0, "delay_ms": 60}}
    service = start_service(faults)
    service_url(service.url)
    # One entity per request: a request that mixes arms is timed for both.
    with live_traffic(service, MODEL, stack["ids"], per_request=1, threads=3):
        result = rollout_flow(model=MODEL, version=v2, requested_by="user:alice")
    assert result.decision == "rolled_back", result
    assert result.step == 1
    # with 50 or more rows per arm the two models' prediction shift may breach as well
    checks = {b["check"]: b for b in result.breaches}
    assert set(checks) - {"prediction_shift"} == {"latency_p99"}, checks
    observed = checks["latency_p99"]["observed"]
    assert observed["difference_ms"] > 40
    assert observed["ratio"] > 1.5
    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v1
    assert_no_canary()
    rolled = records(Action.ROLLOUT_ROLLED_BACK, v2)
    assert len(rolled) == 2
    # the run acting for alice, so the trail links the person and the run's logs
    assert rolled[-1].actor.startswith("flow-run:") and rolled[-1].actor.endswith(" for user:alice")
    assert "latency_p99" in [b["check"] for b in rolled[-1].details["breaches"]]


def test_refusals_leave_the_registry_as_it_was(stack: dict[str, Any], service_url: Any) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    # No service answering
    service_url(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RolloutRefused, match="unreachable"):
        rollout_flow(model=MODEL, version=v2)
    assert_no_canary()
    # A canary already open (another rollout's): refused, and that canary is left alone
    other = canary_state.open_canary(MODEL, v2, 0.1)
    try:
        with pytest.raises(RolloutRefused, match="already has a canary open"):
            rollout_flow(model=MODEL, version=v2)
        assert canary_state.read_target(MODEL).canary == other
    finally:
        canary_state.close_canary(MODEL)
    # The champion itself
    with pytest.raises(RolloutRefused, match="already the champion"):
        rollout_flow(model=MODEL, version=v1)
    refused = records(Action.ROLLOUT_REFUSED)
    assert "unreachable" in refused[-3].reason
    assert refused[-2].details["open_canary"]["rollout_id"] == other.rollout_id
    assert "already the champion" in refused[-1].reason
    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v1
    assert_no_canary()


@pytest.fixture(scope="module")
def healthy_service(stack: dict[str, Any], start_module_service: StartService) -> Service:
    """One fault-free service for the last rollouts."""
    return start_module_service()


def test_a_service_that_refuses_to_be_watched_refuses_the_rollout(
    stack: dict[str, Any],
    healthy_service: Service,
    service_url: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a token that may read, the service does not describe itself: the rollout is
    refused before any canary opens, and says which token to set."""
    service_url(healthy_service.url)
    monkeypatch.delenv("MLSTEWARD_SERVING_TOKEN")
    monkeypatch.delenv("MLSTEWARD_TOKEN", raising=False)
    with pytest.raises(
        RolloutRefused, match=r"refused to describe heart_disease \(401\)"
    ) as refused:
        rollout_flow(model=MODEL, version=stack["challenger"])
    assert "MLSTEWARD_SERVING_TOKEN" in str(refused.value)
    assert "mlsteward serve" not in str(refused.value)
    assert_no_canary()


def test_a_challenger_whose_predictions_shift_is_rolled_back(
    stack: dict[str, Any], healthy_service: Any, service_url: Any
) -> None:
    """v1 is a stump model and v2 a deeper one (so v2 can beat it on the gates): their
    probabilities are distributed very differently, which the shift guardrail catches."""
    v1, v2 = stack["champion"], stack["challenger"]
    service_url(healthy_service.url)
    with live_traffic(healthy_service, MODEL, stack["ids"]) as traffic:
        result = rollout_flow(model=MODEL, version=v2)
    assert traffic.failed == 0, traffic.errors[:3]
    assert result.decision == "rolled_back", result
    checks = {b["check"]: b for b in result.breaches}
    assert "prediction_shift" in checks and "error_rate" not in checks, checks
    observed = checks["prediction_shift"]["observed"]
    assert observed["psi"] > 0.25
    assert observed["challenger_rows"] >= 50 and observed["champion_rows"] >= 50
    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v1
    assert_no_canary()


def test_too_little_traffic_ends_the_rollout_without_a_verdict(
    stack: dict[str, Any], healthy_service: Any, service_url: Any
) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    short = {**FAST_ROLLOUT["rollout"], "step_timeout_seconds": 2}
    write_config(config_dir, **{**FAST_ROLLOUT, "rollout": short})
    rolled_back_before = len(records(Action.ROLLOUT_ROLLED_BACK, v2))
    service_url(healthy_service.url)
    try:
        result = rollout_flow(model=MODEL, version=v2)  # nobody sends a request
    finally:
        write_config(config_dir, **FAST_ROLLOUT)
    assert result.decision == "aborted", result
    assert result.step == 1
    assert "insufficient traffic: 0 of 30" in result.reason
    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v1
    assert_no_canary()
    aborted = records(Action.ROLLOUT_ABORTED, v2)[-1]
    assert aborted.details["rollout_id"] == result.rollout_id
    assert aborted.details["reason"] == "insufficient_traffic"
    assert len(records(Action.ROLLOUT_ROLLED_BACK, v2)) == rolled_back_before  # not judged


def test_an_error_mid_step_closes_the_canary_and_is_audited(
    stack: dict[str, Any], start_service: StartService, service_url: Any
) -> None:
    """The service goes away during a step: the flow fails, but leaves no canary open."""
    v1, v2 = stack["champion"], stack["challenger"]
    errors: list[BaseException] = []
    service = start_service()
    service_url(service.url)

    def stop_service_once_the_step_runs() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                shown = httpx.get(
                    f"{service.url}/v1/models/{MODEL}", headers=service.headers, timeout=5
                ).json()
                if (shown.get("canary") or {}).get("step") == 1:
                    break
                time.sleep(0.1)
            time.sleep(1.5)  # the flow polls every 0.3 s: it is scraping by now
            service.process.send_signal(signal.SIGTERM)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    stopper = threading.Thread(target=stop_service_once_the_step_runs, daemon=True)
    stopper.start()
    with pytest.raises(ServiceUnavailable, match="cannot scrape"):
        rollout_flow(model=MODEL, version=v2)  # no traffic: the step waits for rows
    stopper.join(timeout=30)
    assert errors == []
    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v1
    assert_no_canary()
    aborted = records(Action.ROLLOUT_ABORTED, v2)[-1]
    assert aborted.details["error"] == "ServiceUnavailable"
    assert aborted.details["canary_closed"] is True
    assert aborted.details["step"] == 1
    assert "cannot scrape" in aborted.reason


def test_a_healthy_challenger_is_promoted_through_governance(
    stack: dict[str, Any], healthy_service: Any, service_url: Any
) -> None:
    v1, v2 = stack["champion"], stack["challenger"]
    # This test is about the way to promotion, not the guardrails (exercised above): accept
    # the by-construction shift between the two test models, and a p99 that on a few dozen
    # requests is their maximum, so one GC pause or log flush on a busy machine could decide.
    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    wide = {
        **FAST_ROLLOUT["rollout"],
        "guardrails": {"latency_slack_ms": 500, "max_prediction_psi": 10.0},
    }
    write_config(config_dir, **{**FAST_ROLLOUT, "rollout": wide})
    assert not needs_validation(registry.get_version(MODEL, v2))
    service_url(healthy_service.url)
    with live_traffic(healthy_service, MODEL, stack["ids"]) as traffic:
        result = rollout_flow(model=MODEL, version=v2)
    assert traffic.failed == 0, traffic.errors[:3]
    assert traffic.versions.get(v2, 0) > 0
    assert result.decision == "promoted", result
    assert result.governance.decision == "promoted"
    assert result.governance.promotion.previous_champion == v1
    assert [s["step"] for s in result.steps] == [1, 2, 3]
    assert [s["fraction"] for s in result.steps] == [0.2, 0.5, 1.0]
    assert all(s["verdict"]["passed"] for s in result.steps)
    assert all(s["challenger_rows"] >= 30 for s in result.steps)
    # At 100 % the champion answers nothing: every logged row of the last step is v2's.
    assert result.steps[-1]["log_rows"] > 0

    assert registry.version_by_alias(MODEL, registry.CHAMPION).version == v2
    assert_no_canary()
    rid = result.rollout_id
    passed = [r for r in records(Action.ROLLOUT_STEP_PASSED, v2) if r.details["rollout_id"] == rid]
    assert [r.details["step"] for r in passed] == [1, 2, 3]
    assert passed[0].details["verdict"]["passed"] is True
    [promoted] = records(Action.PROMOTED, v2)
    [completed] = records(Action.ROLLOUT_COMPLETED, v2)
    assert completed.details["decision"] == "promoted"
    assert passed[-1].seq < promoted.seq < completed.seq


def test_the_champion_cannot_be_rolled_out_again(stack: dict[str, Any], service_url: Any) -> None:
    service_url(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RolloutRefused, match="already the champion"):
        rollout_flow(model=MODEL, version=stack["challenger"])


def test_the_model_card_shows_the_rollouts(stack: dict[str, Any]) -> None:
    from mlsteward import report

    card = report.collect_model_card(MODEL)
    rollouts = card.rollouts[::-1]  # newest first on the card
    decisions = ["rolled_back", "rolled_back", "rolled_back", "aborted", "aborted", "promoted"]
    assert [r.decision for r in rollouts] == decisions
    assert [r.version for r in rollouts] == [stack["challenger"]] * 6
    assert [r.champion for r in rollouts] == [stack["champion"]] * 6
    assert [r.breach for r in rollouts][:1] + [r.breach for r in rollouts][3:] == [
        "error_rate", None, None, None,
    ]  # fmt: skip
    assert "latency_p99" in rollouts[1].breach
    assert "prediction_shift" in rollouts[2].breach
    assert rollouts[0].breaches[0]["observed"]["error_rate"] == 1.0
    # PSI needs 50 rows per arm: at 20 % the step may be judged before the challenger has them
    assert [r.steps_reached for r in rollouts[:2]] == [1, 1]
    assert rollouts[2].steps_reached in (1, 2)
    assert [r.steps_reached for r in rollouts[3:]] == [1, 1, 3]
    assert rollouts[5].steps_passed == [1, 2, 3]
    md = report.render_markdown(card)
    assert "## Rollouts" in md
    section = md.split("## Rollouts")[1].split("## Timeline")[0]
    assert "latency_p99" in section and "error_rate" in section and "PSI" in section
    assert "3 of 3 (100%)" in section
    html = report.render_html(card)
    assert "Rollouts" in html and "latency_p99" in html

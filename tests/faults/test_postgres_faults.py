"""PostgreSQL restarted and its connections dropped, under the production profile.

Every database of the profile (audit trail, identity, alert state, MLflow's backend store,
Prefect's database) lives on a private cluster (``tests/support/fault_postgres.py``) that these
tests crash, restart and cut off; the machine's shared PostgreSQL is never touched. The MLflow
and Prefect servers run on that cluster as ``make up PROFILE=production`` would run them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mlsteward.audit import Action, AuditError, audit_store
from mlsteward.config import profiles, settings
from mlsteward.platform.provision import drop, provision
from mlsteward.signing import keys
from tests.conftest import REPO_ROOT
from tests.faults.conftest import FaultResult
from tests.fixtures.production import OVERRIDING, REDIS_URL
from tests.support.fault_checks import assert_invariants
from tests.support.fault_postgres import PrivatePostgres, Restart
from tests.support.governance import MODEL
from tests.support.platform import free_port
from tests.support.stack import stop_process

PROBE_ACTOR = "service:fault-probe"


# -- the private cluster and the production profile on it ----------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def mlsteward_home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def mlflow_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def profile(
    mlsteward_home: Path, cluster: PrivatePostgres, mlflow_port: int
) -> Iterator[profiles.Profile]:
    """This process on the production profile, every database on the private cluster."""
    name = f"t{secrets.token_hex(5)}"
    with pytest.MonkeyPatch.context() as mp:
        for var in OVERRIDING:
            mp.delenv(var, raising=False)
        mp.setenv("MLSTEWARD_PROFILE", "production")
        mp.setenv("MLSTEWARD_POSTGRES_URL", cluster.url)
        mp.setenv("MLSTEWARD_REDIS_URL", REDIS_URL)
        mp.setenv("MLSTEWARD_DB_PREFIX", name)
        mp.setenv("MLSTEWARD_FEAST_PROJECT", name)
        mp.setenv("MLSTEWARD_MLFLOW_URL", f"http://127.0.0.1:{mlflow_port}")
        # the module's config directory holds its model config; the profiles are the repo's
        config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
        shutil.copytree(REPO_ROOT / "config" / "profiles", config_dir / "profiles")
        keys.init_keys()  # the governance key a deployment is given
        prof = profiles.active()
        try:
            provision(prof)
            yield prof
        finally:
            if not cluster.is_running():
                cluster.start()
            drop(prof)  # the Feast project's Redis keys; the databases go with the cluster


def _probe(run: str, *probe: int) -> dict[str, Any]:
    """A probe record's details: which test run wrote it, and its number."""
    return {"probe": list(probe), "run": run}


def _probes(store: Any, run: str) -> list[tuple[int, ...]]:
    return [
        tuple(r.details["probe"])
        for r in store.query(action=Action.BATCH_SCORED)
        if r.actor == PROBE_ACTOR and r.details.get("run") == run
    ]


def _assert_chain_whole(run: str) -> tuple[int, list[tuple[int, ...]]]:
    """The trail verifies and its seqs run 1..N with no gap; returns N and the run's probes."""
    with audit_store() as store:
        report = store.verify()
        assert report.ok, report
        seqs = [r.seq for r in store.query()]
        probes = _probes(store, run)
    assert seqs == list(range(1, len(seqs) + 1)), "a gap in the audit trail's seqs"
    return len(seqs), probes


def _assert_each_once(acked: list[tuple[int, ...]], stored: list[tuple[int, ...]]) -> None:
    """Every acknowledged record is stored once, and nothing else was stored."""
    twice = [p for p, n in Counter(stored).items() if n > 1]
    assert not twice, f"written twice: {twice[:5]}"
    assert sorted(stored) == sorted(acked), (
        f"lost: {sorted(set(acked) - set(stored))[:5]}; "
        f"stored but never acknowledged: {sorted(set(stored) - set(acked))[:5]}"
    )


# -- every client connection terminated -----------------------------------------------------


@pytest.mark.fault_subset
def test_dropped_connections_reconnect_on_the_next_call_and_write_nothing_twice(
    cluster: PrivatePostgres, profile: profiles.Profile, fault_result: FaultResult
) -> None:
    from mlsteward.alerts.state import AlertState, Transition
    from mlsteward.gateway.deliveries import PostgresDeliveryLog
    from mlsteward.identity import authentication
    from mlsteward.identity.principals import local_principal
    from mlsteward.identity.store import IdentityStore

    run = secrets.token_hex(4)
    admin = local_principal()
    audit = audit_store()
    identity = IdentityStore()
    alerts = AlertState()
    deliveries = PostgresDeliveryLog(settings.audit_url())
    try:
        # Long-lived stores, as the API, the gateway and the monitor keep them.
        audit.append(Action.BATCH_SCORED, reason="before", actor=PROBE_ACTOR,
                     details=_probe(run, 0, 0, 0))  # fmt: skip
        identity.add_principal("alice", roles="viewer", by=admin)
        _, first = identity.create_token("user:alice", by=admin)
        _, second = identity.create_token("user:alice", by=admin)
        authentication.clear_cache()
        assert authentication.authenticate(first).identity == "user:alice"
        fired = alerts.check(MODEL, "fault_probe", "x", breached=True,
                             quiet_period=timedelta(hours=1))  # fmt: skip
        assert fired.transition == Transition.FIRED
        assert deliveries.claim(f"{run}-1", f"{run}-body-1", "push")

        ended = cluster.terminate_clients()
        assert ended >= 5, ended  # audit, identity, the authenticator's, alerts, deliveries
        started = time.monotonic()
        # The next call of each store works, the first time.
        record = audit.append(Action.BATCH_SCORED, reason="after", actor=PROBE_ACTOR,
                              details=_probe(run, 0, 0, 1))  # fmt: skip
        identity.add_principal("bob", roles="viewer", by=admin)
        assert authentication.authenticate(second).identity == "user:alice"
        again = alerts.check(MODEL, "fault_probe", "x", breached=True,
                             quiet_period=timedelta(hours=1))  # fmt: skip
        assert deliveries.claim(f"{run}-2", f"{run}-body-2", "push")
        assert not deliveries.claim(f"{run}-1", f"{run}-body-1", "push")  # still once-only
        recovery = time.monotonic() - started
        assert (again.transition, again.breaches) == (Transition.SUPPRESSED, 2)
        assert alerts.firing(MODEL)[0]["breaches"] == 2
        assert {p["identity"] for p in identity.list_principals()} == {"user:alice", "user:bob"}
        assert record.seq == 5  # probe, alice, two tokens, probe: nothing in between

        # Connections cut while appends are under way (a terminating loop at 30 ms): each append
        # is acknowledged or fails with one AuditError, and is then repeated by its caller.
        acked = [(0, 0, 0), (0, 0, 1)]
        errors: list[str] = []
        cuts = 0
        done = threading.Event()

        def cut() -> None:
            nonlocal cuts
            while not done.wait(0.03):
                cuts += cluster.terminate_clients()

        cutter = threading.Thread(target=cut)
        cutter.start()
        try:
            for n in range(60):
                while True:
                    try:
                        audit.append(Action.BATCH_SCORED, reason=f"storm {n}", actor=PROBE_ACTOR,
                                     details=_probe(run, 1, 0, n))  # fmt: skip
                        acked.append((1, 0, n))
                        break
                    except AuditError as exc:
                        errors.append(str(exc))
        finally:
            done.set()
            cutter.join()
    finally:
        audit.close()
        identity.close()
        alerts.close()
        deliveries.close()
        authentication.clear_cache()

    records, stored = _assert_chain_whole(run)
    _assert_each_once(acked, stored)
    assert all("audit" in e for e in errors), errors  # each failure names the audit trail
    checks = assert_invariants([MODEL], champions=False)
    checks["next_call_reconnected"] = True
    checks["nothing_written_twice"] = True
    fault_result.record(
        "postgres-connections-dropped",
        point="idle long-lived stores (audit trail, identity and its authenticator, alert "
        "state, the gateway's delivery log), then appends under a terminating loop",
        outcome="recovered",
        user_sees="nothing: the next call of every store reconnects; an append cut mid-flight "
        "is resolved by its hash or fails with one audit-trail error and is repeated",
        recovery_seconds=round(recovery, 3),
        rows_lost=0,
        requests_failed=0,
        checks=checks,
        figures={
            "backends_terminated_idle": ended,
            "backends_terminated_under_load": cuts,
            "appends_under_load": 60,
            "append_errors_under_load": len(errors),
            "audit_records": records,
        },
    )


# -- PostgreSQL restarted while audit records are appended ----------------------------------


def _start_writers(
    run: str, stop: Path, out: Path, writers: int, threads: int
) -> list[subprocess.Popen]:
    def command(w: int) -> list[str]:
        call = f"audit_writer({run!r}, {w}, {threads}, {str(stop)!r}, {str(out) + f'.{w}'!r})"
        return [
            sys.executable,
            "-c",
            f"from tests.support.fault_postgres import audit_writer; {call}",
        ]

    return [
        subprocess.Popen(
            command(w),
            cwd=REPO_ROOT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in range(writers)
    ]


def _outcomes(out: Path, writers: int) -> list[dict[str, Any]]:
    lines = []
    for w in range(writers):
        path = Path(f"{out}.{w}")
        if path.exists():
            lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


def _wait_acks(out: Path, writers: int, after: float, count: int, timeout: float = 120) -> None:
    """Until every writer has ``count`` acknowledged appends made after ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        per = Counter(o["ok"][0] for o in _outcomes(out, writers) if "ok" in o and o["t"] > after)
        if all(per[w] >= count for w in range(writers)):
            return
        assert time.monotonic() < deadline, f"writers stalled: {dict(per)}"
        time.sleep(0.2)


def test_audit_appends_survive_a_postgres_restart(
    cluster: PrivatePostgres,
    profile: profiles.Profile,
    tmp_path: Path,
    fault_result: FaultResult,
) -> None:
    writers, threads = 3, 2
    run, stop, out = secrets.token_hex(4), tmp_path / "stop", tmp_path / "outcomes.jsonl"
    procs = _start_writers(run, stop, out, writers, threads)
    restarts: list[Restart] = []
    try:
        _wait_acks(out, writers, after=0, count=10)
        for mode in ("immediate", "fast"):
            restarts.append(cluster.restart(mode, down=0.5))
            _wait_acks(out, writers, after=restarts[-1].ready_at, count=10)
        stop.touch()
        for proc in procs:
            proc.wait(timeout=60)
    finally:
        stop.touch()
        for proc in procs:
            if proc.poll() is None:
                stop_process(proc, timeout=5)
    for proc in procs:
        assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""

    outcomes = _outcomes(out, writers)
    acked = [tuple(o["ok"]) for o in outcomes if "ok" in o]
    errors = [o for o in outcomes if "error" in o]
    records, stored = _assert_chain_whole(run)
    _assert_each_once(acked, stored)
    # One clear error type, naming the audit trail's database, never a driver's traceback.
    assert {e["error"] for e in errors} <= {"AuditError"}, errors[:3]
    assert all("audit" in e["message"] for e in errors), errors[:3]
    checks = assert_invariants([MODEL], champions=False)
    checks["no_gap_no_duplicate"] = True
    for restart in restarts:
        first_ok: dict[int, float] = {}
        for o in sorted(outcomes, key=lambda o: o["t"]):
            if "ok" in o and o["t"] > restart.stopped_at:
                first_ok.setdefault(o["ok"][0], o["t"])
        back = max(first_ok.values())
        window = [e for e in errors if restart.stopped_at <= e["t"] <= back]
        how = "a crash (stop -m immediate)" if restart.mode == "immediate" else "a fast shutdown"
        fault_result.record(
            "postgres-restart-audit",
            point=f"{writers} processes x {threads} threads appending; {how}, "
            f"down {restart.down_seconds:.1f} s",
            outcome="recovered",
            user_sees="appends made while the server is down fail with one audit-trail error and "
            "succeed when repeated; an append cut during COMMIT is settled by its hash",
            recovery_seconds=round(back - restart.stopped_at, 3),
            rows_lost=0,
            requests_failed=len({tuple(e["probe"]) for e in window}),
            checks=checks,
            figures={
                "postgres_down_seconds": round(restart.down_seconds, 3),
                "failed_attempts": len(window),
                "appends_acknowledged": len(acked),
                "audit_records": records,
            },
        )


# -- the MLflow and Prefect servers on the private cluster -----------------------------------


@dataclass
class Servers:
    prefect_api: str
    mlflow_url: str
    env: dict[str, str]
    """The environment of a command a user runs against these servers."""


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after 20 s."""
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _answers(url: str, expect: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200 and (expect is None or resp.read() == expect)
    except OSError:
        return False


def _wait_healthy(what: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while not _answers(url):
        assert proc.poll() is None, f"{what} exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not start:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def servers(
    profile: profiles.Profile, mlflow_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    """``mlflow server`` on the profile's MLflow database and ``prefect server start`` on its
    Prefect database, as ``make up PROFILE=production`` runs them; this process's flows report
    to that Prefect server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    work = tmp_path_factory.mktemp("servers")
    prefect_port = free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    bin_dir = Path(sys.executable).parent
    mlflow = _start(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         settings.mlflow_backend_store_uri(), "--serve-artifacts", "--artifacts-destination",
         settings.mlflow_artifacts_destination(), "--host", "127.0.0.1",
         "--port", str(mlflow_port), "--workers", "1"],
        work / "mlflow.log", {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    prefect = _start(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
         "--port", str(prefect_port), "--no-ui"],
        work / "prefect.log",
        {**base, "PREFECT_HOME": str(work / "prefect-server"),
         "PREFECT_SERVER_DATABASE_CONNECTION_URL": str(settings.prefect_database_url()),
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )  # fmt: skip
    try:
        _wait_healthy("the MLflow server", mlflow, f"http://127.0.0.1:{mlflow_port}/health",
                      work / "mlflow.log")  # fmt: skip
        _wait_healthy("the Prefect server", prefect, f"{api}/ready", work / "prefect.log")
        client_home = work / "prefect-client"
        env = {**base, "PREFECT_API_URL": api, "PREFECT_HOME": str(client_home)}
        with temporary_settings({PREFECT_API_URL: api, PREFECT_HOME: client_home}):
            yield Servers(api, f"http://127.0.0.1:{mlflow_port}", env)
    finally:
        _stop_group(prefect)
        _stop_group(mlflow)


@pytest.fixture(scope="module")
def trained(servers: Servers, champion_and_challenger: dict[str, Any]) -> dict[str, Any]:
    """v1 the champion, v2 a challenger that passed every gate, registered through the MLflow
    server on the private cluster by flows that reported to the Prefect server on it."""
    return champion_and_challenger


# -- MLflow's backend database restarted during promotions -----------------------------------


def _champion_record() -> str | None:
    from mlsteward.governance import champion

    with audit_store() as audit:
        return champion.recorded(MODEL, audit)[0]


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlsteward.cli", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_promotions_survive_a_restart_of_mlflows_database(
    cluster: PrivatePostgres,
    servers: Servers,
    trained: dict[str, Any],
    fault_result: FaultResult,
) -> None:
    """Promote the challenger and roll back, again and again, while the database under MLflow
    (and the audit trail, and the promotion lock) restarts three times at random moments."""
    import random

    from mlsteward.config.models import get_model_config
    from mlsteward.errors import MlstewardError
    from mlsteward.governance import promotion
    from mlsteward.identity.principals import local_principal

    cfg = get_model_config(MODEL)
    v1, v2 = str(trained["champion"]), str(trained["challenger"])
    actor = local_principal().actor
    override = {"override_by": local_principal().identity, "override_reason": "fault test"}
    switches: list[dict[str, Any]] = []
    stop = threading.Event()

    def switch_back_and_forth() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if _champion_record() == v1:
                    promotion.promote(cfg, v2, actor=actor, reason="fault test", override=override)
                else:
                    promotion.rollback(cfg, reason="fault test", actor=actor, to_version=v1)
                switches.append(
                    {"ok": True, "t": time.monotonic(), "took": time.monotonic() - started}
                )
            except MlstewardError as exc:  # a refusal or a clear error: the user's to act on
                switches.append({"ok": False, "error": type(exc).__name__, "message": str(exc),
                                 "t": time.monotonic()})  # fmt: skip
                time.sleep(0.2)
            except Exception as exc:  # anything else is a bug: recorded, and fails the test
                switches.append({"ok": False, "error": type(exc).__name__, "message": repr(exc),
                                 "t": time.monotonic(), "unexpected": True})  # fmt: skip
                time.sleep(0.2)

    def ok_after(t: float) -> float | None:
        return next((s["t"] for s in switches if s["ok"] and s["t"] > t), None)

    with audit_store() as audit:
        head = audit.verify().records
    rng = random.Random(26)
    loop = threading.Thread(target=switch_back_and_forth, daemon=True)
    loop.start()
    restarts: list[Restart] = []
    recoveries: list[float] = []
    try:
        wait_until = time.monotonic() + 300
        while ok_after(0) is None:
            assert time.monotonic() < wait_until, switches
            time.sleep(0.1)
        for _ in range(3):
            time.sleep(rng.uniform(0.1, 1.5))  # somewhere inside the next switch
            restarts.append(cluster.restart("immediate"))
            while (done := ok_after(restarts[-1].ready_at)) is None:
                assert time.monotonic() < wait_until, switches[-5:]
                time.sleep(0.1)
            recoveries.append(done - restarts[-1].stopped_at)
    finally:
        stop.set()
        loop.join(timeout=300)
    assert not loop.is_alive(), "a promotion hung after the restarts"

    unexpected = [s for s in switches if s.get("unexpected")]
    assert not unexpected, unexpected
    failed = [s for s in switches if not s["ok"]]
    # What a user sees after the fault: the registry and the record agree, or reconcile
    # --repair puts them back (and then they agree).
    checked = _cli(servers.env, "audit", "reconcile", MODEL, "--json")
    repaired = None
    if checked.returncode != 0:
        repaired = _cli(servers.env, "audit", "reconcile", MODEL, "--repair", "--json")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr[-3000:]
    assert "Traceback" not in checked.stderr, checked.stderr[-3000:]
    checks = assert_invariants([MODEL])
    # and a promotion after it all goes through
    if _champion_record() == v1:
        promotion.promote(cfg, v2, actor=actor, reason="after the fault", override=override)
    else:
        promotion.rollback(cfg, reason="after the fault", actor=actor, to_version=v1)
    checks |= assert_invariants([MODEL])
    checks["rerun_succeeds"] = True
    with audit_store() as audit:
        during = [r for r in audit.query(model=MODEL) if r.seq > head]
    kinds = Counter(str(r.action) for r in during)
    finished = sum(1 for r in during if r.details.get("recovered"))
    fault_result.record(
        "postgres-restart-mlflow",
        point="promote and roll back in a loop; the cluster under MLflow, the audit trail and "
        "the promotion lock crashed (immediate) 3 times at random moments",
        outcome="recovered",
        user_sees="a switch under way fails with one clear error (the lock's connection lost, "
        "or MLflow's) and is undone or finished by the next governance call; "
        + ("reconcile --repair was needed" if repaired else "no repair was needed"),
        recovery_seconds=round(max(recoveries), 3),
        rows_lost=0,
        requests_failed=len(failed),
        checks=checks,
        figures={
            "restarts": len(restarts),
            "postgres_down_seconds": [round(r.down_seconds, 3) for r in restarts],
            "recovery_seconds_each": [round(r, 3) for r in recoveries],
            "switches_ok": sum(1 for s in switches if s["ok"]),
            "switch_errors": sorted({s["message"][:160] for s in failed}),
            "reconcile_repair_needed": repaired is not None,
            "intents": kinds[str(Action.PROMOTION_INTENT)],
            "intents_undone": kinds[str(Action.PROMOTION_ABANDONED)],
            "intents_finished_by_the_next_call": finished,
        },
    )


# -- Prefect's database restarted while a flow runs -------------------------------------------


def _api(url: str, body: dict[str, Any] | None = None) -> Any:
    """One call to the Prefect API (no retries: the caller polls)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _ingest_runs(api: str) -> list[dict[str, Any]]:
    return _api(
        f"{api}/flow_runs/filter", {"flows": {"name": {"any_": ["ingest-data"]}}, "limit": 50}
    )


def _poll(what: str, probe: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if found := probe():
                return found
        except OSError:  # the server is down or answering 503: ask again
            pass
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)


def test_a_flow_run_survives_a_restart_of_prefects_database(
    cluster: PrivatePostgres,
    servers: Servers,
    trained: dict[str, Any],
    tmp_path: Path,
    fault_result: FaultResult,
) -> None:
    """``mlsteward ingest`` runs its flow against the Prefect server; the database under that
    server (and under the audit trail the flow writes to) crashes while the run is Running."""
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = write_dataset(generate_cohort(n_rows=3_000, seed=11), tmp_path / "cohort.parquet")
    api = servers.prefect_api
    known = {r["id"] for r in _ingest_runs(api)}
    ingest = [sys.executable, "-m", "mlsteward.cli", "ingest", MODEL, "--source", str(cohort),
              "--json"]  # fmt: skip
    proc = subprocess.Popen(
        ingest, cwd=REPO_ROOT, env=servers.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:

        def running() -> dict[str, Any] | None:
            assert proc.poll() is None, "the run ended before the fault could strike"
            runs = [r for r in _ingest_runs(api) if r["id"] not in known]
            return next((r for r in runs if r["state_type"] == "RUNNING"), None)

        run = _poll("the ingestion run to be Running", running, timeout=300)
        restart = cluster.restart("immediate")
        _poll("the Prefect server ready", lambda: _api(f"{api}/ready") is not None, timeout=120)
        server_back = time.monotonic()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            stop_process(proc)
    final = _poll(
        "the run's final state",
        lambda: (r := _api(f"{api}/flow_runs/{run['id']}"))["state"]["type"] != "RUNNING" and r,
        timeout=120,
    )
    state = final["state"]["type"]
    assert "Traceback" not in err, err[-3000:]  # one message, whatever happened
    rerun = None
    if proc.returncode == 0:
        assert state == "COMPLETED", (final["state"], out[-2000:])
    else:
        # the run is marked as what happened to it, the user is told in one message, and a
        # rerun goes through
        assert state in ("FAILED", "CRASHED"), final["state"]
        rerun = _cli(servers.env, "ingest", MODEL, "--source", str(cohort), "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-3000:]
    checks = assert_invariants([MODEL])
    checks["run_finished_or_marked"] = True
    fault_result.record(
        "postgres-restart-prefect",
        point="`mlsteward ingest` Running; the cluster under the Prefect server and the audit "
        "trail crashed (immediate)",
        outcome="recovered",
        user_sees=(
            "the run finished: its state calls were retried until the server's database was back"
            if rerun is None
            else f"the run ended {state} with one message; a rerun succeeded"
        ),
        recovery_seconds=round(server_back - restart.stopped_at, 3),
        rows_lost=0,
        requests_failed=0 if rerun is None else 1,
        checks=checks,
        figures={
            "postgres_down_seconds": round(restart.down_seconds, 3),
            "run_final_state": state,
            "run_seconds": round(float(final.get("total_run_time") or 0.0), 3),
            "rerun_needed": rerun is not None,
        },
    )

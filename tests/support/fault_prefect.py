"""A real Prefect server a fault test owns and restarts, and flow runs in processes of their own
that a test kills at a chosen moment.

``PrefectServer`` is ``prefect server start`` on a free port, with its SQLite database and
``PREFECT_HOME`` in a directory of the test's own; ``restart`` stops it (SIGTERM as ``make down``
sends it, or SIGKILL as a crash does) and starts it again on the same port and database, so the
clients that keep the address see the same server come back.

``RunProcess`` is a ``mlsteward`` command, the process a user's flow run lives in, read line by
line as it prints: Prefect logs the end of every task run ("Task run 'fit-and-evaluate-3fe' -
Finished in state Completed()"), so "0.4 s after fit-and-evaluate finished" is a line to wait
for, not a guess at a sleep. A ``Moment`` names such a point: after a task run's end (plus a
delay), as an audit record of some action is written, or as a file appears where readers look.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.conftest import REPO_ROOT
from tests.support.fault_servers import signal_group, venv_bin
from tests.support.platform import free_port

READY_TIMEOUT_SECONDS = 180.0
HEARTBEAT_SECONDS = 30
"""The flow runs' heartbeat (Prefect's least; the platform's worker runs flows with it)."""
REAPER_TIMEOUT_SECONDS = 3.0
"""The reaper's timeout here: seconds, not the production default's minutes, so a test waits
for a killed run to be judged dead without waiting out a real schedule. It is below the
heartbeat, which the reaper warns about: here no live run can be taken for a dead one, as every
run a test judges was killed by it."""
FLOW_RUN_URL = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")
TASK_FINISHED = re.compile(r"Task run '(.+)-[0-9a-f]{3}' - Finished in state (\w+)")


# -- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restart:
    """One restart as the clients lived through it."""

    signal: str
    stopped_seconds: float
    """From the signal until the server's processes had exited."""
    down_seconds: float
    """From the signal until the API answered again: how long clients had no server."""


@dataclass
class PrefectServer:
    """``prefect server start`` (API and services, no UI) on ``port``, its database
    ``directory/prefect.db``; one log file per start."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    restarts: list[Restart] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def database(self) -> Path:
        return self.directory / "prefect.db"

    @property
    def log_path(self) -> Path:
        return self.directory / f"server-{self.starts}.log"

    def env(self) -> dict[str, str]:
        """The caller's environment without any Prefect client setting, on our own database."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {
            **base,
            "PREFECT_HOME": str(self.directory / "home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def start(self) -> float:
        """Seconds until the API answers (and its database with it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-ui"]  # fmt: skip
        started = time.monotonic()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        while not self.answers():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"prefect server exited {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() - started > READY_TIMEOUT_SECONDS:
                raise AssertionError(f"prefect server not ready:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.monotonic() - started

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """Seconds until every process of the server has exited."""
        assert self.process is not None
        started = time.monotonic()
        signal_group(self.process, sig)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            signal_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=10)
        signal_group(self.process, signal.SIGKILL)  # a process the leader left behind
        return time.monotonic() - started

    def restart(self, sig: signal.Signals) -> Restart:
        """Stopped with ``sig``, started again on the same port and database."""
        started = time.monotonic()
        stopped = self.stop(sig)
        self.start()
        done = Restart(sig.name, round(stopped, 2), round(time.monotonic() - started, 2))
        self.restarts.append(done)
        return done

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop(signal.SIGTERM)

    def __enter__(self) -> PrefectServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_env(server: PrefectServer, client_home: Path) -> dict[str, str]:
    """What a shell pointed at ``server`` gives a ``mlsteward`` command (the platform's worker
    runs flows with the same heartbeat)."""
    dropped = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_PROFILE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(client_home),
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_SECONDS),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def this_process_on(server: PrefectServer, client_home: Path) -> Iterator[dict[str, str]]:
    """This process's flows and clients on ``server``; yields the environment for commands."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        temporary_settings,
    )

    client_home.mkdir(parents=True, exist_ok=True)
    with temporary_settings(
        {
            PREFECT_API_URL: server.api_url,
            PREFECT_HOME: client_home,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_SECONDS,
        }
    ):
        try:
            yield client_env(server, client_home)
        finally:
            drain_prefect_workers()


def drain_prefect_workers(timeout: float = 30.0) -> None:
    """Send the logs and events this process's Prefect workers still hold, while the server is
    up: left for the interpreter's exit, they wait on a server that is gone (the test process
    hung at exit for over ten minutes, retrying)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout, at_exit=False)


# -- flow runs in processes of their own --------------------------------------------------------


class RunProcess:
    """``mlsteward ARGS`` in a session of its own; every line it prints is kept with the moment
    it arrived (and written to ``log_path``)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.started = time.monotonic()
        self.killed_at: float | None = None
        self.lines: list[tuple[float, str]] = []
        self._ended = False
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlsteward.cli", *self.args],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.log_path.open("w", encoding="utf-8") as log:
            for raw in self.process.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                with self._changed:
                    self.lines.append((time.monotonic(), line))
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines)

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> tuple[float, str]:
        """The first line matching ``pattern`` and when it arrived; a failure naming the
        command and its output's tail if it ends or the time runs out first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for at, line in self.lines[seen:]:
                    if regex.search(line):
                        return at, line
                seen = len(self.lines)
                if self._ended:
                    self.process.wait(timeout=30)
                    raise AssertionError(
                        f"`mlsteward {' '.join(self.args)}` exited {self.process.returncode} "
                        f"before printing {regex.pattern!r}:\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"`mlsteward {' '.join(self.args)}` printed no {regex.pattern!r} in "
                        f"{timeout:.0f} s:\n{self.tail()}"
                    )
                self._changed.wait(remaining)

    def flow_run_id(self, timeout: float = 240) -> str:
        _, line = self.wait_for_line(FLOW_RUN_URL, timeout)
        found = FLOW_RUN_URL.search(line)
        assert found is not None
        return found.group(1)

    def kill(self) -> float:
        """SIGKILL to the run's whole process group; when it was sent."""
        if self.killed_at is None:
            self.killed_at = time.monotonic()
            signal_group(self.process, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        return self.killed_at

    def finish(self, timeout: float) -> int:
        """The exit status, once the command has ended by itself."""
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.process.returncode

    def finished_tasks(self, before: float | None = None) -> list[str]:
        """The task runs whose end the process printed (before ``before``), in order."""
        with self._changed:
            lines = list(self.lines)
        return [
            m.group(1)
            for at, line in lines
            if (before is None or at <= before) and (m := TASK_FINISHED.search(line))
        ]

    def close(self) -> None:
        if self.alive:
            self.kill()


# -- moments -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """Where in a run to strike: ``delay`` seconds after the task run ``task`` ended; or as an
    audit record of ``action`` is written for ``model``; or as a file matching ``pattern``
    appears in ``directory`` (hidden names, which readers never see, do not count)."""

    task: str | None = None
    delay: float = 0.0
    action: str | None = None
    model: str | None = None
    directory: Path | None = None
    pattern: str | None = None

    def describe(self) -> str:
        if self.task is not None:
            return f"{self.delay:.2f} s after task {self.task} finished"
        if self.action is not None:
            return f"as the audit trail recorded {self.action}"
        return f"as {self.pattern} appeared in {self.directory.name if self.directory else '?'}"


def after_task(task: str, delay: float) -> Moment:
    return Moment(task=task, delay=round(delay, 2))


def on_audit(action: str, model: str) -> Moment:
    return Moment(action=action, model=model)


def on_file(directory: Path, pattern: str) -> Moment:
    return Moment(directory=directory, pattern=pattern)


def strike(run: RunProcess, moment: Moment, act: Callable[[], object], timeout: float) -> float:
    """Wait for ``moment`` in ``run``, then ``act()`` at once; ``time.monotonic()`` when it
    acted. Audit records and files are polled every few milliseconds."""
    if moment.task is not None:
        at, _ = run.wait_for_line(rf"Task run '{re.escape(moment.task)}-[0-9a-f]{{3}}' - "
                                  "Finished in state", timeout)  # fmt: skip
        time.sleep(max(0.0, at + moment.delay - time.monotonic()))
        when = time.monotonic()
        act()
        return when
    with _audit_probe(moment) if moment.action is not None else _file_probe(moment) as probe:
        deadline = time.monotonic() + timeout
        while not probe():
            if not run.alive:
                raise AssertionError(
                    f"`mlsteward {' '.join(run.args)}` ended before {moment.describe()}:\n"
                    f"{run.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing happened {moment.describe()} in {timeout:.0f} s")
            time.sleep(0.002)
        when = time.monotonic()
        act()
    return when


@contextmanager
def _audit_probe(moment: Moment) -> Iterator[Callable[[], bool]]:
    """Whether the audit trail has a newer record of the moment's action (one connection)."""
    from mlsteward.audit import audit_store

    with audit_store() as store:

        def newest() -> int:
            found = store.last(model=moment.model, action=moment.action)
            return found.seq if found is not None else 0

        before = newest()
        yield lambda: newest() > before


@contextmanager
def _file_probe(moment: Moment) -> Iterator[Callable[[], bool]]:
    """Whether a new file matching the moment's pattern is visible in its directory."""
    assert moment.directory is not None and moment.pattern is not None
    directory, pattern = moment.directory, moment.pattern

    def visible() -> set[str]:
        try:
            return {
                str(p.relative_to(directory))
                for p in directory.glob(pattern)
                if not p.name.startswith(".")
            }
        except OSError:
            return set()

    before = visible()
    yield lambda: bool(visible() - before)


# -- what the server says about a run, and the reaper --------------------------------------------


def run_state(run_id: str) -> Any:
    """The flow run's state as the server has it."""
    from uuid import UUID

    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id)).state


def task_states(run_id: str) -> dict[str, str]:
    """Each task run of the flow run (by task name) and the name of its state on the server."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
        )
    return {
        r.name.rsplit("-", 1)[0]: (r.state.name if r.state is not None else "none")
        for r in sorted(runs, key=lambda r: r.expected_start_time or r.created)
    }


def wait_for_state(run_id: str, names: Sequence[str], timeout: float) -> Any:
    """The run's state once it is one of ``names``; a failure naming the state it stayed in."""
    deadline = time.monotonic() + timeout
    while True:
        state = run_state(run_id)
        if state is not None and state.name in names:
            return state
        if time.monotonic() > deadline:
            name = state.name if state is not None else "none"
            raise AssertionError(f"flow run {run_id} stayed {name}, never {list(names)}")
        time.sleep(0.5)


def reap_until_crashed(
    run_id: str, killed_at: float, timeout_seconds: float = REAPER_TIMEOUT_SECONDS
) -> tuple[float, list[Any]]:
    """The reaper's scheduled flow (``reaper_flow``, as its deployment runs it), run as soon
    as the killed run has been silent longer than the reaper's timeout, and again until the
    run reads Crashed; the seconds from the kill until it did, and each pass's report."""
    from flows.reaper import reaper_flow

    time.sleep(max(0.0, killed_at + timeout_seconds + 0.2 - time.monotonic()))
    deadline = time.monotonic() + 120
    reports = []
    while True:
        reports.append(reaper_flow(timeout_seconds=timeout_seconds))
        state = run_state(run_id)
        if state is not None and state.name == "Crashed":
            return time.monotonic() - killed_at, reports
        if time.monotonic() > deadline:
            raise AssertionError(f"the reaper left flow run {run_id} {state.name}")
        time.sleep(1.0)


# -- what a reader of the run's outputs would find -----------------------------------------------


def torn_outputs(model: str) -> list[str]:
    """Scored files that do not read whole and drift reports that stop before their end: what
    a killed run must never leave where a reader looks."""
    from mlsteward.config import settings

    bad = []
    for path in sorted(settings.scored_dir(model).glob("*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            pq.read_table(path)
        except Exception as exc:  # any reader error means a torn file
            bad.append(f"scored file {path}: {exc}")
    for path in sorted(settings.drift_reports_dir(model).glob("*.html")):
        if path.name.startswith("."):
            continue
        text = path.read_text(encoding="utf-8", errors="replace").rstrip()
        if not text.endswith("</html>"):
            bad.append(f"drift report {path} stops before its end ({path.stat().st_size} bytes)")
    return bad


def hidden_leftovers(model: str) -> list[Path]:
    """Hidden temporary files a killed writer left (invisible to readers, but never removed)."""
    from mlsteward.config import settings

    roots = [settings.scored_dir(model), settings.drift_reports_dir(model),
             settings.predictions_dir(model)]  # fmt: skip
    return sorted(
        p for root in roots for p in root.rglob(".*") if p.is_file() and p.name.endswith(".tmp")
    )


def open_mlflow_runs(model: str, flow_run_id: str) -> list[str]:
    """MLflow runs of ``model`` that the flow run opened and that are still RUNNING."""
    from mlsteward.governance.mlflow_adapter import client
    from mlsteward.governance.reaper import FLOW_RUN_TAG

    experiment = client().get_experiment_by_name(model)
    if experiment is None:
        return []
    found = client().search_runs(
        [experiment.experiment_id],
        f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}' and attributes.status = 'RUNNING'",
    )
    return [r.info.run_id for r in found]


def pending_logged_models(model: str) -> list[str]:
    """Models of ``model``'s experiment that MLflow still shows PENDING: logged by a run that
    never finished copying their files."""
    from mlsteward.governance.mlflow_adapter import client

    experiment = client().get_experiment_by_name(model)
    if experiment is None:
        return []
    found = client().search_logged_models([experiment.experiment_id])
    return [m.model_id for m in found if str(m.status) == "PENDING"]


def logged_models_dir(model: str) -> Path:
    """Where the local artifact store puts the files of ``model``'s logged models."""
    from urllib.parse import urlparse

    from mlsteward.governance.mlflow_adapter import client

    experiment = client().get_experiment_by_name(model)
    assert experiment is not None, f"no MLflow experiment {model}"
    return Path(urlparse(experiment.artifact_location).path) / "models"


def weak_champion_stack(work: Path, batch_rows: int) -> dict[str, Any]:
    """On a 3,000-row cohort: v1 a weak champion and a batch of ``batch_rows`` to score; the
    config then tunes fast, so a training run beats v1 and is promoted (a fault can land in
    the promotion)."""
    from flows.ingestion import ingestion_flow
    from flows.training import training_flow
    from mlsteward.data.synthetic import generate_cohort, write_dataset
    from tests.support.governance import MODEL, WEAK_TUNING, write_config
    from tests.support.serving import FAST_TUNING

    config_dir = Path(os.environ["MLSTEWARD_CONFIG_DIR"])
    cohort = write_dataset(generate_cohort(n_rows=3_000, seed=5), work / "cohort.parquet")
    batch = write_dataset(generate_cohort(n_rows=batch_rows, seed=11), work / "batch.parquet")
    write_config(config_dir, tuning=WEAK_TUNING)
    ingestion_flow(model=MODEL, source=str(cohort))
    first = training_flow(model=MODEL)
    assert first.governance.decision == "promoted", first.governance
    write_config(config_dir, tuning=FAST_TUNING)
    return {"champion": first.version, "batch": batch}

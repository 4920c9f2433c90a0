"""A private PostgreSQL cluster the fault tests may crash, restart and cut off.

The machine's PostgreSQL is shared by every test, so it is never restarted: a fault test gets a
cluster of its own (``initdb`` in a temporary directory, a free port, trust authentication on
127.0.0.1 only) and breaks that one. ``restart("immediate")`` is a crash as the clients see it
(the postmaster and every backend stop without a checkpoint; the next start replays the WAL);
``"fast"`` is an orderly shutdown that still cuts every connection. ``terminate_clients`` is a
dropped network or a failover as one database sees it: every client backend ends at once.

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` account.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.platform import free_port

BIN = Path(os.environ.get("MLSTEWARD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "postgres"


@dataclass(frozen=True)
class Restart:
    """One restart as measured around ``pg_ctl``: when the server went away and when it
    accepted connections again (``time.monotonic()``)."""

    mode: str
    stopped_at: float
    ready_at: float

    @property
    def down_seconds(self) -> float:
        return self.ready_at - self.stopped_at


class PrivatePostgres:
    """One cluster: ``start()``, ``restart()``, ``terminate_clients()``, ``destroy()``.

    Use it as a context manager (started on entry, destroyed on exit) or call the methods from a
    fixture with a ``finally`` that calls ``destroy()``.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mlsteward-faultpg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.restarts: list[Restart] = []
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, OWNER, OWNER)
            self._as_owner = ["runuser", "-u", OWNER, "--"]
        self._initdb()

    @property
    def url(self) -> str:
        """The server's URL without a database (the profile's ``MLSTEWARD_POSTGRES_URL``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def database_url(self, name: str = "postgres") -> str:
        return f"{self.url}/{name}"

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- the server ---------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._as_owner, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}\n"
                + self.log_tail()
            )
        return done

    def _initdb(self) -> None:
        self._run(
            str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        """Start on the same port and data directory; returns when it accepts connections
        (after crash recovery, when the last stop was a crash)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=200 "
            "-c shared_buffers=32MB -c log_min_messages=warning"
        )
        self._run(
            str(BIN / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", "120", "-o", options,
        )  # fmt: skip
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: a crash (no checkpoint; backends killed); ``fast``: connections cut,
        a clean shutdown."""
        assert mode in ("immediate", "fast", "smart"), mode
        self._run(str(BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def restart(self, mode: str = "immediate", down: float = 0.0) -> Restart:
        """Stop (``mode``), stay down ``down`` seconds, start again on the same port."""
        self.stop(mode)
        stopped = time.monotonic()
        if down:
            time.sleep(down)
        self.start()
        restart = Restart(mode, stopped, time.monotonic())
        self.restarts.append(restart)
        return restart

    def is_running(self) -> bool:
        status = subprocess.run(
            [*self._as_owner, str(BIN / "pg_ctl"), "status", "-D", str(self.data)],
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        return status.returncode == 0

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.database_url(), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        """Stop (a crash is enough: nothing is kept) and delete the cluster."""
        try:
            if self.data.exists() and self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- connections --------------------------------------------------------------------

    def terminate_clients(self, database: str | None = None) -> int:
        """End every client backend (of ``database``, or of every database) but the one that
        asks; returns how many were ended."""
        with psycopg.connect(self.database_url(), autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND (%s::text IS NULL OR datname = %s)",
                (database, database),
            ).fetchall()
        return sum(1 for (ended,) in rows if ended)

    def client_count(self, database: str | None = None, application: str | None = None) -> int:
        """Client backends now connected (to ``database``, by ``application_name``)."""
        with psycopg.connect(self.database_url(), autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND (%s::text IS NULL OR datname = %s) "
                "AND (%s::text IS NULL OR application_name = %s)",
                (database, database, application, application),
            ).fetchone()
        return int(row[0]) if row else 0


# -- a stream of audit records, as several processes append them --------------------------


def audit_writer(run: str, writer: int, threads: int, stop: str, out: str) -> None:
    """Append records through the configured audit store from ``threads`` threads sharing one
    store, until the file ``stop`` exists; each thread repeats a failed append (as a retried
    task would) until it is acknowledged. One JSON line per outcome goes to ``out``:
    ``{"ok": [writer, thread, n], "seq": ..., "t": monotonic}`` or ``{"error": type,
    "message": ..., "probe": [writer, thread, n], "t": ...}``. The records' details carry the
    probe and ``run``, which tells one test's records from another's.

    Run as ``python -c "from tests.support.fault_postgres import audit_writer; ..."``: a process
    of its own, as each flow run or API worker is.
    """
    import json
    import threading

    from mlsteward.audit import Action, audit_store

    store = audit_store()
    lock = threading.Lock()
    stopping = Path(stop)

    with open(out, "a", encoding="utf-8") as log:

        def emit(line: dict[str, object]) -> None:
            with lock:
                log.write(json.dumps(line) + "\n")
                log.flush()

        def loop(thread: int) -> None:
            n = 0
            while not stopping.exists():
                try:
                    record = store.append(
                        Action.BATCH_SCORED,
                        reason=f"fault probe: writer {writer} thread {thread} record {n}",
                        actor="service:fault-probe",
                        details={"probe": [writer, thread, n], "run": run},
                    )
                except Exception as exc:  # every failure is reported, whatever its type
                    emit(
                        {
                            "error": type(exc).__name__,
                            "message": str(exc),
                            "probe": [writer, thread, n],
                            "t": time.monotonic(),
                        }
                    )
                    time.sleep(0.05)
                    continue
                emit({"ok": [writer, thread, n], "seq": record.seq, "t": time.monotonic()})
                n += 1

        workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    store.close()

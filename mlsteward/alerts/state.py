"""Where an incident is remembered between checks, so one incident is one notification.

Each (model, rule, subject) has one row: clear, or firing since when, when a person was last
told, how many breaches were counted without telling anyone. A check moves the row in one
transaction (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``SELECT ... FOR UPDATE``), so two monitor
runs that see the same breach at the same moment still fire it once. Beside the incidents, a
small key/value table keeps what a rule needs from its last run (a counter snapshot, the
latency baseline of a champion).

The rows live beside the identity store: a SQLite file under the home, the audit trail's
PostgreSQL database in production.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from mlsteward.config.settings import alerts_url
from mlsteward.errors import MlstewardError

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS mlsteward_alerts (
        model TEXT NOT NULL,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        firing INTEGER NOT NULL,
        incident TEXT,
        fired_at TEXT,
        notified_at TEXT,
        resolved_at TEXT,
        breaches INTEGER NOT NULL,
        suppressed INTEGER NOT NULL,
        clear_streak INTEGER NOT NULL,
        checked_at TEXT NOT NULL,
        PRIMARY KEY (model, rule, subject)
    )""",
    """CREATE TABLE IF NOT EXISTS mlsteward_monitor_state (
        model TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (model, name)
    )""",
)
_COLUMNS = (
    "firing, incident, fired_at, notified_at, resolved_at, breaches, suppressed, clear_streak"
)
T = TypeVar("T")
Run = Callable[..., list[tuple]]
"""``run(sql, params=()) -> rows``: one statement of a transaction, ``?`` placeholders."""


def _create_tables(run: Run) -> None:
    for statement in _SCHEMA:
        run(statement)


class Transition(StrEnum):
    """What one check did to an incident."""

    FIRED = "fired"  # clear -> firing: tell someone
    REMINDED = "reminded"  # still firing after the quiet period: tell them again, once
    SUPPRESSED = "suppressed"  # still firing within the quiet period: counted, not sent
    CLEARING = "clearing"  # firing, this check clear, not yet resolve_after in a row
    RESOLVED = "resolved"  # firing -> clear: tell them it is over
    OK = "ok"  # clear and still clear


@dataclass(frozen=True)
class Incident:
    """One rule's incident after a check."""

    transition: Transition
    incident: str | None
    fired_at: str | None
    breaches: int
    suppressed: int

    @property
    def notify(self) -> bool:
        return self.transition in (Transition.FIRED, Transition.REMINDED, Transition.RESOLVED)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class AlertState:
    """The incidents and the monitor's remembered values, in SQLite or PostgreSQL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or alerts_url()
        self._lock = threading.Lock()
        self.postgres = not self.url.startswith("sqlite:")
        if self.postgres:
            from mlsteward.audit.postgres_store import redact
            from mlsteward.audit.reconnecting import Reconnecting

            self._pg = Reconnecting(
                self._open_postgres, f"the alert state in {redact(self.url)}", MlstewardError
            )
        else:
            path = Path(self.url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._atomic(_create_tables)

    def _open_postgres(self) -> Any:
        from mlsteward.audit.postgres_store import _connect

        return _connect(self.url, what="the alerts database", application="mlsteward-alerts")

    def close(self) -> None:
        if self.postgres:
            self._pg.close()
            return
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AlertState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _atomic(self, work: Callable[[Run], T]) -> T:
        """``work(run)`` in one write transaction; ``run(sql, params) -> rows`` takes ``?``
        placeholders.

        On PostgreSQL a transaction whose connection broke (the server restarted or ended the
        session) runs once more on a new connection, so every ``work`` must be safe to run
        twice: reads, upserts of the same values, and ``check``, which finds its own stamp when
        the first COMMIT landed after all.
        """
        if self.postgres:

            def attempt(conn: Any) -> T:
                def run(sql: str, params: tuple = ()) -> list[tuple]:
                    cur = conn.execute(sql.replace("?", "%s"), params)
                    return [tuple(r) for r in cur.fetchall()] if cur.description else []

                with conn.transaction():
                    return work(run)

            return self._pg.run(attempt, repeatable=True)
        with self._lock:
            conn = self._conn

            def run(sql: str, params: tuple = ()) -> list[tuple]:
                cur = conn.execute(sql, params)
                return [tuple(r) for r in cur.fetchall()] if cur.description else []

            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(run)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # -- incidents ------------------------------------------------------------------------

    def check(
        self,
        model: str,
        rule: str,
        subject: str,
        *,
        breached: bool,
        quiet_period: timedelta,
        resolve_after: int = 1,
        now: datetime | None = None,
    ) -> Incident:
        """Move the incident of (model, rule, subject) by one check's verdict."""
        now = now or datetime.now(UTC)
        stamp = _ts(now)
        lock = " FOR UPDATE" if self.postgres else ""
        tried: list[Incident] = []

        def move(run: Run) -> Incident:
            run(
                "INSERT INTO mlsteward_alerts (model, rule, subject, firing, breaches, suppressed,"
                " clear_streak, checked_at) VALUES (?, ?, ?, 0, 0, 0, 0, ?)"
                " ON CONFLICT (model, rule, subject) DO NOTHING",
                (model, rule, subject, stamp),
            )
            [row] = run(
                f"SELECT {_COLUMNS}, checked_at FROM mlsteward_alerts"
                f" WHERE model = ? AND rule = ? AND subject = ?{lock}",
                (model, rule, subject),
            )
            if tried and row[8] == stamp:
                return tried[0]  # the first attempt's COMMIT landed before its connection broke
            firing, incident, fired_at, notified_at, resolved_at = row[:5]
            breaches, suppressed, clear_streak = row[5:8]
            if breached and not firing:
                transition = Transition.FIRED
                firing, incident, fired_at, notified_at = 1, uuid.uuid4().hex, stamp, stamp
                breaches, suppressed, clear_streak, resolved_at = 1, 0, 0, None
            elif breached:
                breaches, clear_streak = breaches + 1, 0
                last = _parse(notified_at) or now
                if now - last >= quiet_period:
                    transition, notified_at = Transition.REMINDED, stamp
                else:
                    transition, suppressed = Transition.SUPPRESSED, suppressed + 1
            elif firing:
                clear_streak += 1
                if clear_streak >= resolve_after:
                    transition, firing, resolved_at = Transition.RESOLVED, 0, stamp
                else:
                    transition = Transition.CLEARING
            else:
                transition = Transition.OK
            run(
                "UPDATE mlsteward_alerts SET firing = ?, incident = ?, fired_at = ?,"
                " notified_at = ?, resolved_at = ?, breaches = ?, suppressed = ?,"
                " clear_streak = ?, checked_at = ? WHERE model = ? AND rule = ? AND subject = ?",
                (
                    firing,
                    incident,
                    fired_at,
                    notified_at,
                    resolved_at,
                    breaches,
                    suppressed,
                    clear_streak,
                    stamp,
                    model,
                    rule,
                    subject,
                ),
            )
            tried.append(Incident(transition, incident, fired_at, breaches, suppressed))
            return tried[-1]

        return self._atomic(move)

    def firing(self, model: str | None = None) -> list[dict[str, Any]]:
        """The incidents open now (for the command line, the API and tests)."""
        where = " AND model = ?" if model else ""
        rows = self._atomic(
            lambda run: run(
                "SELECT model, rule, subject, incident, fired_at, notified_at, breaches,"
                f" suppressed FROM mlsteward_alerts WHERE firing = 1{where}"
                " ORDER BY model, rule, subject",
                (model,) if model else (),
            )
        )
        keys = ("model", "rule", "subject", "incident", "fired_at", "notified_at")
        return [
            {**dict(zip(keys, r[:6], strict=True)), "breaches": r[6], "suppressed": r[7]}
            for r in rows
        ]

    # -- remembered values ---------------------------------------------------------------

    def get(self, model: str, name: str) -> Any:
        rows = self._atomic(
            lambda run: run(
                "SELECT value FROM mlsteward_monitor_state WHERE model = ? AND name = ?",
                (model, name),
            )
        )
        return json.loads(rows[0][0]) if rows else None

    def put(self, model: str, name: str, value: Any, *, now: datetime | None = None) -> None:
        text = json.dumps(value, sort_keys=True)
        stamp = _ts(now or datetime.now(UTC))
        self._atomic(
            lambda run: run(
                "INSERT INTO mlsteward_monitor_state (model, name, value, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (model, name)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (model, name, text, stamp),
            )
        )

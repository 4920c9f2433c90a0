"""Refusals before a request is authenticated: counted, and written as one audit record a minute.

Anyone who can reach the gateway can send requests without the secret. Writing one audit
record per refusal (each a durable, fsync'd append under the audit store's write lock) would
let an anonymous flood grow the audit trail without bound and queue promotions behind it.
Such a request proves nothing about who sent it, so it gets no record of its own: the request
path only counts it (a Prometheus counter by reason and an in-memory tally, no I/O), and a
background thread writes what was counted as one ``webhook_refusals`` record per interval
(counts by reason, first and last seen, a bounded sample of remote addresses), and once more
when the gateway stops. A request that passed the signature check keeps its own record.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from mlsteward.audit import Action, AuditRecord, AuditStore

FLUSH_SECONDS = 60.0
"""At most one aggregated record per interval (and one more at shutdown)."""
SAMPLE_ADDRESSES = 20
"""Distinct remote addresses kept per interval: enough to see who floods, bounded in memory."""
ACTOR = "service:ci"
"""Every gateway record's actor: the webhook secret authenticates the CI service account."""

log = logging.getLogger("mlsteward.gateway")


def refusals_counter(registry: CollectorRegistry) -> Counter:
    """``mlsteward_webhook_refusals_total{reason}`` in ``registry``."""
    return Counter(
        "mlsteward_webhook_refusals",
        "Requests refused before they were authenticated (no record each; one "
        "webhook_refusals audit record per minute sums them), by reason.",
        ("reason",),
        registry=registry,
    )


@dataclass
class _Window:
    """What was counted since the last record."""

    counts: Tally[str] = field(default_factory=Tally)
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    addresses: list[str] = field(default_factory=list)
    more_addresses: bool = False

    def add(self, reason: str, remote: str, now: dt.datetime, sample: int) -> None:
        self.counts[reason] += 1
        self.first = self.first or now
        self.last = now
        if remote not in self.addresses:
            if len(self.addresses) < sample:
                self.addresses.append(remote)
            else:
                self.more_addresses = True

    def merge(self, later: _Window, sample: int) -> _Window:
        """This window followed by ``later``: a failed write's counts are not lost."""
        merged = _Window(self.counts + later.counts, self.first or later.first)
        merged.last = later.last or self.last
        for remote in [*self.addresses, *later.addresses]:
            if remote not in merged.addresses:
                if len(merged.addresses) < sample:
                    merged.addresses.append(remote)
                else:
                    merged.more_addresses = True
        merged.more_addresses |= self.more_addresses or later.more_addresses
        return merged

    def details(self, interval: float) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "total": sum(self.counts.values()),
            "first_seen": self.first,
            "last_seen": self.last,
            "remote_addresses": self.addresses,
            "more_addresses": self.more_addresses,
            "interval_seconds": interval,
        }


class RefusalTally:
    """Counts unauthenticated refusals and writes them as one audit record per interval."""

    def __init__(
        self,
        audit: AuditStore,
        counter: Counter,
        *,
        interval: float = FLUSH_SECONDS,
        sample: int = SAMPLE_ADDRESSES,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.audit, self.counter = audit, counter
        self.interval, self.sample, self.clock = interval, sample, clock
        self._mutex = threading.Lock()
        self._flushing = threading.Lock()
        self._window = _Window()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, reason: str, remote: str) -> None:
        """On the request path: a counter increment and a dict update, never I/O."""
        self.counter.labels(reason).inc()
        with self._mutex:
            self._window.add(reason, remote, self.clock(), self.sample)

    def flush(self) -> AuditRecord | None:
        """Write what was counted since the last record as one record (none if nothing was).

        Raises:
            AuditError: the store refused the write; the counts stay for the next flush.
        """
        with self._flushing:  # one writer at a time keeps windows in order
            with self._mutex:
                window, self._window = self._window, _Window()
            if not window.counts:
                return None
            details = window.details(self.interval)
            summary = ", ".join(f"{k} {n}" for k, n in details["counts"].items())
            try:
                return self.audit.append(
                    Action.WEBHOOK_REFUSALS,
                    reason=f"{details['total']} request(s) refused before authentication "
                    f"({summary})",
                    actor=ACTOR,
                    details=details,
                )
            except Exception:
                with self._mutex:
                    self._window = window.merge(self._window, self.sample)
                raise

    def start(self) -> None:
        """Flush every ``interval`` seconds on a daemon thread until ``stop``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook-refusals", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left (the shutdown record)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flush_logged()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            record = self.flush()
        except Exception:  # the thread must survive a store outage; the counts are kept
            log.exception("could not write the webhook refusals record; retrying later")
            return
        if record is not None:
            log.warning("%s", record.reason)

"""The trained stack's prediction service as the serving and rollout tests see it: the settings
they run it with, tokens to call it with, a started subprocess (``Service``), live traffic
against it, and ending the in-process app early. The fixtures that make these are in
``tests/fixtures/serving.py``.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

FAST_TUNING = {"max_evals": 1, "num_boost_round": 60}

SERVICE_SETTINGS = {"serving": {"poll_seconds": 0.2, "log_flush_seconds": 0.2}}


def issue_token(role: str, name: str | None = None) -> str:
    """A new token of a principal with ``role`` (``user:serving-<role>`` unless named, added
    when missing) in the identity store of the current home, where the service looks."""
    from mlsteward.identity import identity_store, local_principal

    name = name or f"serving-{role}"
    operator = local_principal()
    with identity_store() as store:
        if store.get_principal(f"user:{name}") is None:
            store.add_principal(name, roles=[role], by=operator)
        _, token = store.create_token(f"user:{name}", by=operator, description="tests")
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def shut_down(client: TestClient) -> None:
    """Run the in-process app's shutdown now (its prediction-log writer flushes), for a test
    that reads what the app wrote; the fixture's teardown then has nothing left to do."""
    client.__exit__(None, None, None)


@dataclass
class Service:
    """``python -m mlsteward.serving`` as the ``start_service`` fixtures started it, with a
    token of a viewer (who may predict and read) to call it with."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, as ``make down`` sends it; the exit status (uvicorn re-raises the signal
        after its graceful shutdown, so -SIGTERM is the normal one)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@dataclass
class Traffic:
    """Counts of what the background client sent and got back."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # rows answered by each version
    errors: list[str] = field(default_factory=list)


@contextmanager
def live_traffic(
    service: Service, model: str, ids: list[Any], per_request: int = 3, threads: int = 2
) -> Iterator[Traffic]:
    """Clients posting ``entity_ids`` continuously (cycling through ``ids``) with the service's
    token until the block ends."""
    stats = Traffic()
    stop = threading.Event()
    lock = threading.Lock()

    def run(offset: int) -> None:
        n = offset
        with httpx.Client(base_url=service.url, headers=service.headers, timeout=10) as client:
            while not stop.is_set():
                batch = [ids[(n + k) % len(ids)] for k in range(per_request)]
                n += per_request * threads
                try:
                    r = client.post(f"/v1/models/{model}/predict", json={"entity_ids": batch})
                    ok = r.status_code == 200
                    versions = [p["version"] for p in r.json()["predictions"]] if ok else []
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    ok, versions = False, []
                    with lock:
                        stats.errors.append(str(exc))
                with lock:
                    stats.sent += 1
                    stats.answered += ok
                    stats.failed += not ok
                    for v in versions:
                        stats.versions[v] = stats.versions.get(v, 0) + 1

    workers = [
        threading.Thread(target=run, args=(t * per_request,), daemon=True) for t in range(threads)
    ]
    for w in workers:
        w.start()
    try:
        yield stats
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)

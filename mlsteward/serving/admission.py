"""Load shedding: beyond what the service can answer in time, predict requests are turned
away at once instead of queueing without bound.

An asyncio service takes every connection it is offered; past its capacity each new request
only lengthens the micro-batcher's queue, every answer gets slower and, with enough clients,
all of them time out while the process grows. So predict requests (``/v1`` and ``/v2``'s
infer) pass a gate before anything is read or scored:

* **in flight**: at most ``limit`` predict requests are being answered; one more is answered
  503 with ``Retry-After`` (``MLSTEWARD_SERVING_MAX_IN_FLIGHT``, by default a few
  micro-batches: ``ServingSettings.in_flight_limit``);
* **the prediction log**: while it cannot be written, 503 naming the log and the reason (the
  request would be refused after scoring anyway; here it costs nothing);
* **per-token rate** (off unless ``MLSTEWARD_SERVING_RATE_LIMIT`` is set): a token bucket per
  bearer token or API key (per client address without one), 429 with ``Retry-After``.

Refusals are in each protocol's error shape (``/v1``: ``{"detail": [{"loc", "msg", "type"}]}``;
the Open Inference Protocol: ``{"error": msg}``) and counted in ``mlsteward_requests_shed``.
Probes, ``/metrics`` and everything else pass untouched: a service shedding load must still
say how it is. The gate is plain ASGI around the app (a few microseconds a request): it sees
the request before routing, and it holds no state a burst can grow but the rate buckets,
which are bounded.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import orjson

from mlsteward.serving.predict import count_refused

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from mlsteward.serving.app import Service

RETRY_SECONDS = 1
# A refused body up to this size is left for the server to discard and the connection kept;
# a larger or chunked one closes it, so nobody can make a refused request cost a large read.
KEEP_ALIVE_BODY_BYTES = 64 * 1024
MAX_RATE_KEYS = 10_000


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int | None = None, max_keys: int = MAX_RATE_KEYS):
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(rate)))
        self.max_keys = max_keys
        self._buckets: dict[bytes, list[float]] = {}  # key -> [tokens, time of last update]

    def wait(self, key: bytes, now: float) -> float:
        """0 when a request under ``key`` may go now (and is counted), else the seconds until
        it may."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                # the oldest half goes: a flood of new keys cannot grow the service, and a
                # key forgotten starts again with a full bucket (at worst one more burst)
                for old in list(self._buckets)[: self.max_keys // 2]:
                    del self._buckets[old]
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _predict_kind(scope: Scope) -> str | None:
    """``"v1"`` or ``"v2"`` for a predict request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if path.startswith("/v1/models/") and path.endswith("/predict"):
        return "v1"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2"
    return None


class Gate:
    """What the admission middleware decides with, shared with the service's metrics."""

    def __init__(self, service: Service, limit: int, rate: float, burst: int | None) -> None:
        self.service = service
        self.limit = limit
        self.in_flight = 0
        self.limiter = RateLimiter(rate, burst) if rate > 0 else None

    def refusal(self, scope: Scope) -> tuple[int, str, str, str, int] | None:
        """(status, shed reason, error type, message, retry-after seconds), or None to admit."""
        failure = self.service.writer.failure
        if failure is not None:
            return 503, "prediction_log", "unavailable", failure, RETRY_SECONDS
        if self.in_flight >= self.limit:
            msg = (
                f"the service is at capacity: {self.limit} predict requests in flight "
                f"(MLSTEWARD_SERVING_MAX_IN_FLIGHT); retry after {RETRY_SECONDS} s"
            )
            return 503, "in_flight", "overloaded", msg, RETRY_SECONDS
        if self.limiter is not None:
            key = _header(scope, b"authorization") or _header(scope, b"x-api-key")
            if key is None:
                client = scope.get("client")
                key = f"client:{client[0] if client else ''}".encode()
            wait = self.limiter.wait(key, time.monotonic())
            if wait > 0:
                after = max(1, math.ceil(wait))
                msg = (
                    f"too many requests for this token: {self.limiter.rate:g} a second "
                    f"(MLSTEWARD_SERVING_RATE_LIMIT); retry after {after} s"
                )
                return 429, "rate_limit", "rate_limited", msg, after
        return None


def admission(app: ASGIApp, gate: Gate) -> ASGIApp:
    """``app`` behind the gate (``app.add_middleware(admission, gate=...)``)."""

    async def gated(scope: Scope, receive: Receive, send: Send) -> None:
        kind = _predict_kind(scope)
        if kind is None:
            await app(scope, receive, send)
            return
        refused = gate.refusal(scope)
        if refused is not None:
            await _refuse(gate, scope, send, kind, *refused)
            return
        gate.in_flight += 1
        try:
            await app(scope, receive, send)
        finally:
            gate.in_flight -= 1

    return gated


async def _refuse(
    gate: Gate, scope: Scope, send: Send, kind: str, status: int, reason: str, rule: str,
    msg: str, retry_after: int,
) -> None:  # fmt: skip
    service = gate.service
    metrics = service.metrics
    metrics.child(metrics.shed, reason).inc()
    parts = scope["path"].split("/")
    model = parts[3] if len(parts) > 3 and parts[3] in service.slots else ""
    count_refused(service, model, status)
    body: dict[str, Any] = {"error": msg}
    if kind == "v1":
        body = {"detail": [{"loc": ["body"], "msg": msg, "type": rule}]}
    content = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    if not _small_body(scope):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _small_body(scope: Scope) -> bool:
    """Whether the request's body is declared, and small enough to leave for the server."""
    length = _header(scope, b"content-length")
    if length is None:
        return _header(scope, b"transfer-encoding") is None
    return length.isdigit() and int(length) <= KEEP_ALIVE_BODY_BYTES

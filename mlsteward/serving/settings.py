"""The service's settings, read once from the environment when the app is created.

| variable | meaning |
| --- | --- |
| ``MLSTEWARD_SERVING_MODELS`` | comma list of models to serve (default: every configured one) |
| ``MLSTEWARD_SERVING_FAULTS`` | JSON fault injection per arm, to rehearse rollbacks (below) |
| ``MLSTEWARD_SERVING_AUTH`` | ``on`` (default) or ``off``: whether requests need a token (below) |
| ``MLSTEWARD_SERVING_METRICS_AUTH`` | ``true``: ``/metrics`` needs one too (default ``false``) |
| ``MLSTEWARD_SERVING_LOG_FSYNC_MS`` | how often the log's write-ahead file is fsynced (100) |
| ``MLSTEWARD_SERVING_MAX_IN_FLIGHT`` | predict requests in flight before more get 503 (below) |
| ``MLSTEWARD_SERVING_RATE_LIMIT`` | predict requests a second per token, 429 above (0: off) |
| ``MLSTEWARD_SERVING_RATE_BURST`` | requests a token may send at once before its rate applies |

With authentication on, predict, a model's description and the API docs need a token
(``mlsteward.serving.auth``); ``off`` asks nobody, for experiments on one machine, and the
service logs a warning at start. ``/metrics`` stays open to scrapers unless
``MLSTEWARD_SERVING_METRICS_AUTH`` is true; then it needs a token with ``read`` (Prometheus
sends it as ``Authorization: Bearer``).

Fault injection, as service meshes offer it, makes an arm fail or slow down on purpose so a
team can watch a rollout roll back before a real bad model does it for them, e.g.
``{"challenger": {"error_rate": 0.5, "delay_ms": 40}}``: half the challenger's rows fail (by a
hash of the routing key, so the same ones every time) and its answers wait 40 ms longer.
Unset, nothing is injected; the service logs a warning at start when it is set.

``MLSTEWARD_SERVING_LOG_FSYNC_MS`` (1-10,000) is the window a machine crash may lose: answered
rows are in the write-ahead file before the answer leaves (a killed process loses none), and
on disk at most this long after (``mlsteward.serving.wal``). 100 ms costs one fsync a tenth of a
second, off the request path, whatever the load.

Beyond ``MLSTEWARD_SERVING_MAX_IN_FLIGHT`` predict requests in flight, more are answered 503 with
``Retry-After`` at once instead of queueing without bound (``mlsteward.serving.admission``).
Unset, it is two micro-batches of the largest ``serving.micro_batch_rows`` (256 by default):
throughput stops growing at a few dozen requests in flight, and beyond that more only wait
longer. Measured on 2 cores with explanations, 1,024 clients against limits of 128, 256 and
512: the accepted requests' p99 was 0.73, 0.73 and 1.49 s and they were answered at 515, 1,068
and 788 a second; 256 clients under a limit of 256 were all answered, 2,471 a second at p99
0.26 s. ``MLSTEWARD_SERVING_RATE_LIMIT`` (off unless set) limits
each token (or, without one, each client address) to that many requests a second, with
bursts of ``MLSTEWARD_SERVING_RATE_BURST`` (default: one second's worth), answering 429 with
``Retry-After`` beyond it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlsteward.errors import MlstewardError

DEFAULT_LOG_FSYNC_MS = 100
IN_FLIGHT_BATCHES = 2


class ServingConfigError(MlstewardError):
    """The service cannot start: a setting that does not parse."""


class ArmFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1)
    delay_ms: float = Field(default=0.0, ge=0, le=60_000)


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    faults: dict[str, ArmFaults] = Field(default_factory=dict)
    auth: bool = True
    metrics_auth: bool = False
    log_fsync_ms: int = Field(default=DEFAULT_LOG_FSYNC_MS, ge=1, le=10_000)
    max_in_flight: int | None = Field(default=None, ge=1, le=1_000_000)
    rate_limit: float = Field(default=0.0, ge=0, le=1_000_000)
    rate_burst: int | None = Field(default=None, ge=1, le=1_000_000)

    @classmethod
    def from_env(cls) -> ServingSettings:
        raw_models = os.environ.get("MLSTEWARD_SERVING_MODELS", "").strip()
        return cls(
            models=[m.strip() for m in raw_models.split(",") if m.strip()] or None,
            faults=_faults(os.environ.get("MLSTEWARD_SERVING_FAULTS", "").strip()),
            auth=_switch("MLSTEWARD_SERVING_AUTH", default=True),
            metrics_auth=_switch("MLSTEWARD_SERVING_METRICS_AUTH", default=False),
            log_fsync_ms=_number("MLSTEWARD_SERVING_LOG_FSYNC_MS", int, 1, 10_000)
            or DEFAULT_LOG_FSYNC_MS,
            max_in_flight=_number("MLSTEWARD_SERVING_MAX_IN_FLIGHT", int, 1, 1_000_000),
            rate_limit=_number("MLSTEWARD_SERVING_RATE_LIMIT", float, 0, 1_000_000) or 0.0,
            rate_burst=_number("MLSTEWARD_SERVING_RATE_BURST", int, 1, 1_000_000),
        )

    def in_flight_limit(self, micro_batch_rows: int) -> int:
        """The admission limit: the setting, or ``IN_FLIGHT_BATCHES`` micro-batches."""
        return self.max_in_flight or IN_FLIGHT_BATCHES * micro_batch_rows


def _number(variable: str, kind: type[int] | type[float], low: float, high: float) -> Any:
    """A number setting within [low, high], or None when unset; anything else stops the start
    naming the variable and the range."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high or value != value:  # NaN is no number
        what = "a whole number" if kind is int else "a number"
        raise ServingConfigError(f"{variable}={raw!r}: use {what} from {low:g} to {high:g}")
    return value


def _faults(raw: str) -> dict[str, ArmFaults]:
    try:
        faults = json.loads(raw) if raw else {}
        unknown = sorted(set(faults) - {"champion", "challenger"})
        if unknown:
            raise ServingConfigError(
                f"MLSTEWARD_SERVING_FAULTS: unknown arm(s) {unknown}; use champion, challenger"
            )
        return {arm: ArmFaults.model_validate(value) for arm, value in faults.items()}
    except (ValueError, ValidationError, TypeError, AttributeError) as exc:
        raise ServingConfigError(f"MLSTEWARD_SERVING_FAULTS: {exc}") from exc


_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}  # fmt: skip


def _switch(variable: str, *, default: bool) -> bool:
    """An on/off setting; a value that is neither stops the start rather than guess (a typo in
    ``MLSTEWARD_SERVING_AUTH`` must not open the service)."""
    raw = os.environ.get(variable, "").strip().lower()
    if not raw:
        return default
    if raw not in _SWITCH:
        raise ServingConfigError(
            f"{variable}={raw!r}: use on or off (also true/false, 1/0, yes/no)"
        )
    return _SWITCH[raw]

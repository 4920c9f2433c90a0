"""The service's Prometheus metrics, in a registry of its own per app.

Names and labels are a contract: the rollout flow reads them back from ``/metrics`` to judge a
canary (``mlsteward.rollout.guardrails``). Latency buckets are dense between 0.5 ms and 20 ms,
where a
healthy arm lives, so a p99 read back from buckets is within a few tenths of a millisecond of
the truth, and reach 10 s for a sick one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.004, 0.005,
    0.006, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# An fsync every 100 ms (the default) lands near 0.1 s; a slow or failing disk far beyond.
FSYNC_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0,
)  # fmt: skip


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "mlsteward_requests",
            "Predict requests by the arm that answered them and HTTP status "
            "(version and arm empty when refused before routing).",
            ("model", "version", "arm", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "mlsteward_request_seconds",
            "End-to-end latency of predict requests, by the arm that answered (arm 'mixed': "
            "batches whose rows both arms answered).",
            ("model", "version", "arm"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mlsteward_predictions",
            "Rows scored, by arm.",
            ("model", "version", "arm"),
            registry=r,
        )
        self.arm_errors = Counter(
            "mlsteward_arm_errors",
            "Rows an arm failed to score (a failed challenger row is answered by the champion).",
            ("model", "version", "arm"),
            registry=r,
        )
        self.shap_seconds = Histogram(
            "mlsteward_shap_seconds",
            "Time of one exact-SHAP (pred_contribs) pass over a micro-batch.",
            ("model", "arm"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "mlsteward_micro_batch_rows",
            "Rows per micro-batch (concurrent requests scored together).",
            ("model",),
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.queue_depth = Gauge(
            "mlsteward_prediction_log_queue_depth",
            "Predictions waiting to be written to the prediction log.",
            ("model",),
            registry=r,
        )
        self.logged = Counter(
            "mlsteward_prediction_log_rows",
            "Predictions written to the prediction log.",
            ("model",),
            registry=r,
        )
        self.fsync_lag = Histogram(
            "mlsteward_prediction_log_fsync_lag_seconds",
            "From the oldest prediction appended to the write-ahead file since the last fsync "
            "to the fsync that made it durable: what a machine crash could lose, in seconds.",
            ("model",),
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self.log_writable = Gauge(
            "mlsteward_prediction_log_writable",
            "1 while the prediction log can be written; 0 while predict answers 503 because "
            "it cannot (/healthz says why).",
            registry=r,
        )
        self.replayed = Gauge(
            "mlsteward_prediction_log_replayed_rows",
            "Predictions this start found in the write-ahead files of a service that did not "
            "stop cleanly, and wrote to the log before serving.",
            registry=r,
        )
        self.replay_seconds = Gauge(
            "mlsteward_prediction_log_replay_seconds",
            "How long this start took to replay those write-ahead files.",
            registry=r,
        )
        self.shed = Counter(
            "mlsteward_requests_shed",
            "Predict requests turned away before any work: 'in_flight' (503, the admission "
            "limit), 'rate_limit' (429, the token's rate), 'prediction_log' (503, the log "
            "cannot be written).",
            ("reason",),
            registry=r,
        )
        self.in_flight = Gauge(
            "mlsteward_requests_in_flight",
            "Predict requests being answered now (the admission limit counts these).",
            registry=r,
        )
        self.loaded = Gauge(
            "mlsteward_model_loaded",
            "1 for each verified version being served, by arm (0 once replaced).",
            ("model", "arm", "version", "sha256"),
            registry=r,
        )
        self.fraction = Gauge(
            "mlsteward_canary_fraction",
            "Share of traffic routed to the challenger (0 without a canary).",
            ("model",),
            registry=r,
        )
        self.load_failures = Counter(
            "mlsteward_model_load_failures",
            "Versions the registry pointed at that could not be loaded or verified.",
            ("model", "version"),
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: ``labels`` takes a lock and validates every call,
        a few microseconds that add up on a path that costs well under a millisecond."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""The faults the suite puts the product through, one row each on the reliability page.

Each fault test records its result under one of these ids (``tests/faults/conftest.py``);
``docs/generate_reliability.py`` joins the rows with the recorded results into
``docs/reliability.md``, so the page lists every fault, and says so when one was not run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    component: str
    fault: str
    expected: str  # what a user sees: a clear error or an automatic recovery


FAULTS: dict[str, Fault] = {
    "mlflow-restart-tuning": Fault(
        "MLflow tracking server",
        "killed during Hyperopt tuning, restarted",
        "the trial's logging retries; the training run completes, or fails naming the server",
    ),
    "mlflow-restart-registration": Fault(
        "MLflow tracking server",
        "killed while a version is registered, restarted",
        "the run fails naming the server; no unsigned or half-tagged version is served; a rerun "
        "registers",
    ),
    "mlflow-restart-promotion": Fault(
        "MLflow tracking server",
        "killed during a promotion, restarted",
        "the promotion is finished or undone; the alias equals the signed record",
    ),
    "postgres-restart-audit": Fault(
        "PostgreSQL (production profile)",
        "restarted while audit records are written",
        "writes reconnect; the chain verifies with no gap and no duplicate",
    ),
    "postgres-restart-mlflow": Fault(
        "PostgreSQL (production profile)",
        "MLflow's backend database restarted",
        "registry calls reconnect; the alias equals the signed record",
    ),
    "postgres-restart-prefect": Fault(
        "PostgreSQL (production profile)",
        "Prefect's database restarted while a flow runs",
        "the server reconnects; the run finishes or is marked crashed and reruns",
    ),
    "postgres-connections-dropped": Fault(
        "PostgreSQL (production profile)",
        "every client connection terminated",
        "the next call reconnects; nothing is written twice",
    ),
    "redis-down-serving": Fault(
        "Redis (online store)",
        "stopped during serving, started again",
        "predict answers 503 naming the online store, then recovers without a restart",
    ),
    "prefect-restart-running": Fault(
        "Prefect server",
        "restarted while flows run",
        "the runs finish and report their final state once the server is back",
    ),
    "prefect-restart-paused": Fault(
        "Prefect server",
        "restarted while a run is paused for approval",
        "the run stays paused and resumes on approval after the restart",
    ),
    "worker-sigkill-training": Fault(
        "flow run process",
        "killed with SIGKILL at a random point of training",
        "the reaper marks the run crashed; nothing half-written is visible; a rerun succeeds",
    ),
    "worker-sigkill-scoring": Fault(
        "flow run process",
        "killed with SIGKILL at a random point of batch scoring",
        "the reaper marks the run crashed; no torn prediction-log file; a rerun succeeds",
    ),
    "worker-sigkill-drift": Fault(
        "flow run process",
        "killed with SIGKILL at a random point of a drift check",
        "the reaper marks the run crashed; a rerun succeeds",
    ),
    "service-sigkill-prediction-log": Fault(
        "prediction service",
        "killed with SIGKILL under load",
        "every answered prediction is in the log after a restart, within the stated window",
    ),
    "disk-full-prediction-log": Fault(
        "prediction log disk",
        "full",
        "predict answers 503 within 5 s and /healthz says why; it recovers when space returns",
    ),
    "overload": Fault(
        "prediction service",
        "driven beyond its capacity",
        "sheds load with 503/429 and a Retry-After, never crashes, recovers when load drops",
    ),
    "soak": Fault(
        "prediction service",
        "sustained load with a canary rollout, a registry hot-swap and a promotion",
        "no failed request, bounded memory growth, p99 within the target",
    ),
    "fuzz-data-files": Fault(
        "data contract",
        "generated data files (types, encodings, infinities, ids, timestamps)",
        "each file accepted with every row valid, or refused naming the rule; no traceback",
    ),
    "fuzz-http-apis": Fault(
        "HTTP APIs (prediction, governance, gateway)",
        "schemathesis-generated requests, with and without a token",
        "every answer documented, no 5xx",
    ),
    "fuzz-webhook-payloads": Fault(
        "CI webhook",
        "generated payloads and signatures",
        "a 4xx naming the field or the signature; never a 5xx or a started run",
    ),
}

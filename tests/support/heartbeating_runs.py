"""Flow runs that hold something and then wait, for a test to kill: a process of their own
(``python -m tests.support.heartbeating_runs KIND MODEL READY [VERSION | MAX_EVALS]``) against
the test's Prefect server. They are named as the training and rollout flows are, and Prefect's
engine heartbeats for them exactly as for those; the rollout one opens its canary and records
its start through the rollout machine, as the real rollout does before its first step. KIND
``training-flow`` is the real training flow, with MAX_EVALS trials.

``READY`` gets the flow run's id once the run holds what it holds (the real training flow's
run has ``test READY`` as its reason instead).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from mlsteward.audit import Action
from mlsteward.config.models import get_model_config
from mlsteward.governance import registry
from mlsteward.rollout import machine
from mlsteward.rollout.eligibility import Eligibility
from mlsteward.rollout.machine import RolloutSpec
from tasks.common import run_actor


def _ready(path: str) -> None:
    Path(path).write_text(str(flow_run.get_id()))


@flow(name="train-model")
def training_like(model: str, ready: str, hold_seconds: float = 600) -> None:
    """Counts as a training run of MODEL (drift's retrain check sees it) until it ends."""
    _ready(ready)
    time.sleep(hold_seconds)


@flow(name="rollout-model")
def rollout_like(model: str, version: str, ready: str, hold_seconds: float = 600) -> None:
    """Opens VERSION's canary and records the start with this run as actor, then waits as a
    step would, without ever closing it."""
    cfg = get_model_config(model)
    spec = RolloutSpec.resolve(cfg, version, actor=run_actor(), service_url="http://127.0.0.1:9")
    champion = registry.version_by_alias(model, registry.CHAMPION)
    assert champion is not None
    eligible = Eligibility(registry.get_version(model, version), champion.version, {})
    run = machine.start(spec, eligible)
    run.audit(Action.ROLLOUT_STARTED, f"canary of v{version}", run.base())
    _ready(ready)
    time.sleep(hold_seconds)


if __name__ == "__main__":
    kind, model, ready, *rest = sys.argv[1:]
    if kind == "training-flow":  # the real one, with the run's reason naming READY
        from flows.training import training_flow

        training_flow(model=model, max_evals=int(rest[0]), reason=f"test {ready}")
    elif kind == "train":
        training_like(model, ready)
    else:
        rollout_like(model, rest[0], ready)

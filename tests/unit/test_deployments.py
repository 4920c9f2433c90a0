"""prefect.yaml stays in step with the flows it deploys."""

from __future__ import annotations

import importlib

import pytest
import yaml
from prefect import Flow

from tests.conftest import REPO_ROOT

SPEC = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())


def test_pull_step_sets_the_working_directory() -> None:
    steps = [next(iter(s)) for s in SPEC["pull"]]
    assert "prefect.deployments.steps.set_working_directory" in steps


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_entrypoint_resolves_and_parameters_validate(deployment: dict) -> None:
    path, func = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, func)
    assert isinstance(flow, Flow)
    flow.validate_parameters(deployment.get("parameters", {}))  # raises on unknown/mistyped
    assert deployment["work_pool"]["name"] == "mlsteward-process"
    assert deployment.get("description"), "deployments are described in the UI"


TRIGGERED = [(d, t) for d in SPEC["deployments"] for t in d.get("triggers", [])]


@pytest.mark.parametrize(
    ("deployment", "trigger"), TRIGGERED, ids=lambda x: x.get("name", "trigger")
)
def test_triggers_validate_and_pass_known_parameters(deployment: dict, trigger: dict) -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    DeploymentEventTrigger.model_validate(trigger)
    path, func = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), func)
    flow.validate_parameters({**deployment.get("parameters", {}), **trigger["parameters"]})


def test_training_deployments_listen_for_drift() -> None:
    training = [d for d in SPEC["deployments"] if d["entrypoint"].endswith(":training_flow")]
    assert training
    for d in training:
        model = d["parameters"]["model"]
        expects = [e for t in d.get("triggers", []) for e in t["expect"]]
        assert "mlsteward.drift.detected" in expects, d["name"]
        assert any(
            t["match"]["prefect.resource.id"] == f"mlsteward.model.{model}" for t in d["triggers"]
        )


@pytest.mark.parametrize(
    ("flow_name", "section"), [("scoring_flow", "scoring"), ("drift_flow", "drift")]
)
def test_schedules_match_the_model_config(flow_name: str, section: str) -> None:
    from mlsteward.config import get_model_config

    scheduled = [d for d in SPEC["deployments"] if d["entrypoint"].endswith(f":{flow_name}")]
    assert scheduled
    for d in scheduled:
        cfg = get_model_config(d["parameters"]["model"])
        expected = getattr(cfg, section).schedule
        assert [s["cron"] for s in d["schedules"]] == [expected], d["name"]

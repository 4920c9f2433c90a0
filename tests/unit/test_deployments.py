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


# Each configured model is run in these ways; the flow behind each name.
EXPECTED = {
    "train": "flows/training.py:training_flow",
    "ingest": "flows/ingestion.py:ingestion_flow",
    "materialize": "flows/ingestion.py:materialize_flow",
    "promote": "flows/governance.py:promotion_flow",
    "rollback": "flows/governance.py:rollback_flow",
    "score": "flows/scoring.py:scoring_flow",
    "reproduce": "flows/reproduce.py:reproduce_flow",
    "rollout": "flows/rollout.py:rollout_flow",
    "drift": "flows/drift.py:drift_flow",
}


def test_every_configured_model_has_its_deployments() -> None:
    from mlsteward.config import load_all_model_configs

    by_name = {d["name"]: d for d in SPEC["deployments"]}
    models = load_all_model_configs(REPO_ROOT / "config" / "models")
    assert models
    for model in models:
        for kind, entrypoint in EXPECTED.items():
            name = f"{kind}-{model.replace('_', '-')}"
            assert name in by_name, f"model {model!r} has no deployment {name!r}"
            assert by_name[name]["entrypoint"] == entrypoint, name
            assert by_name[name]["parameters"]["model"] == model, name


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_the_ui_form_has_a_type_and_a_description_for_every_parameter(deployment: dict) -> None:
    from prefect.utilities.callables import parameter_schema

    path, func = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), func)
    schema = parameter_schema(flow.fn).model_dump()
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{deployment['name']}: {name} has no description"
        assert prop.get("type") or prop.get("anyOf"), f"{deployment['name']}: {name} untyped"

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

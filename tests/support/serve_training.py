"""Serve deployments exactly as prefect.yaml declares them (entrypoint, name, description,
parameters, tags, triggers), against the Prefect API in ``PREFECT_API_URL``.

The process that picks up the runs a drift event or a webhook starts:
``python -m tests.support.serve_training train-heart-disease [score-heart-disease ...]``.
Schedules are left out: a test server must not start runs on its own.
``--register-only`` creates the deployments and exits, so runs of them stay scheduled (nothing
serves them).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.events import DeploymentTriggerTypes
from pydantic import TypeAdapter

from tests.conftest import REPO_ROOT


def deployment_spec(name: str) -> dict[str, Any]:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    for d in spec["deployments"]:
        if d["name"] == name:
            return d
    raise SystemExit(f"prefect.yaml has no deployment {name!r}")


def triggers(spec: dict[str, Any]) -> list[Any]:
    """The yaml triggers validated the way ``prefect deploy`` validates them."""
    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    return [
        adapter.validate_python({"name": f"{spec['name']}__automation_{i}", **t})
        for i, t in enumerate(spec.get("triggers") or [], start=1)
    ]


def entrypoint_flow(spec: dict[str, Any]) -> Flow[..., Any]:
    """The flow object behind ``flows/<module>.py:<function>``."""
    path, _, function = spec["entrypoint"].partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, function)
    assert isinstance(flow, Flow), f"{spec['entrypoint']} is not a flow"
    return flow


def runner_deployment(name: str) -> Any:
    spec = deployment_spec(name)
    return entrypoint_flow(spec).to_deployment(
        name=name,
        description=spec.get("description"),
        parameters=spec.get("parameters") or {},
        tags=spec.get("tags") or [],
        triggers=triggers(spec),
    )


def main(names: list[str]) -> None:
    register_only = "--register-only" in names
    deployments = [runner_deployment(n) for n in names if n != "--register-only"]
    if not deployments:
        raise SystemExit("name at least one deployment of prefect.yaml")
    if register_only:
        for deployment in deployments:
            deployment.apply()
        return
    serve(*deployments, print_starting_message=True)


if __name__ == "__main__":
    main(sys.argv[1:])

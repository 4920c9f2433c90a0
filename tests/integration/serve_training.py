"""Serve a model's training deployment exactly as prefect.yaml declares it (name, parameters,
tags, triggers), against the Prefect API in ``PREFECT_API_URL``.

Used by the retrain-trigger test as the process that picks up the runs a drift event starts;
``python -m tests.integration.serve_training train-heart-disease``.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
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


def main(name: str) -> None:
    from flows.training import training_flow

    spec = deployment_spec(name)
    assert spec["entrypoint"] == "flows/training.py:training_flow", spec["entrypoint"]
    training_flow.serve(
        name=name,
        parameters=spec.get("parameters") or {},
        tags=spec.get("tags") or [],
        triggers=triggers(spec),
        print_starting_message=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])

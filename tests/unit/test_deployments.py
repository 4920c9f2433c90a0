"""prefect.yaml stays in step with the flows it deploys."""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex

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
    from mlsteward.config.models import get_model_config

    scheduled = [d for d in SPEC["deployments"] if d["entrypoint"].endswith(f":{flow_name}")]
    assert scheduled
    for d in scheduled:
        cfg = get_model_config(d["parameters"]["model"])
        expected = getattr(cfg, section).schedule
        assert [s["cron"] for s in d.get("schedules", [])] == ([expected] if expected else []), d[
            "name"
        ]


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
    from mlsteward.config.models import load_all_model_configs

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


# ---------------------------------------------------------------------------------------------
# the Kubernetes variant (deploy/): same deployments, other pool, code in the image

DEPLOY = REPO_ROOT / "deploy"
K8S_SPEC = yaml.safe_load((DEPLOY / "prefect.kubernetes.yaml").read_text())
BASE_JOB_TEMPLATE = json.loads((DEPLOY / "helm" / "base-job-template.json").read_text())
PROCESS_POOL = "mlsteward-process"
K8S_POOL = "mlsteward-kubernetes"
RUNTIME_SECRET = "mlsteward-runtime"
HOME_CLAIM = "mlsteward-home"
# Everything a Kubernetes deployment may add to its process-pool twin.
VARIANT_KEYS = {"work_pool"}


def _values(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "helm" / name).read_text())


def _dockerfile() -> tuple[str, dict[str, str], list[str]]:
    """The Dockerfile's WORKDIR, ENV and instructions (continuation lines joined)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    workdir = [ln.split(None, 1)[1] for ln in lines if ln.startswith("WORKDIR ")]
    env: dict[str, str] = {}
    for ln in lines:
        if ln.startswith("ENV "):
            env.update(kv.split("=", 1) for kv in shlex.split(ln[4:]))
    assert len(workdir) == 1, "one working directory"
    return workdir[0], env, lines


def _pull_directory(spec: dict) -> str:
    [step] = spec["pull"]
    return step["prefect.deployments.steps.set_working_directory"]["directory"]


def _k8s_job_variables(deployment: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Job variables as `prefect deploy` resolves them (``{{ $MLSTEWARD_IMAGE }}`` from env)."""
    from prefect.utilities.templating import apply_values

    monkeypatch.setenv("MLSTEWARD_IMAGE", "registry.example.com/mlsteward:test")
    return apply_values(deployment["work_pool"]["job_variables"], {}, remove_notset=False)


def test_local_deploy_sees_only_process_pool_deployments() -> None:
    # `make deploy` / `make up` run `prefect deploy --all` on prefect.yaml, which stops at the
    # first deployment whose pool the local server lacks.
    assert {d["work_pool"]["name"] for d in SPEC["deployments"]} == {PROCESS_POOL}


def test_every_kubernetes_deployment_twins_a_process_deployment() -> None:
    local = {d["name"]: d for d in SPEC["deployments"]}
    k8s = {d["name"]: d for d in K8S_SPEC["deployments"]}
    assert set(k8s) == set(local), "the variants deploy the same names (gateway, retrain)"
    for name, deployment in k8s.items():
        twin = local[name]
        assert deployment["work_pool"]["name"] == K8S_POOL, name
        same = {k: v for k, v in deployment.items() if k not in VARIANT_KEYS}
        assert same == {k: v for k, v in twin.items() if k not in VARIANT_KEYS}, name


def test_kubernetes_runs_start_in_the_image_workdir() -> None:
    workdir, env, _ = _dockerfile()
    assert _pull_directory(K8S_SPEC) == workdir
    assert env["MLSTEWARD_PROJECT_ROOT"] == workdir
    assert K8S_SPEC["build"] is None and K8S_SPEC["push"] is None  # the image is built apart
    assert not any("pull" in d for d in K8S_SPEC["deployments"])


def test_the_image_is_locked_non_root_and_on_the_project_python() -> None:
    import tomllib

    _, env, lines = _dockerfile()
    assert lines[0].startswith("FROM python:") and lines[0].endswith("-slim")
    version = lines[0].removeprefix("FROM python:").removesuffix("-slim")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    major, minor = version.split(".")
    assert project["requires-python"] == f">={version},<{major}.{int(minor) + 1}"
    syncs = [ln for ln in lines if ln.startswith("RUN uv sync")]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    [user] = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    # what the image sets and what every Job sets agree
    job_env = K8S_SPEC["deployments"][0]["work_pool"]["job_variables"]["env"]
    for var in ("MLSTEWARD_HOME", "PREFECT_HOME"):
        assert env[var] == job_env[var], var


@pytest.mark.parametrize("deployment", K8S_SPEC["deployments"], ids=lambda d: d["name"])
def test_kubernetes_job_variables_validate_against_the_worker_template(
    deployment: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check the Prefect server runs on a flow run's job variables, against
    prefect-kubernetes' own template (which the pool's template keeps unchanged)."""
    from prefect.utilities.schema_tools import is_valid_schema, validate
    from prefect_kubernetes.worker import KubernetesWorker

    schema = KubernetesWorker.get_default_base_job_template()["variables"]
    is_valid_schema(schema, preprocess=False)
    job_vars = _k8s_job_variables(deployment, monkeypatch)
    # Unknown keys would pass the schema and silently do nothing.
    assert set(job_vars) <= set(schema["properties"]), set(job_vars) - set(schema["properties"])
    defaults = {k: p["default"] for k, p in schema["properties"].items() if "default" in p}
    values = {**defaults, **job_vars}
    validate(values, schema, raise_on_error=True, preprocess=True, ignore_required=False,
             allow_none_with_default=True)  # fmt: skip
    assert job_vars["image"] == "registry.example.com/mlsteward:test"
    # the same validator rejects what Kubernetes would
    from prefect.utilities.schema_tools import ValidationError

    with pytest.raises(ValidationError):
        validate({**values, "image_pull_policy": "Sometimes"}, schema, raise_on_error=True,
                 preprocess=True, ignore_required=False, allow_none_with_default=True)  # fmt: skip
    env = job_vars["env"]
    assert env["MLSTEWARD_PROFILE"] == "production"
    secretish = [k for k in env if any(w in k for w in ("PASSWORD", "SECRET", "TOKEN", "KEY"))]
    assert not secretish, "credentials come from the mlsteward-runtime Secret"
    assert not any("@" in str(v) for v in env.values()), "no credentials inside URLs"


def test_the_pool_template_is_the_workers_default_plus_secret_and_home() -> None:
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    assert BASE_JOB_TEMPLATE["variables"] == default["variables"]
    ours = copy.deepcopy(BASE_JOB_TEMPLATE["job_configuration"])
    pod = ours["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container.pop("envFrom") == [{"secretRef": {"name": RUNTIME_SECRET}}]
    [mount] = container.pop("volumeMounts")
    [volume] = pod.pop("volumes")
    assert mount["name"] == volume["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == HOME_CLAIM
    job_env = K8S_SPEC["deployments"][0]["work_pool"]["job_variables"]["env"]
    assert mount["mountPath"] == job_env["MLSTEWARD_HOME"]
    assert pod.pop("securityContext")["runAsNonRoot"] is True
    assert ours == default["job_configuration"], "nothing else differs from the default"


def test_the_worker_renders_each_job_with_image_resources_secret_and_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through prefect-kubernetes' own job configuration, as the worker does for a flow run
    (the client is never reached: the template has no block or variable references)."""
    import asyncio
    import uuid

    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async def render(job_vars: dict) -> dict:
        async with PrefectClient("http://127.0.0.1:9/api") as client:
            cfg = await KubernetesWorkerJobConfiguration.from_template_and_values(
                BASE_JOB_TEMPLATE, job_vars, client=client
            )
        cfg.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="run"))
        return cfg.job_manifest

    sizes = set()
    for deployment in K8S_SPEC["deployments"]:
        job_vars = _k8s_job_variables(deployment, monkeypatch)
        manifest = asyncio.run(render(job_vars))
        pod = manifest["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == job_vars["image"]
        assert container["resources"] == {
            "requests": {"cpu": job_vars["cpu_request"], "memory": job_vars["memory_request"]},
            "limits": {"cpu": job_vars["cpu_limit"], "memory": job_vars["memory_limit"]},
        }
        assert container["envFrom"] == [{"secretRef": {"name": RUNTIME_SECRET}}]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLSTEWARD_PROFILE"] == "production"
        assert manifest["metadata"]["namespace"] == job_vars["namespace"] == "mlsteward"
        assert pod["serviceAccountName"] == job_vars["service_account_name"]
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == HOME_CLAIM
        assert container["args"] == ["prefect", "flow-run", "execute"]
        sizes.add(job_vars["memory_limit"])
    assert len(sizes) == 2, "training, reproduction and drift get the larger size"


# Secrets each file reads; deploy/README.md's table documents the same set.
def _secret_names(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretRef", "secretKeyRef", "existingDatabaseSecret", "existingSecret"):
                found.add(value["name"] if isinstance(value, dict) else value)
            found |= _secret_names(value)
    elif isinstance(node, list):
        for item in node:
            found |= _secret_names(item)
    return found


def test_helm_values_name_the_pool_secrets_and_databases_the_docs_name() -> None:
    server = _values("prefect-server.values.yaml")
    worker = _values("prefect-worker.values.yaml")
    mlflow = _values("mlflow.values.yaml")
    feast = _values("feast-featurestore.yaml")
    readme = (DEPLOY / "README.md").read_text()

    assert worker["worker"]["config"]["workPool"] == K8S_POOL
    assert worker["worker"]["config"]["type"] == "kubernetes"
    # HA: API replicas without services, one background-services process, no bundled database
    assert server["backgroundServices"]["runAsSeparateDeployment"] is True
    assert server["server"]["replicaCount"] >= 2
    assert server["postgresql"]["enabled"] is False
    assert server["secret"]["create"] is False
    # the MLflow and Feast databases follow the profile's <prefix>_<use> naming
    job_env = K8S_SPEC["deployments"][0]["work_pool"]["job_variables"]["env"]
    prefix = job_env["MLSTEWARD_DB_PREFIX"]
    assert mlflow["backendStore"]["postgres"]["database"] == f"{prefix}_mlflow"
    assert mlflow["artifactRoot"]["proxiedArtifactStorage"] is True
    assert feast["spec"]["feastProject"] == job_env["MLSTEWARD_FEAST_PROJECT"]
    for use in ("prefect", "mlflow", "feast", "audit"):
        assert f"`{prefix}_{use}`" in readme, use

    secrets = (
        {server["secret"]["name"]}
        | _secret_names([server, worker, mlflow, feast])
        | _secret_names(BASE_JOB_TEMPLATE)
    )
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", readme, flags=re.M))
    assert secrets == documented
    assert RUNTIME_SECRET in secrets


def test_prefect_server_env_names_are_prefect_settings() -> None:
    from prefect.settings import Settings

    known = set(Settings().to_environment_variables(exclude_unset=False))
    server = _values("prefect-server.values.yaml")
    names = [e["name"] for e in server["server"]["env"] + server["backgroundServices"]["env"]]
    prefect_core = [n for n in names if n.startswith("PREFECT_SERVER_")]
    assert prefect_core and set(prefect_core) <= known, set(prefect_core) - known
    assert server["server"]["env"] == server["backgroundServices"]["env"]
    assert all(
        v.get("valueFrom") or "@" not in str(v.get("value")) for v in server["server"]["env"]
    )


def test_mlflow_admits_the_tracking_uri_the_flows_use() -> None:
    from urllib.parse import urlsplit

    from mlflow.server.security_utils import is_allowed_host_header

    mlflow = _values("mlflow.values.yaml")
    allowed = [h.strip() for h in mlflow["extraEnvVars"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    job_env = K8S_SPEC["deployments"][0]["work_pool"]["job_variables"]["env"]
    uri = urlsplit(job_env["MLFLOW_TRACKING_URI"])
    assert job_env["MLFLOW_TRACKING_URI"] == job_env["MLSTEWARD_MLFLOW_URL"]
    assert is_allowed_host_header(allowed, uri.netloc)
    assert uri.hostname.startswith(mlflow["fullnameOverride"] + ".")
    assert uri.port == mlflow["service"]["port"]

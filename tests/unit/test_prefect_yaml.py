"""prefect.yaml and deploy/prefect.kubernetes.yaml are what config/models renders: nine
deployments per model, its own name and schedules, then the two that serve every model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlsteward.cli.app import app
from mlsteward.config.models import load_model_config, model_names
from mlsteward.config.sections.monitoring import DriftConfig, ScoringConfig
from mlsteward.errors import ConfigError
from mlsteward.platform import prefect_yaml
from mlsteward.platform.deployments import deployments_digest
from mlsteward.platform.services import PlatformConfig
from tests.conftest import REPO_ROOT

FILES = (prefect_yaml.LOCAL_FILE, prefect_yaml.KUBERNETES_FILE)
SHARED = {
    "audit-upkeep": "flows/upkeep.py:upkeep_flow",
    "reaper": "flows/reaper.py:reaper_flow",
    "process-review": "flows/process.py:process_review_flow",
}
# The kinds every model is run in, and the flow behind each.
KINDS = {
    "train": "flows/training.py:training_flow",
    "ingest": "flows/ingestion.py:ingestion_flow",
    "materialize": "flows/ingestion.py:materialize_flow",
    "promote": "flows/governance.py:promotion_flow",
    "rollback": "flows/governance.py:rollback_flow",
    "score": "flows/scoring.py:scoring_flow",
    "drift": "flows/drift.py:drift_flow",
    "monitor": "flows/monitor.py:monitor_flow",
    "watch": "flows/monitor.py:watch_flow",
    "reproduce": "flows/reproduce.py:reproduce_flow",
    "rollout": "flows/rollout.py:rollout_flow",
}
runner = CliRunner()


def _model_yaml(directory: Path, name: str, **sections: dict) -> Path:
    """The demo model's config under another name, with sections replaced: a config the core
    accepts as it stands."""
    raw = yaml.safe_load((REPO_ROOT / "config" / "models" / "heart_disease.yaml").read_text())
    raw = {**raw, "name": name, **sections}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _project(tmp_path: Path) -> Path:
    """A project root holding only model configs (the files are written beside them)."""
    root = tmp_path / "project"
    (root / "config" / "models").mkdir(parents=True)
    return root


def _deployments(text: str) -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(text)["deployments"]}


@pytest.mark.parametrize("path", FILES)
def test_the_committed_files_are_what_the_configs_render(path: str) -> None:
    rendered = prefect_yaml.render(prefect_yaml.declared_models(REPO_ROOT / "config" / "models"))
    committed = (REPO_ROOT / path).read_text()
    assert committed == rendered[path], (
        f"{path} differs from config/models: run `{prefect_yaml.RENDER_COMMAND}` and commit it"
    )
    assert prefect_yaml.stale_files(REPO_ROOT) == []


@pytest.mark.parametrize("model", model_names(REPO_ROOT / "config" / "models"))
@pytest.mark.parametrize("path", FILES)
def test_every_configured_model_has_every_kind_with_its_own_name(path: str, model: str) -> None:
    deployments = _deployments((REPO_ROOT / path).read_text())
    slug = model.replace("_", "-")
    for kind, entrypoint in KINDS.items():
        d = deployments[f"{kind}-{slug}"]
        assert d["entrypoint"] == entrypoint, d["name"]
        assert d["parameters"] == {"model": model}, d["name"]
        assert model in d["tags"], d["name"]
    [trigger] = deployments[f"train-{slug}"]["triggers"]
    assert trigger["match"] == {"prefect.resource.id": f"mlsteward.model.{model}"}
    assert trigger["parameters"]["model"] == model
    [watch] = deployments[f"watch-{slug}"]["triggers"]
    assert watch["expect"] == ["mlsteward.model.promoted"]
    assert watch["parameters"] == {"model": model, "version": "{{ event.payload.version }}"}
    assert deployments[f"monitor-{slug}"]["schedules"][0]["cron"] == "*/15 * * * *"


def test_a_new_model_config_gets_its_deployments_and_schedules(tmp_path: Path) -> None:
    models = tmp_path / "config" / "models"
    _model_yaml(models, "heart_disease")
    path = _model_yaml(
        models, "churn", scoring={"schedule": "30 */4 * * *"}, drift={"schedule": "0 2 * * 1"}
    )
    load_model_config(path)  # a config the core accepts, not only the renderer
    rendered = prefect_yaml.render(prefect_yaml.declared_models(models))
    local, k8s = (_deployments(rendered[p]) for p in FILES)

    assert list(local) == [
        *(f"{kind}-churn" for kind in KINDS),
        *(f"{kind}-heart-disease" for kind in KINDS),
        *SHARED,
    ]
    assert local["train-churn"]["parameters"] == {"model": "churn"}
    assert local["train-churn"]["triggers"][0]["parameters"] == {
        "model": "churn",
        "reason": "{{ event.payload.reason }}",
    }
    assert local["score-churn"]["schedules"] == [
        {"cron": "30 */4 * * *", "timezone": "UTC", "active": True}
    ]
    assert [s["cron"] for s in local["drift-churn"]["schedules"]] == ["0 2 * * 1"]
    assert "On the cron 0 2 * * 1 (UTC), as drift.schedule" in local["drift-churn"]["description"]
    assert "train-churn retrains" in local["drift-churn"]["description"]
    # the other model keeps its own (default) schedules
    assert [s["cron"] for s in local["score-heart-disease"]["schedules"]] == ["0 * * * *"]
    # the Kubernetes variant: the same entries on the Kubernetes pools
    assert list(k8s) == list(local)
    for name, d in k8s.items():
        assert d["work_pool"]["name"] == "mlsteward-kubernetes", name
        assert {k: v for k, v in d.items() if k != "work_pool"} == {
            k: v for k, v in local[name].items() if k != "work_pool"
        }, name
    large = {n for n, d in k8s.items() if d["work_pool"]["job_variables"]["memory_limit"] == "8Gi"}
    assert large == {f"{kind}-churn" for kind in ("train", "drift", "reproduce")} | {
        f"{kind}-heart-disease" for kind in ("train", "drift", "reproduce")
    }


def test_the_rendered_schedules_and_triggers_are_what_prefect_accepts(tmp_path: Path) -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    models = tmp_path / "models"
    _model_yaml(models, "churn", scoring={"schedule": "30 */4 * * *"})
    local = _deployments(prefect_yaml.render(prefect_yaml.declared_models(models))["prefect.yaml"])
    crons = [s for d in local.values() for s in d.get("schedules", [])]
    assert len(crons) == 7  # materialize, score, drift, monitor, upkeep, reaper, process-review
    for schedule in crons:
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    DeploymentEventTrigger.model_validate(local["train-churn"]["triggers"][0])
    DeploymentEventTrigger.model_validate(local["watch-churn"]["triggers"][0])


def test_a_null_schedule_gets_no_schedule_and_a_missing_one_the_default(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _model_yaml(models, "quiet", scoring={"schedule": None, "top_k": 3}, drift={"schedule": None})
    plain = _model_yaml(models, "plain")
    raw = yaml.safe_load(plain.read_text())
    del raw["drift"]  # the demo config sets no scoring section either
    assert "scoring" not in raw
    plain.write_text(yaml.safe_dump(raw))

    [plain_m, quiet_m] = prefect_yaml.declared_models(models)
    assert (quiet_m.scoring_schedule, quiet_m.drift_schedule) == (None, None)
    assert plain_m.scoring_schedule == ScoringConfig().schedule
    assert plain_m.drift_schedule == DriftConfig().schedule
    local = _deployments(prefect_yaml.render([plain_m, quiet_m])["prefect.yaml"])
    for kind, section in (("score", "scoring"), ("drift", "drift")):
        assert "schedules" not in local[f"{kind}-quiet"]
        assert f"nscheduled: {section}.schedule is null" in local[f"{kind}-quiet"]["description"]
        assert len(local[f"{kind}-plain"]["schedules"]) == 1
    assert len(local["materialize-quiet"]["schedules"]) == 1  # not from the config


def test_the_model_independent_deployments_appear_once_after_the_models(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for name in ("alpha", "beta", "gamma"):
        _model_yaml(models, name)
    for text in prefect_yaml.render(prefect_yaml.declared_models(models)).values():
        names = [d["name"] for d in yaml.safe_load(text)["deployments"]]
        assert len(names) == 3 * len(KINDS) + len(SHARED)
        assert len(set(names)) == len(names)
        assert names[-len(SHARED) :] == list(SHARED)
        shared = {d["name"]: d for d in yaml.safe_load(text)["deployments"][-len(SHARED) :]}
        assert {n: d["entrypoint"] for n, d in shared.items()} == SHARED
        assert all("model" not in d.get("parameters", {}) for d in shared.values())


def test_no_models_still_renders_the_shared_deployments(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    rendered = prefect_yaml.render(prefect_yaml.declared_models(tmp_path / "models"))
    assert list(_deployments(rendered["prefect.yaml"])) == list(SHARED)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"scoring": {"schedule": "hourly"}}, "scoring.schedule: 'hourly' is not a cron"),
        ({"drift": {"schedule": "0 6 * *"}}, "drift.schedule: '0 6 * *' is not a cron"),
        ({"drift": {"schedule": 6}}, "drift.schedule: 6 is not a cron"),
        ({"scoring": "0 * * * *"}, "scoring: must be a mapping, got str"),
        ({"name": "other"}, "name: 'other' must match the file name 'broken'"),
    ],
)
def test_a_bad_config_is_one_message_naming_the_file_and_key(
    tmp_path: Path, sections: dict, message: str
) -> None:
    models = tmp_path / "models"
    path = _model_yaml(models, "broken")
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, **sections}))
    with pytest.raises(ConfigError) as err:
        prefect_yaml.declared_models(models)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_config_the_core_rejects_still_gets_its_deployments(tmp_path: Path) -> None:
    """Rendered from what the YAML declares: its runs stop with the config's own message."""
    models = tmp_path / "models"
    path = _model_yaml(models, "odd", thresholds={"no_such_metric": {"min": 1}})
    with pytest.raises(ConfigError, match="no_such_metric"):
        load_model_config(path)
    [odd] = prefect_yaml.declared_models(models)
    assert odd.names == [f"{kind}-odd" for kind in KINDS]


def test_write_writes_only_what_differs_and_check_names_stale_files(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _model_yaml(root / "config" / "models", "churn")
    assert prefect_yaml.stale_files(root) == list(FILES)  # nothing written yet
    assert prefect_yaml.write(root) == list(FILES)
    assert prefect_yaml.stale_files(root) == []
    assert prefect_yaml.write(root) == []

    _model_yaml(root / "config" / "models", "fraud")
    assert prefect_yaml.stale_files(root) == list(FILES)
    assert prefect_yaml.write(root) == list(FILES)
    assert "train-fraud" in _deployments((root / "prefect.yaml").read_text())


def test_the_deploy_digest_follows_a_models_schedule(tmp_path: Path) -> None:
    root = _project(tmp_path)
    models = root / "config" / "models"
    _model_yaml(models, "churn")
    prefect_yaml.write(root)
    cfg = PlatformConfig(tmp_path / "home", root, "127.0.0.1", 1, 2, 3, 4, 5)
    before = deployments_digest(cfg)
    assert deployments_digest(cfg) == before
    _model_yaml(models, "churn", drift={"schedule": "0 3 * * *"})
    # prefect.yaml not written again: the config's change alone deploys again
    assert deployments_digest(cfg) != before


def test_render_command_writes_and_check_refuses_naming_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path)
    _model_yaml(root / "config" / "models", "churn")
    monkeypatch.setenv("MLSTEWARD_PROJECT_ROOT", str(root))

    check = runner.invoke(app, ["deployments", "render", "--check"])
    assert check.exit_code == 1
    assert "prefect.yaml, deploy/prefect.kubernetes.yaml differ from config/models" in (
        check.output
    )
    assert f"run `{prefect_yaml.RENDER_COMMAND}`" in check.output
    assert not (root / "prefect.yaml").exists()

    done = runner.invoke(app, ["deployments", "render", "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["written"] == list(FILES)
    assert doc["models"][0]["deployments"] == [f"{kind}-churn" for kind in KINDS]
    assert doc["shared_deployments"] == list(SHARED)

    again = runner.invoke(app, ["deployments", "render", "--check"])
    assert again.exit_code == 0, again.output
    assert "up to date (1 model(s) with 11 deployments, 3 for all models)" in again.output


def test_render_command_outside_a_checkout_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_PROJECT_ROOT", str(tmp_path))
    result = runner.invoke(app, ["deployments", "render"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'config' / 'models'}: no model configs here" in result.output
    assert not (tmp_path / "prefect.yaml").exists()


def test_models_shows_each_models_deployments_on_one_line() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    names = model_names(REPO_ROOT / "config" / "models")
    assert len(lines) == len(names)
    for line, name in zip(lines, names, strict=True):
        assert line.startswith(name)
        kinds = ",".join(KINDS)
        assert line.endswith(f"deployments {{{kinds}}}-{name.replace('_', '-')}"), line
    doc = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    committed = _deployments((REPO_ROOT / "prefect.yaml").read_text())
    for m in doc["models"]:
        assert m["deployments"] == [f"{k}-{m['name'].replace('_', '-')}" for k in KINDS]
        assert set(m["deployments"]) <= set(committed)

"""MLflow behind basic auth as ``make up`` runs it: one real ``mlflow server --app-name basic-auth``
for the module (SQLite backend and auth database in a temporary home), started with the
platform's own argv, environment and credentials. The governance account registers a version
and sets ``@champion``; a viewer reads both but MLflow itself refuses to move the alias (403);
an owner-team member gets EDIT on the model's experiment and READ on its registered model; no
login gets 401."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.models import model_names
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.identity import identity_store, local_principal
from mlsteward.platform import processes
from mlsteward.platform.credentials import MLFLOW_PASSWORD_FILE, ensure_credentials, secrets_dir
from mlsteward.platform.mlflow_access import grant_mlflow_access
from mlsteward.platform.mlflow_auth import (
    AUTH_CONFIG_FILE,
    GOVERNANCE_USER,
    basic_auth_header,
    check_governance_login,
)
from mlsteward.platform.services import (
    PlatformConfig,
    PlatformError,
    child_env,
    http_json,
    services,
    wait_ready,
)
from tests.support.platform import free_port

MODEL = "heart_disease"  # config/models/heart_disease.yaml, owner cardiology-ml
TEAM = "cardiology-ml"


@dataclass(frozen=True)
class LockedMlflow:
    home: Path
    url: str
    governance_password: str
    version: str
    run_id: str
    passwords: dict[str, str]  # MLflow user -> the password its grant printed


def as_login(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    """MLflow's clients read the login from the environment on every request."""
    for var, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)


def raw(url: str, method: str = "GET", body: dict | None = None, login: tuple | None = None) -> int:
    """The HTTP status MLflow itself answers (no client library in between)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if login is not None:
        req.add_header("Authorization", basic_auth_header(*login))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedMlflow]:
    """The server, a registered version with ``@champion`` set by the governance account, and
    two people with logins: vera (no team) and olga (the model's owner team)."""
    home = tmp_path_factory.mktemp("locked-mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(home))
        mp.setenv("MLSTEWARD_MLFLOW_PORT", str(free_port()))
        for var in ("MLSTEWARD_PROFILE", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"):
            mp.delenv(var, raising=False)
        cfg = PlatformConfig.from_env()
        creds = ensure_credentials(home)  # what the first `up` makes
        svc = services(cfg)["mlflow"]
        env = {**child_env(cfg), **creds.mlflow_server_env(home)}
        pid = processes.spawn(svc.argv(), env, svc.log_file(cfg), cfg.project_root)
        processes.write_pid(svc.pid_file(cfg), pid)
        try:
            url = cfg.url(cfg.mlflow_port)
            wait_ready(cfg, svc, pid, lambda: http_json(f"{url}/health", env) == "OK")
            assert creds.mlflow_password is not None and creds.mlflow_password.value
            password = creds.mlflow_password.value
            check_governance_login(url, password, secrets_dir(home) / MLFLOW_PASSWORD_FILE)

            with identity_store() as store:
                store.add_principal("vera", roles=["viewer"], by=local_principal())
                store.add_principal("olga", roles=["trainer"], teams=[TEAM], by=local_principal())
            # The grants also make the model's experiment and registered model, as governance.
            passwords = {}
            for who in ("vera", "olga"):
                result = grant_mlflow_access(who)
                assert result.created and result.password
                passwords[who] = result.password

            mp.setenv("MLFLOW_TRACKING_USERNAME", GOVERNANCE_USER)
            mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
            client = MlflowClient(tracking_uri=url, registry_uri=url)
            experiment = client.get_experiment_by_name(MODEL)
            assert experiment is not None
            run = client.create_run(experiment.experiment_id)
            mv = client.create_model_version(
                MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
            client.set_registered_model_alias(MODEL, "champion", mv.version)
            mp.delenv("MLFLOW_TRACKING_USERNAME")
            mp.delenv("MLFLOW_TRACKING_PASSWORD")
            yield LockedMlflow(home, url, password, str(mv.version), run.info.run_id, passwords)
        finally:
            processes.stop(pid, signal.SIGTERM, 20.0)


def test_the_server_runs_the_basic_auth_app_with_its_secrets_out_of_argv(
    locked: LockedMlflow,
) -> None:
    pid = int((locked.home / "run" / "mlflow.pid").read_text())
    argv = " ".join(processes.cmdline(pid))
    assert "--app-name basic-auth" in argv
    assert locked.governance_password not in argv
    ini = secrets_dir(locked.home) / AUTH_CONFIG_FILE
    assert ini.stat().st_mode & 0o777 == 0o600
    text = ini.read_text()
    assert "default_permission = READ" in text and f"admin_username = {GOVERNANCE_USER}" in text
    assert locked.governance_password not in text
    assert (locked.home / "mlflow" / "basic_auth.db").exists()
    # A password that is not the auth database's is named at `up`, not met as a 401 later.
    with pytest.raises(PlatformError, match="refused the governance account"):
        check_governance_login(locked.url, "not-it", locked.home / "secrets" / "x")


def test_no_login_is_refused_with_401(locked: LockedMlflow) -> None:
    get_model = f"{locked.url}/api/2.0/mlflow/registered-models/get?name={MODEL}"
    assert raw(get_model) == 401
    assert raw(get_model, login=("vera", "not-her-password")) == 401
    assert raw(f"{locked.url}/") == 401  # the UI too
    assert raw(get_model, login=("vera", locked.passwords["vera"])) == 200


@pytest.mark.parametrize("who", ["vera", "olga"])
def test_people_read_the_champion_but_mlflow_refuses_to_move_it(
    locked: LockedMlflow, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    as_login(monkeypatch, who, locked.passwords[who])
    client = MlflowClient(tracking_uri=locked.url, registry_uri=locked.url)
    assert client.get_model_version_by_alias(MODEL, "champion").version == locked.version
    assert client.get_model_version(MODEL, locked.version).run_id == locked.run_id
    assert client.get_registered_model(MODEL).aliases == {"champion": locked.version}

    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias(MODEL, "champion", locked.version)
    assert refused.value.get_http_status_code() == 403
    alias = {"name": MODEL, "alias": "champion", "version": locked.version}
    login = (who, locked.passwords[who])
    assert raw(f"{locked.url}/api/2.0/mlflow/registered-models/alias", "POST", alias, login) == 403
    with pytest.raises(MlflowException) as no_delete:
        client.delete_registered_model_alias(MODEL, "champion")
    assert no_delete.value.get_http_status_code() == 403
    with pytest.raises(MlflowException) as no_version:
        client.create_model_version(MODEL, source=f"runs:/{locked.run_id}/model")
    assert no_version.value.get_http_status_code() == 403

    as_login(monkeypatch, GOVERNANCE_USER, locked.governance_password)
    assert client.get_model_version_by_alias(MODEL, "champion").version == locked.version


def test_the_owner_team_edits_the_experiment_and_only_reads_the_model(
    locked: LockedMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    as_login(monkeypatch, GOVERNANCE_USER, locked.governance_password)
    admin = AuthServiceClient(locked.url)
    client = MlflowClient(tracking_uri=locked.url, registry_uri=locked.url)
    experiment = client.get_experiment_by_name(MODEL)
    assert experiment is not None
    expected = {"olga": ("EDIT", "READ"), "vera": ("READ", "READ")}
    for who, (on_experiment, on_model) in expected.items():
        exp = admin.get_user_permission(who, "experiment", experiment.experiment_id)
        rm = admin.get_user_permission(who, "registered_model", MODEL)
        assert (exp.permission, rm.permission) == (on_experiment, on_model), who

    as_login(monkeypatch, "olga", locked.passwords["olga"])
    client.set_tag(locked.run_id, "review", "olga looked")  # annotate a run: EDIT
    with pytest.raises(MlflowException, match=r"RESOURCE_ALREADY_EXISTS|already exists"):
        client.create_registered_model(MODEL)  # the governance account made it first
    with pytest.raises(MlflowException) as refused:
        client.update_registered_model(MODEL, description="ours now")
    assert refused.value.get_http_status_code() == 403

    as_login(monkeypatch, "vera", locked.passwords["vera"])
    with pytest.raises(MlflowException) as viewer:
        client.set_tag(locked.run_id, "review", "vera too")
    assert viewer.value.get_http_status_code() == 403
    assert client.get_run(locked.run_id).data.tags["review"] == "olga looked"


def test_a_later_grant_takes_back_what_a_team_change_removed(
    locked: LockedMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_HOME", str(locked.home))
    monkeypatch.setenv("MLSTEWARD_MLFLOW_PORT", locked.url.rsplit(":", 1)[1])
    with identity_store() as store:
        store.add_principal("tom", roles=["trainer"], teams=[TEAM], by=local_principal())
    first = grant_mlflow_access("user:tom")
    # his team's model to edit; every other configured model only to read
    assert {g.model: (g.experiment, g.registered_model) for g in first.grants} == {
        m: ("EDIT", "READ") if m == MODEL else ("READ", "READ") for m in model_names()
    }
    assert first.password is not None
    with identity_store() as store:
        store.add_principal("tom", roles=["trainer"], by=local_principal(), replace=True)
    again = grant_mlflow_access("tom")
    assert not again.created and again.password is None  # the password he has keeps working
    assert {(g.experiment, g.registered_model) for g in again.grants} == {("READ", "READ")}
    as_login(monkeypatch, "tom", first.password)
    client = MlflowClient(tracking_uri=locked.url)
    with pytest.raises(MlflowException) as refused:
        client.set_tag(locked.run_id, "review", "tom left")
    assert refused.value.get_http_status_code() == 403

    reset = grant_mlflow_access("tom", reset_password=True)
    assert reset.password and reset.password != first.password
    get_model = f"{locked.url}/api/2.0/mlflow/registered-models/get?name={MODEL}"
    assert raw(get_model, login=("tom", first.password)) == 401
    assert raw(get_model, login=("tom", reset.password)) == 200


def test_the_command_prints_a_new_password_once_and_refuses_services(
    locked: LockedMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSTEWARD_HOME", str(locked.home))
    monkeypatch.setenv("MLSTEWARD_MLFLOW_PORT", locked.url.rsplit(":", 1)[1])
    monkeypatch.delenv("MLSTEWARD_TOKEN", raising=False)  # single-user mode: the operator
    with identity_store() as store:
        store.add_principal("ines", roles=["approver"], teams=[TEAM], by=local_principal())
    runner = CliRunner()
    first = runner.invoke(app, ["mlflow-access", "grant", "user:ines"])
    assert first.exit_code == 0, first.output
    assert "MLflow user ines (created)" in first.output
    assert f"{MODEL:<24} owner {TEAM:<18} experiment EDIT" in first.output
    assert "shown only now" in first.output
    second = runner.invoke(app, ["mlflow-access", "grant", "ines", "--json"])
    assert second.exit_code == 0, second.output
    doc = json.loads(second.output)
    assert doc["created"] is False and "password" not in doc
    # each grant is audited with who gave it, and no password ever reaches the trail
    with audit_store() as audit:
        every = audit.query(action=Action.MLFLOW_ACCESS_GRANTED)
    granted = [r for r in every if r.details["principal"] == "user:ines"]
    assert [r.details["created"] for r in granted] == [True, False]
    assert all(r.actor.startswith("local:") for r in granted)
    lines = first.output.splitlines()
    password = lines[next(i for i, ln in enumerate(lines) if "shown only now" in ln) + 2].strip()
    assert len(password) >= 16
    assert not any(password in json.dumps(r.to_dict()) for r in every)

    with pytest.raises(MlstewardError, match="MLflow logins are for people"):
        grant_mlflow_access("service:ci")
    with pytest.raises(NotFoundError, match="user:nobody is not a principal"):
        grant_mlflow_access("nobody")

"""The credentials the platform's first ``up`` makes: an admin token and a webhook secret, each in
a file only its owner can read, shown once, and afterwards only named; an exported secret wins;
the gateway alone gets the secret, through its environment."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsteward.identity import Role, authenticate, clear_cache, identity_store, local_principal
from mlsteward.platform import processes
from mlsteward.platform.command import print_credentials
from mlsteward.platform.credentials import (
    ensure_credentials,
    platform_mlflow_login_env,
    secrets_dir,
)
from mlsteward.platform.lifecycle import _older_secret, _service_envs
from mlsteward.platform.services import (
    PlatformConfig,
    PlatformError,
    ServiceState,
    child_env,
    services,
)

SECRET_VARS = ("MLSTEWARD_WEBHOOK_SECRET", "MLSTEWARD_WEBHOOK_SECRET_BLOCK")


@pytest.fixture(autouse=True)
def no_secret_exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable: the modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cfg(mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    for kind in ("PREFECT", "MLFLOW", "GATEWAY", "API", "SERVING"):
        monkeypatch.setenv(f"MLSTEWARD_{kind}_PORT", str(_free_port()))
    return PlatformConfig.from_env()


def test_the_first_start_makes_both_files_0600_with_a_working_admin_token(
    mlsteward_home: Path, loose_umask: None, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = ensure_credentials(mlsteward_home)

    folder = secrets_dir(mlsteward_home)
    token_file, secret_file = folder / "admin.token", folder / "webhook.secret"
    assert _mode(folder) == 0o700
    assert (_mode(token_file), _mode(secret_file)) == (0o600, 0o600)
    assert creds.admin_token.created and creds.webhook_secret.created
    token, secret = token_file.read_text().strip(), secret_file.read_text().strip()
    assert token.startswith("msw_") and len(secret) >= 43  # 32 random bytes, base64url

    admin = authenticate(token)
    assert admin.identity == "user:admin" and admin.roles == frozenset({Role.ADMIN})
    with identity_store() as store:
        ci = store.get_principal("service:ci")
        assert ci is not None and ci.roles == frozenset({Role.CI})
        added_by = {p["identity"]: p["created_by"] for p in store.list_principals()}
    assert added_by["user:admin"] == local_principal().actor
    assert creds.principals_added == ("user:admin", "service:ci", "service:worker")
    # the worker's own viewer token, for rollouts that read the prediction service
    worker_file = folder / "worker.token"
    assert _mode(worker_file) == 0o600
    worker = authenticate(worker_file.read_text().strip())
    assert worker.identity == "service:worker" and worker.roles == frozenset({Role.VIEWER})

    print_credentials(creds)
    out = capsys.readouterr().out
    assert out.count(token) == 1 and out.count(secret) == 1
    assert f"export MLSTEWARD_TOKEN=$(cat {token_file})" in out
    assert "CI must sign its webhook requests with it" in out
    # The --json document and any repr name the files, never the values.
    dumped = json.dumps(creds.to_dict()) + repr(creds)
    assert token not in dumped and secret not in dumped
    assert str(token_file) in dumped


def test_a_second_start_keeps_both_and_only_says_where_they_are(
    mlsteward_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_credentials(mlsteward_home)
    folder = secrets_dir(mlsteward_home)
    before = {p.name: (p.stat().st_ino, p.read_text()) for p in folder.iterdir()}
    capsys.readouterr()

    again = ensure_credentials(mlsteward_home)
    print_credentials(again)
    out = capsys.readouterr().out

    assert not again.admin_token.created and not again.webhook_secret.created
    assert again.principals_added == ()
    assert {p.name: (p.stat().st_ino, p.read_text()) for p in folder.iterdir()} == before
    for _, value in before.values():
        assert value.strip() not in out
    assert f"export MLSTEWARD_TOKEN=$(cat {folder / 'admin.token'})" in out
    assert f"{folder / 'webhook.secret'}   (CI signs webhook requests with it)" in out
    assert "shown only this once" not in out
    with identity_store() as store:
        assert len(store.list_tokens("user:admin")) == 1  # no second token was made
    # The gateway still gets the same secret.
    assert again.gateway_env() == {"MLSTEWARD_WEBHOOK_SECRET": before["webhook.secret"][1].strip()}


def test_only_the_gateway_gets_the_secret_and_never_on_its_command_line(
    mlsteward_home: Path, cfg: PlatformConfig
) -> None:
    creds = ensure_credentials(mlsteward_home)
    secret = (secrets_dir(mlsteward_home) / "webhook.secret").read_text().strip()
    svcs = services(cfg)
    envs = _service_envs(cfg, svcs, child_env(cfg), creds)

    assert envs["gateway"]["MLSTEWARD_WEBHOOK_SECRET"] == secret
    assert [n for n, env in envs.items() if "MLSTEWARD_WEBHOOK_SECRET" in env] == ["gateway"]
    worker_token = (secrets_dir(mlsteward_home) / "worker.token").read_text().strip()
    assert envs["prefect-worker"]["MLSTEWARD_SERVING_TOKEN"] == worker_token
    assert [n for n, env in envs.items() if "MLSTEWARD_SERVING_TOKEN" in env] == ["prefect-worker"]
    assert all(secret not in " ".join(svc.argv()) for svc in svcs.values())
    # MLflow's governance login: the server as its admin, the processes that write to it as
    # clients, nobody on a command line.
    password = (secrets_dir(mlsteward_home) / "mlflow-governance.password").read_text().strip()
    assert envs["mlflow"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    assert [n for n, env in envs.items() if "MLFLOW_AUTH_ADMIN_PASSWORD" in env] == ["mlflow"]
    writers = {n for n, env in envs.items() if env.get("MLFLOW_TRACKING_PASSWORD") == password}
    assert writers == {"prefect-worker", "serving", "api"}
    assert all(password not in " ".join(svc.argv()) for svc in svcs.values())
    assert svcs["mlflow"].args[:2] == ("--app-name", "basic-auth")
    # The governance API never falls back to single-user mode.
    assert envs["api"]["MLSTEWARD_AUTH"] == "required"
    assert svcs["api"].argv()[-4:] == ["--host", cfg.host, "--port", str(cfg.api_port)]


def test_the_cli_gets_the_mlflow_login_only_for_this_homes_server(
    mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch, cfg: PlatformConfig
) -> None:
    assert platform_mlflow_login_env(cfg) == {}  # no `up` yet: no password
    ensure_credentials(mlsteward_home)
    password = (secrets_dir(mlsteward_home) / "mlflow-governance.password").read_text().strip()
    assert platform_mlflow_login_env(cfg) == {}  # local profile: the store file, no server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.url(cfg.mlflow_port))
    assert platform_mlflow_login_env(cfg) == {
        "MLFLOW_TRACKING_USERNAME": "mlsteward-governance",
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.elsewhere:5000")
    assert platform_mlflow_login_env(cfg) == {}  # the password never goes to another server


@pytest.mark.parametrize("var", SECRET_VARS)
def test_an_exported_secret_wins_over_the_file(
    mlsteward_home: Path, monkeypatch: pytest.MonkeyPatch, cfg: PlatformConfig, var: str
) -> None:
    monkeypatch.setenv(var, "exported")
    creds = ensure_credentials(mlsteward_home)
    assert not (secrets_dir(mlsteward_home) / "webhook.secret").exists()  # nothing unused
    assert creds.webhook_secret.source == var

    # A file from an earlier start is there, and the exported one still wins.
    monkeypatch.delenv(var)
    ensure_credentials(mlsteward_home)
    assert (secrets_dir(mlsteward_home) / "webhook.secret").exists()
    monkeypatch.setenv(var, "exported")
    creds = ensure_credentials(mlsteward_home)
    gateway = _service_envs(cfg, services(cfg), child_env(cfg), creds)["gateway"]
    assert gateway[var] == "exported"
    assert {v: gateway.get(v) for v in SECRET_VARS if v != var} == {
        v: None for v in SECRET_VARS if v != var
    }


def test_a_revoked_admin_token_is_named_with_what_to_do(
    mlsteward_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ensure_credentials(mlsteward_home)
    with identity_store() as store:
        [info] = store.list_tokens("user:admin")
        store.revoke_token(info.token_id, by=local_principal())

    again = ensure_credentials(mlsteward_home)
    assert not again.admin_token.created
    note = again.admin_token.note or ""
    assert f"token {info.token_id} was revoked" in note
    assert f"delete {first.admin_token.path} and run make up again" in note

    # Deleting the file is how to get a new one: made and shown once, the old one stays dead.
    first.admin_token.path.unlink()
    renewed = ensure_credentials(mlsteward_home)
    assert renewed.admin_token.created and renewed.principals_added == ()
    token = first.admin_token.path.read_text().strip()
    assert authenticate(token).identity == "user:admin"


def test_a_secret_file_others_can_read_is_narrowed_to_0600(mlsteward_home: Path) -> None:
    ensure_credentials(mlsteward_home)
    secret_file = secrets_dir(mlsteward_home) / "webhook.secret"
    secret_file.chmod(0o644)
    secrets_dir(mlsteward_home).chmod(0o755)

    creds = ensure_credentials(mlsteward_home)
    assert _mode(secret_file) == 0o600 and _mode(secrets_dir(mlsteward_home)) == 0o700
    assert creds.webhook_secret.note == "its mode was 0644: set to 0600"


def test_an_empty_or_linked_secret_file_is_refused_with_its_path(
    mlsteward_home: Path, tmp_path: Path
) -> None:
    ensure_credentials(mlsteward_home)
    secret_file = secrets_dir(mlsteward_home) / "webhook.secret"
    secret_file.write_text("\n")
    with pytest.raises(PlatformError, match=rf"{secret_file} is empty: delete it"):
        ensure_credentials(mlsteward_home)

    # A symlink planted in its place is neither followed nor replaced.
    secret_file.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("someone else's\n")
    secret_file.symlink_to(elsewhere)
    with pytest.raises(PlatformError, match=rf"{secret_file}: cannot read the secret"):
        ensure_credentials(mlsteward_home)
    assert elsewhere.read_text() == "someone else's\n"


def test_a_running_gateway_with_an_older_secret_is_pointed_out(mlsteward_home: Path) -> None:
    """Deleting the secret file makes a new secret, but a running gateway keeps its own until
    it restarts: ``up`` says so rather than let CI's new signatures fail unexplained."""
    creds = ensure_credentials(mlsteward_home)
    current = creds.gateway_env()
    env = {**os.environ, "MLSTEWARD_WEBHOOK_SECRET": "the-old-one"}
    proc = subprocess.Popen(["sleep", "60"], env=env)
    try:
        # Until the child has exec'd, /proc shows the environment it was forked with (ours)
        deadline = time.monotonic() + 10
        while processes.environ(proc.pid).get("MLSTEWARD_WEBHOOK_SECRET") != "the-old-one":
            assert time.monotonic() < deadline, "the child never started with its environment"
            time.sleep(0.01)
        state = ServiceState("gateway", running=True, pid=proc.pid, url=None, log="")
        assert _older_secret(state, current) == (
            "checks an older webhook secret: make down && make up to use the current one"
        )
        assert _older_secret(state, {"MLSTEWARD_WEBHOOK_SECRET": "the-old-one"}) is None
        assert _older_secret(state, {}) is None  # a Prefect Secret block: nothing to compare
    finally:
        proc.kill()
        proc.wait()

"""The platform's MLflow server behind MLflow's basic-auth app (``--app-name basic-auth``).

Anyone who can reach an open MLflow server can move ``@champion`` with one click, outside every
gate and four-eyes check. So the server asks every request for a login: people read
(``default_permission = READ``), and one service account, the MLflow admin
``mlsteward-governance``, is the only principal that may change registered models and aliases.
The platform's own processes (the worker and its flow runs, the prediction service, the
governance API) act as it; its password is made on the first ``up`` like the other credentials
and reaches them through their environment, never their command line.

The auth app keeps users and grants in its own database: a SQLite file under the home, or the
profile's ``<prefix>_mlflow_auth`` database on PostgreSQL. Its settings file is written to the
secrets folder on every ``up`` (it may name a database password); the admin's password is not
in it but in the server's environment.

Only the standard library and our settings: ``up`` must not load MLflow.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from mlsteward.config import profiles, settings
from mlsteward.platform.services import PlatformError

GOVERNANCE_USER = "mlsteward-governance"
AUTH_CONFIG_FILE = "mlflow-auth.ini"
AUTH_DB_VAR = "MLSTEWARD_MLFLOW_AUTH_URL"
"""Names the auth database outright (wins over the profile), like the other location variables."""
DEFAULT_PERMISSION = "READ"
CURRENT_USER_PATH = "/api/2.0/mlflow/users/current"


def auth_database_uri() -> str:
    """Where the auth app keeps users and grants: the variable, the profile's PostgreSQL
    database, or a SQLite file next to the local MLflow store."""
    return (
        os.environ.get(AUTH_DB_VAR)
        or profiles.active().mlflow_auth_database_uri
        or f"sqlite:///{settings.mlflow_dir() / 'basic_auth.db'}"
    )


AUTH_CACHE_SECONDS = 60
"""How long the server trusts a login it has checked. MLflow checks the password's scrypt hash
on every request unless told otherwise, about 0.1 s of CPU each: a 3-trial training run on the
production profile measured 52 s against 13 s without the server in the way. Our server runs
one worker, and MLflow drops the cached login on the worker that changes or deletes a user, so
a password reset or a removed account takes effect at once; only a change made behind MLflow's
back (SQL on its database) waits up to this long."""


def auth_config_text(database_uri: str) -> str:
    """The ini MLflow reads (``MLFLOW_AUTH_CONFIG_PATH``). ``%`` is doubled: configparser
    would read a URL-encoded password's ``%40`` as interpolation."""
    return "\n".join(
        (
            "[mlflow]",
            f"default_permission = {DEFAULT_PERMISSION}",
            f"database_uri = {database_uri.replace('%', '%%')}",
            f"admin_username = {GOVERNANCE_USER}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "grant_default_workspace_access = false",
            f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}",
            "",
        )
    )


def write_auth_config(secrets: Path) -> Path:
    """(Re)write the ini in the secrets folder, mode 0600 whatever the umask: the profile (and
    with it the database URI) may have changed since the last ``up``."""
    path = secrets / AUTH_CONFIG_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, auth_config_text(auth_database_uri()).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PlatformError(f"{path}: cannot write MLflow's auth settings ({exc})") from exc
    return path


def server_env(config_path: Path, password: str, flask_secret: str) -> dict[str, str]:
    """What the MLflow server's environment adds: its auth settings, the admin's password (used
    once, when the auth database is new) and the key its login forms are signed with."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config_path),
        "MLFLOW_AUTH_ADMIN_USERNAME": GOVERNANCE_USER,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_secret,
    }


def client_env(password: str) -> dict[str, str]:
    """What a platform process's environment adds to act as the governance account."""
    return {"MLFLOW_TRACKING_USERNAME": GOVERNANCE_USER, "MLFLOW_TRACKING_PASSWORD": password}


def basic_auth_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def check_governance_login(server_url: str, password: str, password_file: Path) -> None:
    """The running server knows the governance account with this password, as an admin.

    MLflow sets the admin's password only when its auth database is new, so a password file
    deleted (or an auth database kept) since then leaves a server the platform cannot use:
    say so at ``up``, not as a 401 in the middle of a training run.

    Raises:
        PlatformError: the server refused the login, or the account is not an admin.
    """
    req = urllib.request.Request(server_url.rstrip("/") + CURRENT_USER_PATH)
    req.add_header("Authorization", basic_auth_header(GOVERNANCE_USER, password))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            user = json.loads(resp.read()).get("user", {})
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no users API: a server an older ``up`` started without a login
            raise PlatformError(
                f"MLflow at {server_url} runs without basic auth: make down && make up"
            ) from exc
        raise PlatformError(
            f"MLflow at {server_url} refused the governance account {GOVERNANCE_USER} "
            f"(HTTP {exc.code}): the password in {password_file} is not the one in its auth "
            f"database {profiles.masked(auth_database_uri())}, which MLflow keeps from its "
            "first start. Put the old password back, or (losing every MLflow login) make down, "
            "delete the auth database and make up"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PlatformError(f"MLflow at {server_url} did not answer a login check ({exc})") from exc
    if not user.get("is_admin"):
        raise PlatformError(
            f"MLflow at {server_url}: {GOVERNANCE_USER} is not an admin in its auth database; "
            "only the governance account may change registered models and aliases"
        )

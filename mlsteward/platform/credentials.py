"""The credentials ``up`` makes on its first start, so the governance API, the webhook gateway and
the MLflow server run with authentication on and nothing has to be exported first: an admin token
(for the API and the CLI), the webhook secret CI signs with, the password of the MLflow
governance account (``mlflow_auth``) and the key MLflow signs its login forms with.

Each lives in its own file under ``MLSTEWARD_HOME/secrets`` (the directory 0700, the files 0600
whatever the umask), is shown once when it is made and afterwards only named by its path: a
terminal's scroll-back is the only other copy. The gateway gets the file's secret through its
environment, never its command line (``ps`` shows arguments to every user). A webhook secret
the caller configured (``MLSTEWARD_WEBHOOK_SECRET`` or ``MLSTEWARD_WEBHOOK_SECRET_BLOCK``) wins
over the file, which is then not made at all.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlsteward.audit import Action, audit_store
from mlsteward.config import settings
from mlsteward.errors import AuthenticationError, MlstewardError
from mlsteward.identity import IdentityStore, Role, identity_store, local_principal
from mlsteward.platform import mlflow_auth
from mlsteward.platform.services import GATEWAY_SECRET_VARS, PlatformConfig, PlatformError
from mlsteward.signing import keys
from mlsteward.signing.keys import KeyFiles

ADMIN = "user:admin"
CI = "service:ci"
WORKER = "service:worker"
"""The platform's worker reads the prediction service (rollouts) as this viewer."""
ADMIN_TOKEN_DAYS = 90
EXPIRY_WARNING = timedelta(days=14)
ADMIN_TOKEN_FILE = "admin.token"
WORKER_TOKEN_FILE = "worker.token"
SERVING_TOKEN_VAR = "MLSTEWARD_SERVING_TOKEN"
WEBHOOK_SECRET_FILE = "webhook.secret"
WEBHOOK_SECRET_VAR = GATEWAY_SECRET_VARS[0]
MLFLOW_PASSWORD_FILE = "mlflow-governance.password"
MLFLOW_FLASK_SECRET_FILE = "mlflow-flask.secret"


def secrets_dir(home: Path) -> Path:
    return home / "secrets"


@dataclass(frozen=True)
class Credential:
    """One credential as ``up`` reports it. ``value`` is what the services need; it is never
    part of ``to_dict`` (the ``--json`` document) nor of the repr."""

    what: str
    path: Path
    created: bool
    value: str | None = field(default=None, repr=False)
    note: str | None = None
    source: str = "file"  # or the environment variable that wins over the file

    def to_dict(self) -> dict[str, Any]:
        out = {"path": str(self.path), "created": self.created, "source": self.source}
        return {**out, "note": self.note} if self.note else out


@dataclass(frozen=True)
class Credentials:
    admin_token: Credential
    webhook_secret: Credential
    principals_added: tuple[str, ...] = ()
    worker_token: Credential | None = None
    mlflow_password: Credential | None = None
    mlflow_flask_secret: Credential | None = None
    signing_key: KeyFiles | None = None

    def gateway_env(self) -> dict[str, str]:
        """What the gateway's environment adds: the file's secret, unless one is configured."""
        if self.webhook_secret.source != "file" or self.webhook_secret.value is None:
            return {}
        return {WEBHOOK_SECRET_VAR: self.webhook_secret.value}

    def worker_env(self) -> dict[str, str]:
        """What the worker's environment adds: a viewer's token, so the flow runs it finishes
        (rollouts) may read the prediction service, which asks every caller for one."""
        if self.worker_token is None or self.worker_token.value is None:
            return {}
        return {SERVING_TOKEN_VAR: self.worker_token.value}

    def mlflow_client_env(self) -> dict[str, str]:
        """What the environment of a process that writes to MLflow adds: the governance
        account's login (the worker, the prediction service, the governance API)."""
        if self.mlflow_password is None or self.mlflow_password.value is None:
            return {}
        return mlflow_auth.client_env(self.mlflow_password.value)

    def mlflow_server_env(self, home: Path) -> dict[str, str]:
        """What the MLflow server's environment adds: basic auth, with the governance account
        as its admin. Writes the auth settings file it names."""
        if self.mlflow_password is None or self.mlflow_password.value is None:
            raise PlatformError("the MLflow governance account has no password: see make up")
        if self.mlflow_flask_secret is None or self.mlflow_flask_secret.value is None:
            raise PlatformError("the MLflow server has no form-signing key: see make up")
        config = mlflow_auth.write_auth_config(secrets_dir(home))
        return mlflow_auth.server_env(
            config, self.mlflow_password.value, self.mlflow_flask_secret.value
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "admin_token": self.admin_token.to_dict(),
            "webhook_secret": self.webhook_secret.to_dict(),
            "principals_added": list(self.principals_added),
        }
        if self.signing_key is not None:
            k = self.signing_key
            out["signing_key"] = {
                "key_id": k.key_id,
                "private_key": str(k.private),
                "public_key": str(k.public),
                "created": k.created,
            }
        if self.mlflow_password is not None:
            out["mlflow_governance_password"] = {
                **self.mlflow_password.to_dict(),
                "username": mlflow_auth.GOVERNANCE_USER,
            }
        return out


def ensure_credentials(home: Path) -> Credentials:
    """Make what is missing (principals, admin token, webhook secret) and read what is there.

    Raises:
        PlatformError: a secret file cannot be read or written, or the identity store refused
            (the message names the file or the store's reason).
    """
    try:
        with identity_store() as store:
            added = _ensure_principals(store)
            admin = _admin_token(store, secrets_dir(home) / ADMIN_TOKEN_FILE)
            worker = _admin_token(
                store, secrets_dir(home) / WORKER_TOKEN_FILE, WORKER, "worker's serving token"
            )
    except PlatformError:
        raise
    except MlstewardError as exc:
        raise PlatformError(f"the platform's principals and admin token: {exc}") from exc
    webhook = _webhook_secret(secrets_dir(home) / WEBHOOK_SECRET_FILE)
    mlflow_password = _generated_secret(
        secrets_dir(home) / MLFLOW_PASSWORD_FILE,
        f"MLflow password of {mlflow_auth.GOVERNANCE_USER}",
    )
    flask = _generated_secret(secrets_dir(home) / MLFLOW_FLASK_SECRET_FILE, "MLflow form key")
    return Credentials(admin, webhook, added, worker, mlflow_password, flask, _governance_key(home))


def _governance_key(home: Path) -> KeyFiles | None:
    """The governance signing key the platform's processes sign with: made under the home on
    the first ``up`` (any profile: the platform is one machine, its home is its secret store),
    unless one is given through the environment (a mounted secret, a Prefect Secret block).
    None when given."""
    if os.environ.get(keys.PRIVATE_PEM_ENV) or os.environ.get(keys.PRIVATE_BLOCK_ENV):
        return None
    try:
        made = keys.init_keys()
    except (OSError, MlstewardError) as exc:
        raise PlatformError(f"the governance signing key under {home}: {exc}") from exc
    if made.created:
        with audit_store() as store:
            store.append(
                Action.SIGNING_KEY_CREATED,
                actor="platform",
                reason=f"governance signing key {made.key_id} made by the platform's first up",
                details={"key_id": made.key_id, "public_key": str(made.public)},
            )
    return made


def platform_mlflow_login_env(cfg: PlatformConfig | None = None) -> dict[str, str]:
    """The governance account's login for a command of this home's own, when the MLflow it
    talks to is this home's platform server (the production profile's default): the password
    never goes to any other server. Nothing when the flows open the store directly."""
    cfg = cfg or PlatformConfig.from_env()
    if settings.mlflow_tracking_uri().rstrip("/") != cfg.url(cfg.mlflow_port):
        return {}
    return governance_mlflow_env(cfg.home)


def governance_mlflow_env(home: Path) -> dict[str, str]:
    """The governance account's login for a process of this home's own (the local CLI when
    it uses the platform), or nothing when ``up`` has not made the password yet."""
    path = secrets_dir(home) / MLFLOW_PASSWORD_FILE
    if not _exists(path):
        return {}
    return mlflow_auth.client_env(_read_private(path)[0])


def _ensure_principals(store: IdentityStore) -> tuple[str, ...]:
    """The admin user and the CI service account (the gateway acts as ``service:ci``), each
    added once, by the local operator (so the audit trail says who ran the first ``up``)."""
    existing = {p["identity"] for p in store.list_principals()}  # disabled ones included
    added = []
    for identity, role in ((ADMIN, Role.ADMIN), (CI, Role.CI), (WORKER, Role.VIEWER)):
        if identity not in existing:
            kind, name = identity.split(":", 1)
            store.add_principal(name, kind=kind, roles=[role.value], by=local_principal())
            added.append(identity)
    return tuple(added)


def _admin_token(
    store: IdentityStore, path: Path, identity: str = ADMIN, what: str = "admin token"
) -> Credential:
    if _exists(path):
        token, note = _read_private(path)
        try:
            _, expires_at = store.lookup(token)
        except AuthenticationError as exc:
            # A token that stopped working (expired, revoked, or from a store since reset).
            return Credential(what, path, False, token, f"{exc}: {_renew_hint(path)}")
        if _expires_soon(expires_at):
            note = f"expires {expires_at}: {_renew_hint(path)}"
        return Credential(what, path, False, token, note)
    try:
        info, token = store.create_token(
            identity,
            by=local_principal(),
            expires_in_days=ADMIN_TOKEN_DAYS,
            description=f"made by the platform's first start ({path})",
        )
    except MlstewardError as exc:  # e.g. user:admin was disabled on purpose: leave it so
        return Credential(what, path, False, None, f"not created: {exc}")
    _write_private(path, token)
    return Credential(what, path, True, token, f"token {info.token_id}, expires {info.expires_at}")


def _renew_hint(path: Path) -> str:
    return f"delete {path} and run make up again for a new one"


def _expires_soon(expires_at: str) -> bool:
    return datetime.fromisoformat(expires_at) - datetime.now(UTC) < EXPIRY_WARNING


def _generated_secret(path: Path, what: str) -> Credential:
    """A random secret in ``path``: read when there, made (and marked created) when not."""
    if _exists(path):
        value, note = _read_private(path)
        return Credential(what, path, False, value, note)
    value = secrets.token_urlsafe(32)
    _write_private(path, value)
    return Credential(what, path, True, value)


def _webhook_secret(path: Path) -> Credential:
    what = "webhook secret"
    configured = next((var for var in GATEWAY_SECRET_VARS if os.environ.get(var)), None)
    if configured is not None:
        return Credential(what, path, False, None, f"{configured} is set and wins", configured)
    return _generated_secret(path, what)


# ---------------------------------------------------------------------------------------------
# files only the owner can read


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask; an old one may be wider


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file with mode 0600 whatever the umask; an existing file (or a
    symlink planted in its place) is never overwritten or followed."""
    try:
        _private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{text}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # complete or absent, and fails rather than overwrite
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise PlatformError(f"{path}: cannot write the secret ({exc})") from exc


def _read_private(path: Path) -> tuple[str, str | None]:
    """The secret in ``path``, and a note when its permissions had to be narrowed to 0600."""
    note = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                os.fchmod(fd, 0o600)
                note = f"its mode was {mode:04o}: set to 0600"
            with os.fdopen(os.dup(fd)) as fh:
                value = fh.read().strip()
        finally:
            os.close(fd)
        _private_dir(path.parent)
    except OSError as exc:
        raise PlatformError(f"{path}: cannot read the secret ({exc})") from exc
    if not value:
        raise PlatformError(f"{path} is empty: delete it and run make up again for a new one")
    return value, note

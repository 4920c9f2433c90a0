"""A person's MLflow login and what it may do, from the identity store and the model configs.

The rule (``mapped_permissions``), per model config:

- members of the model's ``owner`` team get EDIT on its experiment (the experiment has the
  model's name): they may read its runs and annotate them (tags, notes, their own runs);
- everybody gets READ on its registered model: versions, tags and aliases are shown, and
  MLflow itself refuses to move an alias (HTTP 403);
- nobody but the governance account (MLflow's admin) may edit a registered model or an alias.

Grants are written explicitly for every configured model, so a later sync also takes back what
a person no longer should have (someone who left the team falls back to READ). The governance
account creates each configured model's experiment and registered model first: MLflow makes
the creator of a resource its manager, so no login can claim a configured name before the
platform does.

Only the standard library, our settings and the identity store: MLflow's REST API is called
with the governance account's login directly.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlsteward.audit import Action, audit_store
from mlsteward.config import settings
from mlsteward.config.models import ModelConfig, load_all_model_configs
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.identity import Principal, identity_store
from mlsteward.identity.store import parse_identity
from mlsteward.platform.credentials import governance_mlflow_env
from mlsteward.platform.lifecycle import status
from mlsteward.platform.mlflow_auth import GOVERNANCE_USER, basic_auth_header
from mlsteward.platform.services import PlatformConfig, PlatformError

READ, EDIT = "READ", "EDIT"
EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"
GRANT_PATH = "/api/3.0/mlflow/users/permissions/grant"
REVOKE_PATH = "/api/3.0/mlflow/users/permissions/revoke"


class MlflowAccessError(MlstewardError):
    """MLflow refused or could not be reached while writing a login or its grants."""


@dataclass(frozen=True)
class MlflowLogin:
    """An MLflow server and a login on it."""

    url: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ModelGrant:
    model: str
    owner: str
    experiment_id: str
    experiment: str
    registered_model: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AccessResult:
    """What a sync did. ``password`` is set only when one was made now: shown once."""

    principal: str
    username: str
    created: bool
    grants: tuple[ModelGrant, ...]
    password: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "principal": self.principal,
            "mlflow_username": self.username,
            "created": self.created,
            "grants": [g.to_dict() for g in self.grants],
        }
        return {**out, "password": self.password} if self.password else out


def mapped_permissions(principal: Principal, cfg: ModelConfig) -> tuple[str, str]:
    """(experiment, registered model) permissions of ``principal`` on ``cfg``'s model."""
    return (EDIT if cfg.owner in principal.teams else READ), READ


def mlflow_username(principal: Principal) -> str:
    """A person's MLflow user name is their principal's name.

    Raises:
        MlstewardError: a service account (they act through the platform's account), or the
            governance account's own name.
    """
    if principal.kind != "user":
        raise MlstewardError(
            f"{principal.identity}: MLflow logins are for people; the platform's services act "
            f"as {GOVERNANCE_USER}"
        )
    if principal.name == GOVERNANCE_USER:
        raise MlstewardError(f"{principal.identity}: {GOVERNANCE_USER} is the platform's account")
    return principal.name


def sync_mlflow_access(
    principal: Principal,
    admin: MlflowLogin,
    models: Iterable[ModelConfig],
    *,
    reset_password: bool = False,
) -> AccessResult:
    """Create ``principal``'s MLflow user if missing (or give it a new password when asked) and
    write its grant on every configured model's experiment and registered model.

    Raises:
        MlflowAccessError: MLflow refused a call (the message names the call and the reason).
    """
    username = mlflow_username(principal)
    api = _Api(admin)
    created = api.get("/api/2.0/mlflow/users/get", {"username": username}) is None
    password = None
    if created or reset_password:
        password = secrets.token_urlsafe(18)
        if created:
            api.post("/api/2.0/mlflow/users/create", {"username": username, "password": password})
        else:
            api.send(
                "PATCH",
                "/api/2.0/mlflow/users/update-password",
                {"username": username, "password": password},
            )
    grants = []
    for cfg in sorted(models, key=lambda c: c.name):
        experiment_id = _ensure_experiment(api, cfg.name)
        _ensure_registered_model(api, cfg.name)
        on_experiment, on_model = mapped_permissions(principal, cfg)
        api.grant(username, EXPERIMENT, experiment_id, on_experiment)
        api.grant(username, REGISTERED_MODEL, cfg.name, on_model)
        grants.append(ModelGrant(cfg.name, cfg.owner, experiment_id, on_experiment, on_model))
    return AccessResult(principal.identity, username, created, tuple(grants), password)


def grant_mlflow_access(
    identity: str, *, reset_password: bool = False, actor: str | None = None
) -> AccessResult:
    """``mlsteward mlflow-access grant``: the principal from the identity store, the models from
    config/models, the governance login from this home's secrets (or the environment).

    Raises:
        NotFoundError: no such principal, or it is disabled.
        PlatformError: no MLflow server to talk to, or no governance login for it.
    """
    kind, name = parse_identity(identity)
    with identity_store() as store:
        principal = store.get_principal(f"{kind}:{name}")
    if principal is None:
        raise NotFoundError(
            f"{kind}:{name} is not a principal (or is disabled): mlsteward users add {name} ..."
        )
    models = load_all_model_configs().values()
    result = sync_mlflow_access(
        principal, governance_login(), models, reset_password=reset_password
    )
    with audit_store() as audit:  # who gave whom which MLflow rights (never the password)
        audit.append(
            Action.MLFLOW_ACCESS_GRANTED,
            actor=actor,
            reason=f"MLflow login {result.username} for {result.principal} "
            f"({'created' if result.created else 'updated'}"
            f"{', new password' if result.password else ''})",
            details={
                "principal": result.principal,
                "mlflow_username": result.username,
                "created": result.created,
                "password_reset": bool(result.password) and not result.created,
                "grants": [g.to_dict() for g in result.grants],
            },
        )
    return result


def governance_login(cfg: PlatformConfig | None = None) -> MlflowLogin:
    """The MLflow server (the profile's, or the one ``make up`` runs) and the governance
    account's login for it (this home's secret file, else ``MLFLOW_TRACKING_*``)."""
    cfg = cfg or PlatformConfig.from_env()
    env = governance_mlflow_env(cfg.home) or {
        k: v
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        if (v := os.environ.get(k))
    }
    if env.get("MLFLOW_TRACKING_USERNAME") != GOVERNANCE_USER or not env.get(
        "MLFLOW_TRACKING_PASSWORD"
    ):
        raise PlatformError(
            f"no login for {GOVERNANCE_USER}: run make up once for this home (it makes the "
            "password), or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to it"
        )
    return MlflowLogin(_server_url(cfg), GOVERNANCE_USER, env["MLFLOW_TRACKING_PASSWORD"])


def _server_url(cfg: PlatformConfig) -> str:
    uri = settings.mlflow_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri
    mlflow = next(s for s in status(cfg) if s.name == "mlflow")
    if not mlflow.running or mlflow.url is None:
        raise PlatformError(
            "the MLflow server is not running (logins live in it): make up, then try again"
        )
    return mlflow.url


def _ensure_experiment(api: _Api, name: str) -> str:
    """The id of the model's experiment, made by the governance account where missing, at the
    location the flows would give it (``governance.mlflow_adapter.ensure_experiment``)."""
    found = api.get("/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name})
    if found is not None:
        return str(found["experiment"]["experiment_id"])
    root = settings.mlflow_artifact_root().rstrip("/")
    made = api.post(
        "/api/2.0/mlflow/experiments/create",
        {"name": name, "artifact_location": f"{root}/{name}"},
        exists_ok=True,
    )
    if made is None:  # made meanwhile by a training run
        return _ensure_experiment(api, name)
    return str(made["experiment_id"])


def _ensure_registered_model(api: _Api, name: str) -> None:
    api.post("/api/2.0/mlflow/registered-models/create", {"name": name}, exists_ok=True)


class _Api:
    """MLflow's REST API as one login; a 404 on a read is ``None``, anything else refused is an
    ``MlflowAccessError`` with MLflow's own message."""

    def __init__(self, login: MlflowLogin) -> None:
        self._login = login

    def get(self, path: str, params: dict[str, str]) -> Any:
        return self.send("GET", f"{path}?{urllib.parse.urlencode(params)}", None, missing_ok=True)

    def post(self, path: str, body: dict[str, Any], *, exists_ok: bool = False) -> Any:
        return self.send("POST", path, body, exists_ok=exists_ok)

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        """Set one grant. MLflow's grant only inserts: an existing one (an earlier sync's, or
        the MANAGE MLflow gives a resource's creator) is revoked first, so for a moment the
        user has the default READ, never more."""
        target = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        body = {**target, "permission": permission}
        if self.post(GRANT_PATH, body, exists_ok=True) is None:
            self.post(REVOKE_PATH, target)
            self.post(GRANT_PATH, body)

    def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        missing_ok: bool = False,
        exists_ok: bool = False,
    ) -> Any:
        url = self._login.url.rstrip("/") + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header(
            "Authorization", basic_auth_header(self._login.username, self._login.password)
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            error = _error_body(exc)
            code = error.get("error_code", "")
            if missing_ok and (exc.code == 404 or code == "RESOURCE_DOES_NOT_EXIST"):
                return None
            if exists_ok and code == "RESOURCE_ALREADY_EXISTS":
                return None
            reason = error.get("message") or exc.reason
            raise MlflowAccessError(
                f"MLflow at {self._login.url} refused {method} {path.split('?')[0]} as "
                f"{self._login.username} (HTTP {exc.code} {code}): {reason}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise MlflowAccessError(f"MLflow at {self._login.url} did not answer: {exc}") from exc
        return json.loads(raw) if raw.strip() else {}


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return {}
    return body if isinstance(body, dict) else {}

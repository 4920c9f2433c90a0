"""What a CLI process sets up before a command imports Prefect, MLflow or Feast.

- Offline defaults: no telemetry from MLflow, Prefect or Feast (offline it fails noisily: a
  Prefect server logs an ERROR line and a traceback per attempt). Set only where the user has
  not, so an explicit setting wins.
- Refusals: a contract, config or governance refusal raised inside a flow is logged by Prefect
  as one line, not a traceback (:func:`mlsteward.errors.quiet_refusals`).
- The local platform: a command that talks to Prefect uses the server ``make up`` runs for this
  ``MLSTEWARD_HOME``, found from its pid file, instead of starting a temporary one (10-15 s),
  and writes to its MLflow server as the platform's governance account, as the worker does
  (also when ``PREFECT_API_URL`` is set).
"""

from __future__ import annotations

import contextlib
import os
import tomllib
import warnings
from pathlib import Path

from mlsteward.errors import MlstewardError, quiet_refusals

OFFLINE_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "FEAST_USAGE": "False",
    # A cold temporary Prefect API (no PREFECT_API_URL) can take longer than Prefect's default
    # start-up wait on a small machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prepare_process() -> None:
    """Process-wide settings for a CLI run, applied before any command (never at import)."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if os.environ.get("PREFECT_HOME"):  # Prefect does not create missing parents of its home
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    # Deprecation chatter from libraries (ibis, SQLAlchemy, Prefect) is not for CLI users.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    quiet_refusals()


def use_local_platform() -> str | None:
    """Point this process at the local platform's Prefect API when one runs for this home.

    Call before importing Prefect (it reads its settings once). Nothing changes when the user
    chose a server (``PREFECT_API_URL`` in the environment or in the active Prefect profile) or
    when no healthy platform server is found: a flow then runs on a temporary server, as
    without the platform. Returns the API URL now in use, if it came from the platform.
    """
    _use_platform_mlflow_login()
    if os.environ.get("PREFECT_API_URL") or _profile_sets_api_url():
        return None
    # The platform module imports only the standard library and our settings.
    from mlsteward.platform.lifecycle import running_prefect_api

    api = running_prefect_api()
    if api is None:
        return None
    os.environ["PREFECT_API_URL"] = api
    if auth := os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        os.environ.setdefault("PREFECT_API_AUTH_STRING", auth)  # as the platform's own clients
    return api


def _use_platform_mlflow_login() -> None:
    """Write to the platform's MLflow server as its own processes do (the governance account),
    unless a login is set; only for this home's server, whatever names the Prefect API."""
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return
    from mlsteward.platform.credentials import platform_mlflow_login_env

    with contextlib.suppress(MlstewardError):  # unreadable: MLflow answers 401, naming itself
        os.environ.update(platform_mlflow_login_env())


def _profile_sets_api_url() -> bool:
    """Whether the active Prefect profile (``prefect config set ...``) names an API already."""
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    settings = profiles.get("profiles", {}).get(active, {})
    return isinstance(settings, dict) and bool(settings.get("PREFECT_API_URL"))

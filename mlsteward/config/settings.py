"""Where state lives. Everything is under one home directory so a run is easy to inspect or wipe.

Environment variables override locations (``MLSTEWARD_HOME``, ``MLSTEWARD_CONFIG_DIR``,
``MLFLOW_TRACKING_URI``, ...), then the active profile (``mlsteward.config.profiles``), then the
local
defaults, so the same code runs embedded (SQLite, no server) or on shared engines. Paths are
computed on each call, never at import, so tests can repoint them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from mlsteward.config.lineage import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_ENDPOINT,
    DEFAULT_NAMESPACE,
    DEFAULT_TIMEOUT_SECONDS,
    TRANSPORTS,
    LineageSettings,
    LineageTransport,
    check_namespace,
    check_url,
)
from mlsteward.config.names import check_model_name
from mlsteward.config.paths import project_root
from mlsteward.config.profiles import Profile, active, masked
from mlsteward.errors import ConfigError


def home() -> Path:
    env = os.environ.get("MLSTEWARD_HOME")
    path = Path(env).expanduser() if env else project_root() / ".mlsteward"
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(*parts: str) -> Path:
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlflow_dir() -> Path:
    return _sub("mlflow")


def _profile() -> Profile:
    return active()


def mlflow_backend_store_uri() -> str:
    """The database behind MLflow: ``MLFLOW_BACKEND_STORE_URI``, the profile's PostgreSQL
    database, a database ``MLFLOW_TRACKING_URI`` names, or a SQLite file under the home."""
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    return (
        os.environ.get("MLFLOW_BACKEND_STORE_URI")
        or _profile().mlflow_backend_store_uri
        or (tracking if tracking and not tracking.startswith(("http://", "https://")) else "")
        or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"
    )


def mlflow_proxies_artifacts() -> bool:
    """True when clients reach MLflow through its server (the production profile): the server
    then keeps artifacts in ``mlflow_artifacts_destination()`` and proxies them."""
    return mlflow_tracking_uri().startswith(("http://", "https://"))


def mlflow_tracking_uri() -> str:
    """Where clients talk to MLflow: ``MLFLOW_TRACKING_URI``, the profile's MLflow server, or
    the backend store itself (the local profile needs no server)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or _profile().mlflow.tracking_uri
        or mlflow_backend_store_uri()
    )


def mlflow_artifact_root() -> str:
    """Where new experiments keep artifacts. Through an MLflow server: its proxied store
    (``mlflow-artifacts:``), so clients need no object-store credentials; otherwise files."""
    env = os.environ.get("MLSTEWARD_ARTIFACT_ROOT")
    if env:
        return env
    if mlflow_proxies_artifacts():
        return "mlflow-artifacts:"
    return (mlflow_dir() / "artifacts").as_uri()


def mlflow_artifacts_destination() -> str:
    """Where an MLflow server started by ``make up`` stores the artifacts it proxies."""
    return _profile().mlflow.artifacts_destination or str(_sub("artifact-store"))


def prefect_database_url() -> str | None:
    """The Prefect server's database: ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` or the
    profile's; None: Prefect's own SQLite default under ``PREFECT_HOME``."""
    return (
        os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or _profile().prefect_database_url
    )


def feast_dir() -> Path:
    return _sub("feast")


def snapshot_root() -> Path:
    """Root of the content-addressed snapshot store: ``MLSTEWARD_SNAPSHOT_ROOT`` (any mounted
    filesystem path, e.g. shared storage), by default ``MLSTEWARD_HOME/snapshots``."""
    env = os.environ.get("MLSTEWARD_SNAPSHOT_ROOT")
    path = Path(env).expanduser().resolve() if env else home() / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _model_sub(kind: str, model: str) -> Path:
    """A model's own directory of ``kind``: the name is checked, so it never leaves the home."""
    return _sub(kind, check_model_name(model))


def snapshots_dir(model: str) -> Path:
    path = snapshot_root() / check_model_name(model)
    path.mkdir(parents=True, exist_ok=True)
    return path


def reproductions_dir(model: str) -> Path:
    """Reports and rebuilt artifacts of ``mlsteward reproduce`` runs."""
    return _model_sub("reproductions", model)


def predictions_dir(model: str) -> Path:
    """The append-only prediction log of one model (one parquet file per scored batch)."""
    return _model_sub("predictions", model)


def training_sets_dir(model: str) -> Path:
    """Partitioned training sets staged for Dask workers (removed when the run ends)."""
    return _model_sub("training_sets", model)


def quarantine_dir(model: str) -> Path:
    return _model_sub("quarantine", model)


def state_dir() -> Path:
    return _sub("state")


def feature_repo_dir() -> Path:
    env = os.environ.get("MLSTEWARD_FEATURE_REPO")
    return Path(env).resolve() if env else project_root() / "feature_repo"


def audit_url() -> str:
    """Where the audit trail lives: ``MLSTEWARD_AUDIT_URL`` (``sqlite:///…`` or
    ``postgresql://…``), the profile's PostgreSQL database, or a SQLite file under the home
    directory."""
    return (
        os.environ.get("MLSTEWARD_AUDIT_URL")
        or _profile().audit_url
        or f"sqlite:///{_sub('audit') / 'audit.db'}"
    )


def _beside_audit(variable: str, name: str) -> str:
    """``variable`` if set, else the audit trail's PostgreSQL database (one backup holds the
    record and what goes with it), else ``<home>/<name>/<name>.db``."""
    env = os.environ.get(variable)
    if env:
        return env
    audit = audit_url()
    if not audit.startswith("sqlite:"):
        return audit
    return f"sqlite:///{_sub(name) / f'{name}.db'}"


def identity_url() -> str:
    """Where principals and token hashes live: ``MLSTEWARD_IDENTITY_URL``, else beside the audit
    trail (the same PostgreSQL database in production, so one backup holds who did what and who
    they are), else a SQLite file under the home directory."""
    return _beside_audit("MLSTEWARD_IDENTITY_URL", "identity")


def alerts_url() -> str:
    """Where open incidents and the monitor's remembered values live: ``MLSTEWARD_ALERTS_URL``,
    else beside the audit trail in PostgreSQL, else a SQLite file under the home directory."""
    return _beside_audit("MLSTEWARD_ALERTS_URL", "alerts")


def audit_anchor_url() -> str:
    """Where signed checkpoints of the audit trail's head are kept, outside the audit store:
    ``MLSTEWARD_AUDIT_ANCHOR`` (``file:///abs/path/checkpoints.jsonl`` or
    ``postgresql://…/other_db``), the profile's anchor database (``<prefix>_anchor``), or a file
    outside the home, ``$XDG_STATE_HOME/mlsteward/anchors/<hash of the audit store>.jsonl``
    (``~/.local/state`` when unset), so wiping or copying the home leaves the checkpoints."""
    env = os.environ.get("MLSTEWARD_AUDIT_ANCHOR", "").strip()
    if env:
        return env
    profiled = _profile().audit_anchor_url
    if profiled:
        return profiled
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    root = Path(state) if state and Path(state).is_absolute() else Path("~/.local/state")
    parts = urlsplit(audit_url())  # the store's place, without user or password
    place = f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}{parts.path}"
    digest = hashlib.sha256(place.encode("utf-8")).hexdigest()[:16]
    return (root.expanduser() / "mlsteward" / "anchors" / f"{digest}.jsonl").as_uri()


DEFAULT_CHECKPOINT_HOURS = 1.0


def audit_checkpoint_hours() -> float:
    """How old the newest audit checkpoint may be before ``audit verify`` warns:
    ``MLSTEWARD_AUDIT_CHECKPOINT_HOURS`` (default 1)."""
    text = os.environ.get("MLSTEWARD_AUDIT_CHECKPOINT_HOURS", "").strip()
    if not text:
        return DEFAULT_CHECKPOINT_HOURS
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not hours > 0 or hours == float("inf"):
        raise ConfigError(
            f"MLSTEWARD_AUDIT_CHECKPOINT_HOURS={text!r}: expected a positive number of hours"
        )
    return hours


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def artifact_pictures() -> bool:
    """Whether training and drift runs draw pictures into their Prefect artifacts:
    ``MLSTEWARD_ARTIFACT_PICTURES`` (default true). Drawing costs about a second a training run,
    and Prefect's database keeps every artifact (some 100 KB of pictures a run); the model card
    and the console draw the same pictures from the stored report either way."""
    text = os.environ.get("MLSTEWARD_ARTIFACT_PICTURES", "").strip().lower()
    if not text or text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"MLSTEWARD_ARTIFACT_PICTURES={text[:40]!r}: expected true or false")


def scored_dir(model: str) -> Path:
    """Scored batches (one parquet per scoring run), for people and downstream systems."""
    return _sub("scored", model)


def drift_reports_dir(model: str) -> Path:
    """Evidently HTML reports of drift runs."""
    return _sub("reports", "drift", model)


DEFAULT_SERVING_PORT = 8800


def serving_url() -> str:
    """Where the prediction service answers: ``MLSTEWARD_SERVING_URL``, or loopback on
    ``MLSTEWARD_SERVING_PORT`` (default 8800), as ``make up`` starts it."""
    url = os.environ.get("MLSTEWARD_SERVING_URL", "").strip()
    if url:
        return url.rstrip("/")
    port = os.environ.get("MLSTEWARD_SERVING_PORT", "").strip() or str(DEFAULT_SERVING_PORT)
    return f"http://127.0.0.1:{port}"


def serving_headers() -> dict[str, str]:
    """What a client of the prediction service (``mlsteward predict``, a rollout watching it)
    sends to be let in: ``MLSTEWARD_SERVING_TOKEN``, else the caller's own ``MLSTEWARD_TOKEN``,
    as a bearer token; nothing without either (a service with authentication off)."""
    for variable in ("MLSTEWARD_SERVING_TOKEN", "MLSTEWARD_TOKEN"):
        token = os.environ.get(variable, "").strip()
        if token:
            return {"Authorization": f"Bearer {token}"}
    return {}


_OPENLINEAGE_OWN = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE__TRANSPORT__TYPE")


def _lineage_transport(url: str | None) -> LineageTransport:
    """``MLSTEWARD_LINEAGE_TRANSPORT``; else http when a URL is set; else OpenLineage's own
    configuration when one of its variables is set (``OPENLINEAGE_DISABLED=true``: none); else
    the profile's; else file."""
    env = os.environ.get("MLSTEWARD_LINEAGE_TRANSPORT", "").strip().lower()
    if env:
        if env not in TRANSPORTS:
            raise ConfigError(
                f"MLSTEWARD_LINEAGE_TRANSPORT={env[:40]!r}: expected one of {', '.join(TRANSPORTS)}"
            )
        return env  # type: ignore[return-value]  # checked against TRANSPORTS just above
    if os.environ.get("MLSTEWARD_LINEAGE_URL", "").strip():
        return "http"
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return "none"
    if any(os.environ.get(v, "").strip() for v in _OPENLINEAGE_OWN):
        return "openlineage"
    profiled = _profile().lineage.transport
    if profiled:
        return profiled
    return "http" if url else "file"


def lineage_settings() -> LineageSettings:
    """Where OpenLineage run events go: each ``MLSTEWARD_LINEAGE_*`` variable wins over the
    profile's ``lineage`` key of the same name, then the defaults (JSON lines in
    ``MLSTEWARD_HOME/lineage/events.jsonl``, namespace ``mlsteward``). OpenLineage's own
    variables are honoured: ``OPENLINEAGE_URL`` or ``OPENLINEAGE_CONFIG`` hand the transport to
    the OpenLineage client's configuration, ``OPENLINEAGE_NAMESPACE`` names the namespace and
    ``OPENLINEAGE_DISABLED=true`` turns events off.

    Raises:
        ConfigError: a transport, URL, namespace or timeout that cannot be right, naming the
            variable or profile key; ``http`` without a URL.
    """
    section = _profile().lineage

    def env(name: str) -> str | None:
        return os.environ.get(f"MLSTEWARD_LINEAGE_{name}", "").strip() or None

    url = env("URL") or section.url
    transport = _lineage_transport(url)
    try:
        if env("URL"):
            check_url(env("URL") or "", "MLSTEWARD_LINEAGE_URL")
        namespace = check_namespace(
            env("NAMESPACE")
            or os.environ.get("OPENLINEAGE_NAMESPACE", "").strip()
            or section.namespace
            or DEFAULT_NAMESPACE,
            "MLSTEWARD_LINEAGE_NAMESPACE" if env("NAMESPACE") else "lineage namespace",
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if transport == "http" and not url:
        raise ConfigError(
            "lineage transport http needs the server's URL: MLSTEWARD_LINEAGE_URL or the "
            "profile's lineage.url"
        )
    timeout = section.timeout_seconds or DEFAULT_TIMEOUT_SECONDS
    if env("TIMEOUT"):
        text = env("TIMEOUT") or ""
        try:
            timeout = float(text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 300:
            raise ConfigError(
                f"MLSTEWARD_LINEAGE_TIMEOUT={text[:40]!r}: expected seconds, above 0 and at most "
                "300"
            )
    path: Path | None = None
    if transport == "file":
        raw = env("FILE") or section.path
        path = Path(raw).expanduser().resolve() if raw else _sub("lineage") / "events.jsonl"
    return LineageSettings(
        transport=transport,
        namespace=namespace,
        path=path,
        url=url if transport == "http" else None,
        endpoint=env("ENDPOINT") or section.endpoint or DEFAULT_ENDPOINT,
        api_key_env=section.api_key_env or DEFAULT_API_KEY_ENV,
        api_key_block=env("API_KEY_BLOCK") or section.api_key_block,
        timeout_seconds=timeout,
    )


def locations() -> dict[str, str]:
    """Where each kind of state lives right now (variables, then profile, then defaults), with
    passwords masked: what ``mlsteward profile show`` prints."""
    p = _profile()
    registry = p.feast_registry or {"path": str(feast_dir() / "registry.db")}
    online = f"redis {p.redis_url}" if p.redis_url else f"sqlite {feast_dir() / 'online.db'}"
    offline = "postgres" if p.feast_offline_store else "duckdb over snapshot files"
    out = {
        "profile": p.name,
        "home": str(home()),
        "mlflow_tracking_uri": mlflow_tracking_uri(),
        "mlflow_backend_store": mlflow_backend_store_uri(),
        "prefect_database": prefect_database_url() or "SQLite under PREFECT_HOME",
        "audit": audit_url(),
        "audit_anchor": audit_anchor_url(),
        "identity": identity_url(),
        "alerts": alerts_url(),
        "feast_project": p.feast.project,
        "feast_registry": str(registry["path"]),
        "feast_online_store": online,
        "feast_offline_store": offline,
        "snapshots": str(snapshot_root()),
        "lineage": lineage_settings().destination(),
    }
    return {k: masked(v) for k, v in out.items()}

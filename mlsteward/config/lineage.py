"""Where OpenLineage run events go: a profile's ``lineage`` section and what it resolves to.

A run of the ingestion, training, scoring or drift flow tells a lineage server (Marquez,
DataHub, any OpenLineage consumer) what it read and wrote. By default the events are JSON lines
under the home, so lineage is kept even with no server; ``http`` sends them to a server and
``none`` turns them off. ``mlsteward.config.settings.lineage_settings`` resolves the section
with the environment first, as every other location is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from mlsteward.config.base import StrictModel

LineageTransport = Literal["file", "http", "none", "openlineage"]
TRANSPORTS: tuple[str, ...] = ("file", "http", "none", "openlineage")
DEFAULT_NAMESPACE = "mlsteward"
DEFAULT_ENDPOINT = "api/v1/lineage"
"""Marquez's; DataHub takes ``openapi/openlineage/api/v1/lineage``."""
DEFAULT_API_KEY_ENV = "MLSTEWARD_LINEAGE_API_KEY"
DEFAULT_TIMEOUT_SECONDS = 5.0
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def check_namespace(value: str, where: str) -> str:
    """A job namespace names the scheduler instance in every consumer's UI: no spaces."""
    if not _NAMESPACE.fullmatch(value):
        raise ValueError(
            f"{where} {value[:80]!r}: 1-200 letters, digits and _ . : / @ + - (no spaces)"
        )
    return value


def check_url(value: str, where: str) -> str:
    """The lineage server's root (the endpoint is joined to it), over HTTP or HTTPS."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: expected http(s)://host[:port], got {shown_url(value)!r}")
    return value


def shown_url(url: str) -> str:
    """A URL without its user, password and query: what logs and ``profile show`` may print."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url[:200]
    if not (parts.username or parts.password or parts.query or parts.fragment):
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


class LineageConfig(StrictModel):
    """Where OpenLineage run events go. A variable wins over its key:
    ``MLSTEWARD_LINEAGE_<KEY>`` for transport, url, endpoint, namespace and api_key_block,
    ``MLSTEWARD_LINEAGE_FILE`` for path, ``MLSTEWARD_LINEAGE_TIMEOUT`` for timeout_seconds."""

    transport: LineageTransport | None = Field(
        default=None,
        description="file: JSON lines under MLSTEWARD_HOME/lineage; http: a Marquez or DataHub "
        "server at url; none: no events; openlineage: OpenLineage's own configuration "
        "(OPENLINEAGE_URL, OPENLINEAGE_CONFIG). Unset: http when url is set, else file.",
    )
    namespace: str | None = Field(
        default=None, description="Job namespace of every event (default: mlsteward)."
    )
    url: str | None = Field(
        default=None, description="The lineage server's root, http(s)://host:port."
    )
    endpoint: str | None = Field(
        default=None,
        description="Path joined to url (default api/v1/lineage, Marquez's; DataHub: "
        "openapi/openlineage/api/v1/lineage).",
    )
    api_key_env: str | None = Field(
        default=None,
        description="The variable holding the server's API key, sent as a bearer token (default "
        "MLSTEWARD_LINEAGE_API_KEY); the key itself never goes in a profile.",
    )
    api_key_block: str | None = Field(
        default=None,
        description="A Prefect Secret block holding the API key, when the variable is unset.",
    )
    path: str | None = Field(
        default=None,
        description="The file transport's JSON-lines file (default "
        "MLSTEWARD_HOME/lineage/events.jsonl).",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=300, description="HTTP timeout per event (default 5)."
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else check_namespace(v, "lineage.namespace")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return check_url(v, "lineage.url") if v else None

    @field_validator("api_key_env")
    @classmethod
    def _variable(cls, v: str | None) -> str | None:
        if v is not None and not _VARIABLE.fullmatch(v):
            raise ValueError(f"lineage.api_key_env {v[:80]!r}: the name of a variable")
        return v


@dataclass(frozen=True)
class LineageSettings:
    """Where this process sends run events, resolved: variables, then profile, then defaults.

    Holds where the API key is read from, never the key.
    """

    transport: LineageTransport
    namespace: str
    path: Path | None
    """The JSON-lines file (file transport only)."""
    url: str | None
    endpoint: str
    api_key_env: str
    api_key_block: str | None
    timeout_seconds: float

    @property
    def enabled(self) -> bool:
        return self.transport != "none"

    def destination(self) -> str:
        """Where events go, fit to print: no password, key or query string."""
        if self.transport == "file":
            return f"file {self.path}"
        if self.transport == "http" and self.url:
            return f"http {shown_url(self.url).rstrip('/')}/{self.endpoint.lstrip('/')}"
        if self.transport == "openlineage":
            return "openlineage (OPENLINEAGE_URL / OPENLINEAGE_CONFIG)"
        return "none"

"""Sending run events to the configured transport, without ever failing the run for it.

Lineage is for readers elsewhere; the run it describes has already done its work. So a server
that is down, a key it refuses or a file that cannot be written costs one warning per process
and destination, and the run goes on. The API key is read when a client is built, sent as a
bearer token and never logged: a message that would quote it is redacted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import RunEvent
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport

from mlsteward.config.lineage import LineageSettings, shown_url
from mlsteward.errors import ConfigError

Logger = logging.Logger | logging.LoggerAdapter[Any]

_NO_RETRY = {"total": 0}
"""One attempt per event: a retry would hold the run up and log urllib3's own warning on each
event, while a server that is down loses the event either way."""
_warned: set[str] = set()
"""What was already warned about in this process (destinations, settings errors)."""


def api_key(settings: LineageSettings) -> str | None:
    """The lineage server's key: the variable ``settings.api_key_env`` names, else the Prefect
    Secret block ``settings.api_key_block``; None: the server takes events without one.

    Raises:
        ConfigError: the block is named but cannot be read.
    """
    key = os.environ.get(settings.api_key_env, "").strip()
    if key or not settings.api_key_block:
        return key or None
    # Imported here: only a deployment that keeps the key in a Prefect Secret block needs it.
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(settings.api_key_block, _sync=True)  # type: ignore[call-arg]
        value = block.get()
    except Exception as exc:  # Prefect raises ValueError, httpx errors, ...: all mean "unreadable"
        raise ConfigError(
            f"cannot read the lineage API key from the Prefect Secret block "
            f"{settings.api_key_block!r}: {type(exc).__name__}"
        ) from None
    return str(value).strip() or None


def build_client(settings: LineageSettings, key: str | None = None) -> OpenLineageClient | None:
    """The OpenLineage client for ``settings``; None for transport ``none``.

    ``openlineage`` leaves the transport to OpenLineage's own configuration (``OPENLINEAGE_URL``
    with ``OPENLINEAGE_API_KEY``, or the YAML file ``OPENLINEAGE_CONFIG`` names).
    """
    if settings.transport == "none":
        return None
    if settings.transport == "openlineage":
        return OpenLineageClient()
    if settings.transport == "file":
        assert settings.path is not None  # resolved for the file transport
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        config = FileConfig(log_file_path=str(settings.path), append=True)
        return OpenLineageClient(transport=FileTransport(config))
    params: dict[str, Any] = {
        "url": settings.url,
        "endpoint": settings.endpoint,
        "timeout": settings.timeout_seconds,
        "retry": dict(_NO_RETRY),
    }
    if key:
        params["auth"] = {"type": "api_key", "apiKey": key}
    return OpenLineageClient(transport=HttpTransport(HttpConfig.from_dict(params)))


def emit_event(event: RunEvent, settings: LineageSettings, logger: Logger | None = None) -> bool:
    """Send ``event`` where ``settings`` say; False (after one warning per destination and
    process) when it could not be sent, never an exception."""
    if not settings.enabled:
        return False
    key: str | None = None
    try:
        key = api_key(settings) if settings.transport == "http" else None
        client = build_client(settings, key)
        if client is None:
            return False
        try:
            client.emit(event)
        finally:
            client.close(0)
    except Exception as exc:  # any failure of any transport: lineage never fails the run
        warn_once(settings, exc, logger, key)
        return False
    return True


def first_time(what: str) -> bool:
    """True the first time ``what`` is warned about in this process."""
    if what in _warned:
        return False
    _warned.add(what)
    return True


def warn_once(
    settings: LineageSettings, exc: BaseException, logger: Logger | None, key: str | None = None
) -> None:
    """One warning per destination and process: a server that is down would otherwise add a
    line to every event of every run."""
    where = settings.destination()
    if not first_time(where):
        return
    reason = f"{type(exc).__name__}: {exc}"
    if key:
        reason = reason.replace(key, "***")
    if settings.url:
        reason = reason.replace(settings.url, shown_url(settings.url))
    (logger or logging.getLogger("mlsteward.lineage")).warning(
        "OpenLineage events cannot be sent to %s (%s); the run goes on without them (said once "
        "per process)",
        where,
        reason[:500],
    )

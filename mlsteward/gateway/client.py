"""Build, sign and send a plain JSON trigger: what ``mlsteward trigger`` and CI run.

The request carries its delivery id both as the ``X-Mlsteward-Delivery`` header and inside the
signed body, with the current time as ``timestamp``, so the gateway can tell a replay (same id
or same body) from a new request and a captured request cannot be re-sent under a new id.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlsteward.errors import MlstewardError
from mlsteward.gateway.signing import SIGNATURE_HEADER, sign

HOOK_PATH = "/hooks/ci"


class TriggerError(MlstewardError):
    """The gateway refused the trigger or could not be reached; the message says why."""

    def __init__(self, message: str, status: int | None = None, response: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.report = response


def build_request(
    action: str,
    model: str,
    parameters: dict[str, Any] | None,
    secret: str,
    *,
    delivery: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and headers of a signed trigger."""
    delivery = delivery or f"mlsteward-{uuid.uuid4()}"
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    document = {
        "action": action,
        "model": model,
        "parameters": parameters or {},
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "delivery": delivery,
    }
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        "X-Mlsteward-Delivery": delivery,
    }
    return body, headers


def hook_url(url: str) -> str:
    """``https://host`` or ``https://host/`` means the gateway's ``/hooks/ci``; a URL with a
    path is used as given (a gateway mounted under a prefix)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TriggerError(f"not an http(s) URL for the webhook gateway: {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=HOOK_PATH)
    return urlunsplit(parts)


def trigger(
    action: str,
    model: str,
    parameters: dict[str, Any] | None,
    url: str,
    secret: str,
    *,
    delivery: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Send a signed trigger and return the gateway's answer (runs with ids and UI URLs).

    Raises:
        TriggerError: no secret, an unreachable gateway, or any refusal (its status and reason).
    """
    import httpx

    if not secret:
        raise TriggerError("no webhook secret: set MLSTEWARD_WEBHOOK_SECRET (or pass --secret)")
    target = hook_url(url)
    body, headers = build_request(action, model, parameters, secret, delivery=delivery)
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TriggerError(f"cannot reach the webhook gateway at {target}: {exc}") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text[:500]}
    if response.status_code >= 300:
        reason = (
            answer.get("error") if isinstance(answer, dict) else None
        ) or response.reason_phrase
        raise TriggerError(
            f"the gateway refused the trigger ({response.status_code}): {reason}",
            status=response.status_code,
            response=answer,
        )
    return {"status": response.status_code, **answer}


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` command-line pairs; a VALUE that parses as JSON (``2``, ``true``,
    ``[1, 2]``) is sent as such, anything else as text."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise TriggerError(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        parameters[key.strip()] = value
    return parameters


def describe(answer: dict[str, Any]) -> str:
    """The gateway's answer for a person: each run started, with its Prefect UI link."""
    lines = [f"delivery {answer.get('delivery')}: {answer.get('message', '')}".rstrip()]
    for run in answer.get("runs") or []:
        where = run.get("url") or run.get("flow_run_id")
        lines.append(f"  {run['deployment']}  {run['flow_run_name']}  {where}")
    return "\n".join(lines)

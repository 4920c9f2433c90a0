"""The prediction service as a rollout sees it: two read-only HTTP endpoints.

A rollout never calls the service to change anything: it steers it through the registry's
canary tags (``mlsteward.governance.canary``), which the service polls, and watches it through
``GET /v1/models/{model}`` (what a replica routes now) and ``GET /metrics`` (Prometheus text),
with a token that may read (``settings.serving_headers``). Plain HTTP, so the rollout room needs
nothing of the service's own code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from mlsteward.config.models import ModelConfig
from mlsteward.config.settings import serving_headers
from mlsteward.errors import PromotionError

HTTP_TIMEOUT_SECONDS = 10.0


class ServiceUnavailable(PromotionError):
    """The prediction service did not answer, or does not serve the model."""


class ServiceRefused(ServiceUnavailable):
    """The prediction service answered, but not to us: no token, or one that may not read."""


def describe_model(url: str, model: str) -> dict[str, Any]:
    """``GET /v1/models/{model}``: what one service replica serves now."""
    try:
        resp = httpx.get(
            f"{url}/v1/models/{model}", headers=serving_headers(), timeout=HTTP_TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"prediction service at {url} is unreachable: {exc}") from exc
    if resp.status_code == 404:
        raise ServiceUnavailable(f"prediction service at {url} does not serve {model}")
    if resp.status_code in (401, 403):
        raise ServiceRefused(
            f"prediction service at {url} refused to describe {model} ({resp.status_code}): "
            f"{_message(resp)}; set MLSTEWARD_SERVING_TOKEN (or MLSTEWARD_TOKEN) to a token "
            "that may read"
        )
    if resp.status_code != 200:
        raise ServiceUnavailable(
            f"prediction service at {url} answered {resp.status_code} for {model}: "
            f"{resp.text[:300]}"
        )
    described: dict[str, Any] = resp.json()
    return described


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["detail"][0]["msg"])
    except (ValueError, KeyError, IndexError, TypeError):
        return resp.text[:300]


def scrape(url: str) -> str:
    """``GET /metrics``: the Prometheus exposition text."""
    try:
        resp = httpx.get(f"{url}/metrics", headers=serving_headers(), timeout=HTTP_TIMEOUT_SECONDS)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"cannot scrape {url}/metrics: {exc}") from exc
    return resp.text


def shows_canary(
    described: dict[str, Any],
    started_at: str,
    version: str,
    fraction: float | None = None,
    step: int | None = None,
) -> bool:
    """Whether a service description shows this rollout with the challenger loaded (and, if
    given, at this fraction and step). A rollout is known by its start time: the service
    never shows the rollout id, which salts its routing."""
    canary = described.get("canary") or {}
    challenger = described.get("challenger") or {}
    if canary.get("started_at") != started_at or str(challenger.get("version")) != str(version):
        return False
    if str(canary.get("challenger_version")) != str(version):
        return False
    if fraction is not None and abs(float(described.get("fraction", -1)) - fraction) > 1e-9:
        return False
    return step is None or canary.get("step") == step


def wait_for_service(
    url: str,
    model: str,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float,
    interval: float,
) -> tuple[bool, dict[str, Any]]:
    """Poll the service description until ``condition`` holds; (held, last description)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while True:
        try:
            last = describe_model(url, model)
            if condition(last):
                return True, last
        except ServiceUnavailable as exc:  # a restart in between: keep trying until the end
            last = {"errors": [str(exc)]}
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(interval)


def load_timeout(cfg: ModelConfig) -> float:
    """How long the service may take to follow a registry change: three polls plus loading
    (download, SHA-256 check, audit) of a version."""
    return 3 * cfg.serving.poll_seconds + 30

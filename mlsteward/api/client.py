"""A small client of the governance API, for the command line and scripts.

With ``MLSTEWARD_API_URL`` and ``MLSTEWARD_TOKEN`` set, the governance commands call the API
instead of the core in their own process, so the service's authorization and audit apply to
them as to any other caller::

    client = GovernanceClient.from_env()      # None unless both variables are set
    if client is not None:
        decided = client.promote("heart_disease", "7", reason="better recall")

Each method returns the document the core function's result dumps to (``Decision``,
``PromotionResult``, ``status``), and raises the error the core would have raised: a 401 is an
``AuthenticationError``, a 403 a ``PermissionDeniedError`` naming the permission, a 404 a
``NotFoundError``, a 409 a ``PromotionError``, anything else an ``MlstewardError`` with the
service's message.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from mlsteward.errors import (
    AuthenticationError,
    MlstewardError,
    NotFoundError,
    PermissionDeniedError,
    PromotionError,
)

URL_VARIABLE = "MLSTEWARD_API_URL"
TOKEN_VARIABLE = "MLSTEWARD_TOKEN"
PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 120.0
"""Seconds: a validation runs every gate while the request waits."""


def error_for(status: int, body: Any, fallback: str) -> MlstewardError:
    """The core's error for an API refusal, with the service's message."""
    message = body.get("error") if isinstance(body, dict) else None
    message = str(message or fallback)
    if status == 401:
        return AuthenticationError(message)
    if status == 403:
        permission = body.get("permission") if isinstance(body, dict) else None
        return PermissionDeniedError(message, str(permission or "unknown"))
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return PromotionError(message)
    return MlstewardError(f"HTTP {status}: {message}")


class GovernanceClient:
    """The governance routes, one method each; ``http`` lets a caller bring its own client
    (tests pass FastAPI's ``TestClient``)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = http or httpx.Client(timeout=timeout)

    @classmethod
    def from_env(cls) -> GovernanceClient | None:
        """A client of ``MLSTEWARD_API_URL`` with ``MLSTEWARD_TOKEN``; None unless both are set
        (the command then acts in its own process, as before)."""
        url = os.environ.get(URL_VARIABLE, "").strip()
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        return cls(url, token) if url and token else None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GovernanceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One request; the answer's JSON, or the core's error for a refusal.

        Raises:
            MlstewardError: the service refused (its subclass by status), or cannot be reached.
        """
        url = f"{self.url}{PREFIX}{path}"
        try:
            response = self._http.request(
                method,
                url,
                json=json,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            raise MlstewardError(
                f"no governance API at {self.url} ({URL_VARIABLE}): {exc}"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise error_for(response.status_code, body, response.text[:500])
        return body

    # -- reading ------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self.call("GET", "/whoami")

    def status(self, model: str) -> dict[str, Any]:
        """``mlsteward status``'s document, with the policy, last drift, active rollout and
        pending approvals besides."""
        return self.call("GET", f"/models/{model}")

    def pending_approvals(self, model: str | None = None) -> list[dict[str, Any]]:
        return self.call("GET", "/approvals", params={"model": model})["approvals"]

    # -- decisions ----------------------------------------------------------------------------

    def validate(self, model: str, version: str) -> dict[str, Any]:
        return self.call("POST", f"/models/{model}/versions/{version}/validate", json={})

    def promote(
        self, model: str, version: str, *, reason: str | None = None, override: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"override": override}
        if reason:
            body["reason"] = reason
        return self.call("POST", f"/models/{model}/versions/{version}/promote", json=body)

    def approve(self, model: str, version: str, *, reason: str) -> dict[str, Any]:
        return self.call(
            "POST", f"/models/{model}/versions/{version}/approve", json={"reason": reason}
        )

    def reject(self, model: str, version: str, *, reason: str) -> dict[str, Any]:
        return self.call(
            "POST", f"/models/{model}/versions/{version}/reject", json={"reason": reason}
        )

    def rollback(
        self, model: str, *, reason: str, to: str | None = None, override: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason, "override": override}
        if to is not None:
            body["to"] = str(to)
        return self.call("POST", f"/models/{model}/rollback", json=body)

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, model: str, action: str, **parameters: Any) -> dict[str, Any]:
        """Start the model's ``action`` (train, drift, score) deployment run."""
        body = {"action": action, **{k: v for k, v in parameters.items() if v is not None}}
        return self.call("POST", f"/models/{model}/runs", json=body)

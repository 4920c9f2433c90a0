"""What the gateway answers, as its OpenAPI document states it: one body for every delivery,
accepted or refused, and the status codes a sender meets, so a client (or a schema-driven
test) knows every answer before it sends anything."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlsteward.gateway.signing import SIGNATURE_HEADER


class StartedRunAnswer(BaseModel):
    """A deployment run a delivery started."""

    action: str
    model: str
    deployment: str
    flow_run_id: str
    flow_run_name: str
    url: str | None = Field(description="The run in the Prefect UI, when its URL is known.")


class DeliveryAnswer(BaseModel):
    """The answer to a delivery. A refusal says why in ``error`` and may add what it checked
    (``known`` models, the ``field`` at fault, a ``ceiling``, ``signed_at`` ...)."""

    model_config = ConfigDict(extra="allow")

    accepted: bool
    delivery: str | None = Field(description="The delivery id, as sent or as checked.")
    event: str | None = Field(description="push, ping or trigger (a plain JSON trigger).")
    message: str | None = Field(default=None, description="What an accepted delivery does.")
    runs: list[StartedRunAnswer] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Why a delivery was refused.")


def _answer(description: str) -> dict[str, Any]:
    return {"model": DeliveryAnswer, "description": description}


HOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _answer("Accepted with nothing to start: a ping, or a push that trains no model."),
    202: _answer("Accepted: the deployment runs in ``runs`` were created."),
    400: _answer("Unreadable: no JSON object, no delivery id, no signed timestamp."),
    401: _answer(f"Missing or wrong signature ({SIGNATURE_HEADER})."),
    409: _answer("A replayed delivery, or a signed timestamp too old or too far ahead."),
    413: _answer("The body is over the size limit."),
    422: _answer(
        "Asks for what is not there or not allowed: an unknown event, action, model or "
        "parameter, or one over its limit."
    ),
    502: _answer("The Prefect API did not create the runs; the delivery may be resent."),
    503: _answer("The Prefect API cannot be reached, or a deployment is not on it."),
}

HOOK_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A GitHub push or ping, or a plain trigger "
        '``{"action", "model", "parameters", "timestamp", "delivery"}``, signed as sent.',
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "parameters": [
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "description": "``sha256=`` and the HMAC-SHA256 of the body with the shared secret.",
            "schema": {"type": "string"},
        },
        {
            "name": "X-Mlsteward-Delivery",
            "in": "header",
            "required": False,
            "description": "The delivery id (or X-GitHub-Delivery): accepted once.",
            "schema": {"type": "string"},
        },
        {
            "name": "X-GitHub-Event",
            "in": "header",
            "required": False,
            "description": "push or ping; absent for a plain trigger.",
            "schema": {"type": "string"},
        },
    ],
}

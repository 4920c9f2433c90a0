"""The Open Inference Protocol's routes (``/v2``) in the service's OpenAPI document, as the
protocol's REST specification (KServe V2) states them: the routes are plain Starlette routes,
which FastAPI leaves out of its document, so a client reading ``/openapi.json`` would not know
they exist nor what they answer."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What is wrong, by name."}},
}
_TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": {"type": ["object", "null"]},
        "data": {"type": ["array", "null"]},
    },
    "additionalProperties": False,
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"]},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_IN},
        "outputs": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": ["object", "null"]},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_TENSOR_OUT = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {"type": "array", "items": _TENSOR_OUT},
    },
}
_METADATA_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _METADATA_TENSOR},
        "outputs": {"type": "array", "items": _METADATA_TENSOR},
    },
}
_SERVER_METADATA = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}

_WHY = {
    400: "The request breaks the protocol or a field breaks the model's data contract.",
    401: "No token, or one that proves nobody.",
    403: "The token's principal may not do this with this model.",
    404: "No such model, or the version is not served.",
    413: "The body is over the model's size limit.",
    429: "Too many requests waiting: retry after the time Retry-After says.",
    503: "The model has no champion loaded, or a dependency is unavailable.",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str, ok: dict[str, Any], errors: tuple[int, ...], secured: bool, **extra: Any
) -> dict[str, Any]:
    statuses = tuple(s for s in errors if secured or s not in (401, 403))
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": ["Open Inference Protocol"],
        "responses": {"200": ok, **{str(s): _json(_ERROR, _WHY[s]) for s in statuses}},
        **extra,
    }
    if secured:
        operation["security"] = [{"bearerToken": []}, {"apiKey": []}]
    return operation


def _parameters(version: bool) -> list[dict[str, Any]]:
    names = ["model", "version"] if version else ["model"]
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


def oip_paths(secured: bool) -> dict[str, Any]:
    """The ``/v2`` paths; ``secured``: the service checks tokens (its default)."""
    live = _json({"type": "object", "properties": {"live": {"type": "boolean"}}}, "Live.")
    ready = _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}, "Ready.")
    not_ready = _json(ready["content"]["application/json"]["schema"], "A model is not loaded.")
    model_ready = _json(
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "The model (version) is served.",
    )
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _operation("Server live", live, (), False)},
        "/v2/health/ready": {
            "get": {
                **_operation("Server ready", ready, (), False),
                "responses": {"200": ready, "503": not_ready},
            }
        },
        "/v2": {
            "get": _operation(
                "Server metadata",
                _json(_SERVER_METADATA, "The server's name and version."),
                (401, 403),
                secured,
            )
        },
    }
    for version in (False, True):
        base = "/v2/models/{model}" + ("/versions/{version}" if version else "")
        parameters = _parameters(version)
        paths[base] = {
            "get": _operation(
                "Model metadata",
                _json(_MODEL_METADATA, "The model's inputs and outputs as tensors."),
                (401, 403, 404),
                secured,
                parameters=parameters,
            )
        }
        paths[f"{base}/ready"] = {
            "get": _operation(
                "Model ready", model_ready, (401, 403, 404, 503), secured, parameters=parameters
            )
        }
        paths[f"{base}/infer"] = {
            "post": _operation(
                "Inference",
                _json(_INFER_RESPONSE, "The requested outputs as tensors, row by row."),
                (400, 401, 403, 404, 413, 429, 503),
                secured,
                parameters=parameters,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _INFER_REQUEST}},
                },
            )
        }
    return paths

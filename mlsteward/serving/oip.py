"""The Open Inference Protocol (KServe V2, Triton, Seldon MLServer; REST) beside ``/v1``.

| route | answers | needs |
| --- | --- | --- |
| ``GET /v2/health/live``, ``/v2/health/ready`` | 200; ready: 503 as ``/readyz`` | nothing |
| ``GET /v2`` | server metadata: name, version, extensions | ``read`` |
| ``GET /v2/models/{model}[/versions/{v}]`` | model metadata: versions, tensors | ``read`` |
| ``GET /v2/models/{model}[/versions/{v}]/ready`` | 200 when served, else 503 or 404 | ``read`` |
| ``POST /v2/models/{model}/infer`` | predictions of the routed arms | ``predict`` |
| ``POST /v2/models/{model}/versions/{v}/infer`` | every row from version ``v`` | + ``route`` |

An infer request is ``/v1``'s predict request in tensors, and goes the same way from there
(``mlsteward.serving.predict``): the same contract checks, routing, micro-batches, SHAP, log
rows and metrics. The model's inputs are one tensor per feature, shape ``[-1]`` (``[N]`` or
``[N, 1]``), typed as the served version recorded the feature: ``FP64`` (any integer or
floating-point type is taken), ``INT64`` (integer types, or floats with whole values, as
``/v1`` takes JSON numbers), ``BOOL``, ``BYTES`` (categories, as UTF-8 strings). Per-feature
tensors rather than one 2-D matrix: categories stay strings, booleans booleans, and every
error names the feature; it is the shape MLServer's pandas codec and KServe's tabular
examples use, and tritonclient builds each from a numpy column. Instead of the features, the
entity input (named as the model's entity, e.g. ``patient_id``: ``INT64`` or ``BYTES`` as the
online store keys it) has the features read from the Feast online store. Beside either, a
tensor per sensitive column that is not a feature, for the prediction log only; with the
features, ``routing_keys`` (``BYTES``; permission ``route``). A null in JSON data, or NaN in
a floating-point tensor, is a missing value, allowed where the contract allows nulls.

Outputs: ``probability``, ``label``, ``threshold`` (a classifier) or ``prediction`` (a
regression model), ``version`` and ``event_timestamp`` per row; with explanations,
``base_value`` ``[N]`` and the top-k ``contributions`` with their ``contribution_features``,
``[N, k]``, largest first: ``/v1``'s explanation, value for value. Explanations come when an
explanation output is requested or with the parameter ``"explain": true`` (``"top_k"`` as in
``/v1``). Answers are JSON tensors whatever ``binary_data`` asks: tritonclient's
``as_numpy`` reads either. Request tensors may come in the binary extension's layout
(``Inference-Header-Content-Length``), as tritonclient sends them by default.

Every refusal is ``{"error": "..."}`` naming the input (and row), output or parameter and the
rule broken: 400 for a bad request (where ``/v1`` answers 422), 401/403 as ``/v1``, 404 for an
unknown model, version or entity, 413 for too many rows or bytes, 503 without a champion.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

import numpy as np
import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlsteward.identity import Permission
from mlsteward.serving.auth import Refused
from mlsteward.serving.batcher import pinned_arm, unserved_version
from mlsteward.serving.body import BodyTooLarge, closing, read_body, refused_unread
from mlsteward.serving.features import TEXT, FieldError, FieldRule, RequestRejected, field_rules
from mlsteward.serving.oip_openapi import oip_paths
from mlsteward.serving.predict import (
    PredictRequest,
    count_answer,
    count_refused,
    make_job,
    score,
)
from mlsteward.serving.routes import unknown_model_message
from mlsteward.serving.scorer import ServedModel
from mlsteward.serving.slots import ModelSlot

if TYPE_CHECKING:
    from mlsteward.serving.app import Service

INFER_PATH = "/v2/models/{model}/infer"
VERSION_INFER_PATH = "/v2/models/{model}/versions/{version}/infer"
PLATFORM = "xgboost"
ROUTING_KEYS = "routing_keys"
HEADER_LENGTH = "inference-header-content-length"
Loc = tuple[str | int, ...]

# -- datatypes ------------------------------------------------------------------------------
_INTS = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}  # fmt: skip
_FLOATS = ("FP16", "FP32", "FP64")
_NUMBERS = (*_INTS, *_FLOATS)
DATATYPES = ("BOOL", *_NUMBERS, "BYTES")
_NUMPY = {
    "BOOL": np.dtype("?"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}  # fmt: skip
# what a column of each kind is declared as, and what it takes
_DECLARED = {"int": "INT64", "float": "FP64", "bool": "BOOL", "category": "BYTES", TEXT: "BYTES"}
_TAKES: dict[str, tuple[str, ...]] = {
    "int": _NUMBERS,
    "float": _NUMBERS,
    "bool": ("BOOL",),
    "category": ("BYTES",),
    TEXT: DATATYPES,
}

# -- outputs --------------------------------------------------------------------------------
_OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "probability": ("FP64", [-1]),
    "label": ("INT64", [-1]),
    "threshold": ("FP64", [-1]),
    "prediction": ("FP64", [-1]),
    "version": ("BYTES", [-1]),
    "event_timestamp": ("BYTES", [-1]),
    "base_value": ("FP64", [-1]),
    "contributions": ("FP64", [-1, -1]),
    "contribution_features": ("BYTES", [-1, -1]),
}
CLASSIFIER_OUTPUTS = ("probability", "label", "threshold", "version", "event_timestamp")
REGRESSION_OUTPUTS = ("prediction", "version", "event_timestamp")
EXPLANATION_OUTPUTS = ("base_value", "contributions", "contribution_features")
_ANSWERED = frozenset((*CLASSIFIER_OUTPUTS, *REGRESSION_OUTPUTS))  # a field of /v1's answer

# -- parameters -----------------------------------------------------------------------------
# used, then sent by clients with nothing to do here (tritonclient's, MLServer's codecs' hints)
_REQUEST_PARAMETERS = ("explain", "top_k", "binary_data_output", "priority", "timeout",
                       "content_type")  # fmt: skip
_INPUT_PARAMETERS = ("binary_data_size", "content_type")
_OUTPUT_PARAMETERS = ("binary_data",)  # answered as JSON, which the clients read as well
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


# -- request ---------------------------------------------------------------------------------
class InputTensor(TypedDict):
    name: str
    shape: list[int]
    datatype: str
    parameters: NotRequired[dict[str, Any] | None]
    data: NotRequired[list[Any] | None]


class RequestedOutput(TypedDict):
    name: str
    parameters: NotRequired[dict[str, Any] | None]


class InferenceRequest(TypedDict):
    """An inference request as JSON gives it, checked by :func:`parse_request`; ``outputs``
    chooses what comes back (default: all)."""

    id: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]
    inputs: list[InputTensor]
    outputs: NotRequired[list[RequestedOutput] | None]


_REQUEST_FIELDS = frozenset(InferenceRequest.__annotations__)
_INPUT_FIELDS = frozenset(InputTensor.__annotations__)
_OUTPUT_FIELDS = frozenset(RequestedOutput.__annotations__)


class Rejected(RequestRejected):
    """A request refused by the protocol's own rules, before it became a predict request."""


FEATURE, ENTITY, ATTRIBUTE, ROUTING = "feature", "entity", "attribute", "routing"


@dataclass(frozen=True)
class Signature:
    """What a model takes as tensors: its features (by the served version's types), the
    entity input, its sensitive columns outside the features, and what it answers; per input
    name, its role and the datatypes it takes, worked out once."""

    features: Mapping[str, FieldRule]
    attributes: Mapping[str, FieldRule]
    entity: str
    entity_datatype: str
    regression: bool
    roles: Mapping[str, tuple[str, frozenset[str]]]
    required: tuple[str, ...]  # features that may not be missing
    outputs: tuple[str, ...]  # what the model answers, then its explanation

    @classmethod
    def of(cls, slot: ModelSlot, rules: Mapping[str, FieldRule]) -> Signature:
        online = slot.online
        entity = slot.cfg.source.entity
        entity_datatype = "BYTES" if online is not None and not online.int_entity else "INT64"
        attributes = slot.attribute_rules
        roles = {
            ROUTING_KEYS: (ROUTING, frozenset({"BYTES"})),
            entity: (ENTITY, frozenset({"BYTES"} if entity_datatype == "BYTES" else _INTS)),
        }
        for role, columns in ((ATTRIBUTE, attributes), (FEATURE, rules)):
            for n, rule in columns.items():
                roles[n] = (role, frozenset(_TAKES.get(rule.kind, DATATYPES)))
        return cls(
            features=rules,
            attributes=attributes,
            entity=entity,
            entity_datatype=entity_datatype,
            regression=slot.cfg.is_regression,
            roles=roles,
            required=tuple(n for n, r in rules.items() if not r.nullable),
            outputs=(
                *(REGRESSION_OUTPUTS if slot.cfg.is_regression else CLASSIFIER_OUTPUTS),
                *EXPLANATION_OUTPUTS,
            ),
        )

    def declared(self, name: str) -> str:
        rule = self.features.get(name) or self.attributes.get(name)
        if rule is not None:
            return _DECLARED.get(rule.kind, "BYTES")
        return self.entity_datatype if name == self.entity else "BYTES"

    @property
    def inputs(self) -> list[str]:
        return [*self.features, self.entity, *self.attributes, ROUTING_KEYS]

    def metadata(self, name: str, versions: list[str]) -> dict[str, Any]:
        """The model metadata answer."""
        return {
            "name": name,
            "versions": versions,
            "platform": PLATFORM,
            "inputs": [
                {"name": n, "datatype": self.declared(n), "shape": [-1]} for n in self.inputs
            ],
            "outputs": [
                {"name": n, "datatype": _OUTPUTS[n][0], "shape": _OUTPUTS[n][1]}
                for n in self.outputs
            ],
        }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _refused(exc: Refused) -> JSONResponse:
    """An authentication or permission refusal in the protocol's shape (401s keep their
    ``WWW-Authenticate`` challenge)."""
    challenge = exc.response.headers.get("www-authenticate")
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return _error(exc.response.status_code, exc.message, headers)


# -- errors as messages ---------------------------------------------------------------------
def _where(loc: Sequence[str | int], entity: str) -> str:
    """Where a broken rule is, in the request's own terms (inputs, rows, outputs, parameters)
    rather than ``/v1``'s body fields."""
    match tuple(loc):
        case ("body", "instances" | "attributes", int(row), str(name)):
            return f"input {name!r}, row {row}"
        case ("body", "entity_ids", int(row)):
            return f"input {entity!r}, row {row}"
        case ("body", "entity_ids"):
            return f"input {entity!r}"
        case ("body", "routing_keys", int(row)):
            return f"input {ROUTING_KEYS!r}, row {row}"
        case ("body", "routing_keys"):
            return f"input {ROUTING_KEYS!r}"
        case ("body", "top_k" | "explain" as name):
            return f"parameter {name!r}"
        case ("input", str(name)):
            return f"input {name!r}"
        case ("input", str(name), int(row)):
            return f"input {name!r}, row {row}"
        case ("input" | "output" as kind, str(name), str(field)):
            return f"{kind} {name!r}, field {field!r}"
        case ("output", str(name)):
            return f"output {name!r}"
        case ("parameter", str(name)):
            return f"parameter {name!r}"
        case ("header", str(name)):
            return f"header {name!r}"
        case ("path", "version"):
            return "version"
        case ("body",) | ():
            return "request"
        case ("body", *rest):
            return _json_path(rest)
    return _json_path(loc)


def _json_path(loc: Sequence[str | int]) -> str:
    """``inputs[0].shape[1]``: where pydantic found a body's JSON wrong."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "request"


def _message(errors: Sequence[FieldError], entity: str) -> str:
    parts = []
    for e in errors:
        where = _where(e.loc, entity)
        msg = e.msg
        name = e.loc[-1] if e.loc else None
        if isinstance(name, str) and msg.startswith(f"{name}: "):
            msg = msg[len(name) + 2 :]  # the input already names the field
        parts.append(f"{where}: {msg} (rule: {e.type})")
    return "; ".join(parts)


def _status(status: int) -> int:
    """``/v1``'s 422 (a field breaks a rule) is the protocol's 400; the rest keep theirs."""
    return 400 if status == 422 else status


def _validation_errors(exc: ValidationError, prefix: tuple[str, ...]) -> list[FieldError]:
    return [
        FieldError((*prefix, *e["loc"]), e["msg"], e["type"])
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


# -- reading tensors ------------------------------------------------------------------------
def _flatten(data: Sequence[Any]) -> Iterator[Any]:
    for v in data:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


_JSON_TYPES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **dict.fromkeys(_INTS, frozenset({int})),
    **dict.fromkeys(_FLOATS, frozenset({int, float})),
}
_EXPECTED = {
    "BOOL": "true or false",
    "BYTES": "a string",
    **dict.fromkeys(_INTS, "an integer"),
    **dict.fromkeys(_FLOATS, "a number"),
}


def _json_values(name: str, datatype: str, data: list[Any]) -> list[Any]:
    """Row-major values of a JSON tensor as Python values (null, or NaN in a floating-point
    tensor: None), each checked against the datatype.

    Raises:
        Rejected: the first value that is not of the datatype, naming it.
    """
    if len(data) == 1:  # one row, the most common request: one value to check
        value = data[0]
        kind = type(value)
        if kind in _JSON_TYPES[datatype]:
            limits = _INTS.get(datatype)
            if limits is not None and not limits[0] <= value <= limits[1]:
                _bad_value(name, datatype, 0, value, f"an integer in [{limits[0]}, {limits[1]}]")
            return [None] if kind is float and value != value else data  # NaN: missing
    flat = list(_flatten(data)) if any(type(v) is list for v in data) else data
    kinds = {type(v) for v in flat}
    if kinds <= _JSON_TYPES[datatype]:  # the common case, checked as a whole
        limits = _INTS.get(datatype)
        if limits is not None and flat and not limits[0] <= min(flat) <= max(flat) <= limits[1]:
            bad = next(v for v in flat if not limits[0] <= v <= limits[1])
            _bad_value(name, datatype, flat.index(bad), bad,
                       f"an integer in [{limits[0]}, {limits[1]}]")  # fmt: skip
        if float in kinds and any(v != v for v in flat):  # NaN: missing
            return [None if v != v else v for v in flat]
        return flat
    allowed, limits, floats = _JSON_TYPES[datatype], _INTS.get(datatype), datatype in _FLOATS
    out: list[Any] = []
    for i, v in enumerate(flat):  # nulls among the values, or a value of another type
        if v is None or (floats and type(v) is float and v != v):
            out.append(None)
            continue
        if type(v) not in allowed:
            _bad_value(name, datatype, i, v, _EXPECTED[datatype])
        if limits is not None and not limits[0] <= v <= limits[1]:
            _bad_value(name, datatype, i, v, f"an integer in [{limits[0]}, {limits[1]}]")
        out.append(v)
    return out


def _bad_value(name: str, datatype: str, index: int, value: Any, expected: str) -> None:
    msg = f"{datatype} data holds {value!r} at element {index}: expected {expected}"
    raise Rejected(400, [FieldError(("input", name), msg, "datatype")])


def _binary_values(name: str, datatype: str, raw: bytes) -> list[Any]:
    """Values of a tensor sent in the binary extension's layout (little-endian, row-major;
    ``BYTES`` as 4-byte lengths each followed by UTF-8)."""
    if datatype == "BYTES":
        out: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                _bad_binary(name, "a BYTES element's 4-byte length is cut off")
            size = int.from_bytes(raw[at : at + 4], "little")
            if at + 4 + size > len(raw):
                _bad_binary(name, f"a BYTES element of {size} bytes runs past binary_data_size")
            try:
                out.append(raw[at + 4 : at + 4 + size].decode())
            except UnicodeDecodeError:
                _bad_binary(name, f"BYTES element {len(out)} is not UTF-8")
            at += 4 + size
        return out
    dtype = _NUMPY[datatype]
    if len(raw) % dtype.itemsize:
        _bad_binary(name, f"{len(raw)} bytes are not a whole number of {datatype} values")
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    if datatype in _FLOATS:
        return [None if math.isnan(v) else v for v in values]
    return values


def _bad_binary(name: str, msg: str) -> None:
    raise Rejected(400, [FieldError(("input", name), msg, "binary_data")])


def _check_parameters(
    where: str,
    name: str | None,
    given: Mapping[str, Any] | None,
    known: tuple[str, ...],
) -> list[FieldError]:
    """Parameters nobody here reads are refused by name rather than silently dropped; shared
    memory is named as not supported."""
    errors: list[FieldError] = []
    for key in given or {}:
        if key in known:
            continue
        loc: tuple[str, ...] = (where, name) if name is not None else ("parameter", key)
        if key in _SHARED_MEMORY:
            msg = f"parameter {key!r}: shared memory is not supported; send the data"
            errors.append(FieldError(loc, msg, "unsupported"))
        elif key == "classification":
            msg = "parameter 'classification' is not supported; request 'probability' and 'label'"
            errors.append(FieldError(loc, msg, "unsupported"))
        else:
            msg = f"unknown parameter {key!r}; known: {', '.join(known)}"
            errors.append(FieldError(loc, msg, "unknown_parameter"))
    return errors


def parse_request(raw: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The request and the binary data after its JSON (empty without the binary layout).

    The JSON is read by orjson and its shape checked here, field by field, keeping the dicts:
    pydantic models of 14 tensors cost ~30 us a request (a twentieth of a lone request), a
    TypeAdapter of TypedDicts ~20 us, this ~13 us.

    Raises:
        Rejected: a header length that does not fit the body, JSON that is not a request,
            every field missing, unknown or of the wrong type.
    """
    binary = b""
    if header_length is not None:
        try:
            cut = int(header_length)
        except ValueError:
            cut = -1
        if not 0 < cut <= len(raw):
            msg = f"{header_length!r} is not a length within the body's {len(raw)} bytes"
            raise Rejected(400, [FieldError(("header", "Inference-Header-Content-Length"), msg,
                                            "binary_data")])  # fmt: skip
        raw, binary = raw[:cut], raw[cut:]
        try:
            obj = _loads(raw)
        except Rejected as exc:  # a length left over from another request, say
            msg = f"the body's first {cut} bytes are not the request's JSON: {exc}"
            where = ("header", "Inference-Header-Content-Length")
            raise Rejected(400, [FieldError(where, msg, "binary_data")]) from None
    else:
        obj = _loads(raw)
    errors: list[FieldError] = []
    if type(obj) is not dict:
        raise Rejected(400, [FieldError(("body",), "expected a JSON object", "dict_type")])
    if not obj.keys() <= _REQUEST_FIELDS:
        errors += _unknown_fields(obj, _REQUEST_FIELDS, ())
    if not isinstance(obj.get("id", ""), str | None):
        errors.append(FieldError(("id",), f"expected a string, got {obj['id']!r}", "string_type"))
    _check_dict(obj, (), errors)
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        kind = "missing" if inputs is None else "list_type"
        errors.append(FieldError(("inputs",), "expected a list of at least one tensor", kind))
        inputs = []
    for i, tensor in enumerate(inputs):
        if not (
            type(tensor) is dict
            and tensor.keys() <= _INPUT_FIELDS
            and type(tensor.get("name")) is str
            and type(tensor.get("datatype")) is str
            and _is_shape(tensor.get("shape"))
            and type(tensor.get("data", [])) in _LIST_OR_NONE
            and type(tensor.get("parameters")) in _DICT_OR_NONE
        ):  # the common case in one expression; what is wrong, only when something is
            errors += _tensor_errors(tensor, i)
    outputs = obj.get("outputs")
    if outputs is not None:
        if type(outputs) is not list:
            errors.append(FieldError(("outputs",), "expected a list", "list_type"))
            outputs = []
        for i, out in enumerate(outputs):
            name = out.get("name") if type(out) is dict else None
            if type(name) is not str:
                msg = "expected an object with a name"
                errors.append(FieldError(("outputs", i), msg, "dict_type"))
                continue
            if not out.keys() <= _OUTPUT_FIELDS:
                errors += _unknown_fields(out, _OUTPUT_FIELDS, ("output", name))
            _check_dict(out, ("output", name), errors)
    if errors:
        raise Rejected(400, errors)
    return cast(InferenceRequest, obj), binary


_LIST_OR_NONE = (list, type(None))
_DICT_OR_NONE = (dict, type(None))


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:  # NaN and Infinity: not JSON, but what rapidjson (tritonclient) writes for them
            return json.loads(raw)
        except ValueError:
            msg = f"invalid JSON: {exc}"
            raise Rejected(400, [FieldError(("body",), msg, "json_invalid")]) from None


def _is_shape(shape: Any) -> bool:
    if type(shape) is not list:
        return False
    return all(type(d) is int and d >= 0 for d in shape)  # a bool is no dimension


def _unknown_fields(obj: dict[str, Any], known: frozenset[str], loc: Loc) -> list[FieldError]:
    fields = ", ".join(sorted(known))
    return [
        FieldError((*loc, key), f"unknown field; fields: {fields}", "extra_forbidden")
        for key in obj
        if key not in known
    ]


def _check_dict(obj: dict[str, Any], loc: Loc, errors: list[FieldError]) -> None:
    if type(obj.get("parameters")) not in _DICT_OR_NONE:
        errors.append(FieldError((*loc, "parameters"), "expected an object", "dict_type"))


def _tensor_errors(tensor: Any, index: int) -> list[FieldError]:
    """What is wrong with one input tensor's JSON, named by its name when it has one."""
    if type(tensor) is not dict:
        return [FieldError(("inputs", index), "expected a tensor object", "dict_type")]
    name = tensor.get("name")
    loc: Loc = ("input", name) if type(name) is str else ("inputs", index)
    errors = _unknown_fields(tensor, _INPUT_FIELDS, loc)
    if type(name) is not str:
        errors.append(FieldError((*loc, "name"), "expected a string", "string_type"))
    if type(tensor.get("datatype")) is not str:
        errors.append(FieldError((*loc, "datatype"), "expected a string", "string_type"))
    if not _is_shape(tensor.get("shape")):
        msg = f"shape {tensor.get('shape')!r}: expected a list of non-negative integers"
        errors.append(FieldError(loc, msg, "shape"))
    if type(tensor.get("data", [])) not in _LIST_OR_NONE:
        errors.append(FieldError((*loc, "data"), "expected a list", "list_type"))
    _check_dict(tensor, loc, errors)
    return errors


def read_tensors(
    req: InferenceRequest, binary: bytes, sig: Signature
) -> tuple[dict[str, list[Any]], int]:
    """Each input's values (row-major, one per row) and the row count, every tensor checked
    against the model's signature: name, datatype, shape, data.

    Raises:
        Rejected: every tensor-level rule broken, each naming its input.
    """
    errors: list[FieldError] = []
    values: dict[str, list[Any]] = {}
    rows: dict[str, int] = {}
    roles = sig.roles
    at = 0
    for tensor in req["inputs"]:
        name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
        where: Loc = ("input", name)
        size = None
        parameters = tensor.get("parameters")
        if parameters:
            size = parameters.get("binary_data_size")
            if size is not None:  # its bytes are taken in order, whatever else is wrong with it
                if type(size) is not int or size < 0:  # a bool is no byte count
                    msg = f"binary_data_size {size!r} is not a byte count"
                    errors.append(FieldError(where, msg, "binary_data"))
                    size = 0
                chunk, at = binary[at : at + size], at + size
            errors += _check_parameters("input", name, parameters, _INPUT_PARAMETERS)
        role = roles.get(name)
        if role is None:
            msg = f"not an input of this model; inputs: {', '.join(sig.inputs)}"
            errors.append(FieldError(where, msg, "unknown_input"))
            continue
        if name in rows:
            errors.append(FieldError(where, "given twice", "duplicate_input"))
            continue
        takes = role[1]
        if datatype not in takes:
            errors.append(FieldError(where, _datatype_rule(datatype, takes, sig.declared(name)),
                                     "datatype"))  # fmt: skip
            continue
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            msg = f"shape {shape}: one value per row, as shape [N] or [N, 1]"
            errors.append(FieldError(where, msg, "shape"))
            continue
        rows[name] = shape[0]
        data = tensor.get("data")
        try:
            if size is not None:
                if data is not None:
                    msg = "give data or binary_data_size, not both"
                    raise Rejected(400, [FieldError(where, msg, "binary_data")])
                got = _binary_values(name, datatype, chunk)
            elif data is not None:
                got = _json_values(name, datatype, data)
            else:
                msg = "no data: give data, or binary_data_size with the binary layout"
                raise Rejected(400, [FieldError(where, msg, "missing_data")])
        except Rejected as exc:
            errors += exc.errors
            continue
        if len(got) != shape[0]:
            errors.append(FieldError(where, f"{len(got)} value(s) for shape {shape}", "shape"))
            continue
        values[name] = got
    if at != len(binary):
        msg = (f"{len(binary)} bytes follow the JSON, the inputs' binary_data_size add up to "
               f"{at}")  # fmt: skip
        errors.append(FieldError(("header", "Inference-Header-Content-Length"), msg,
                                 "binary_data"))  # fmt: skip
    if not errors and len(set(rows.values())) > 1:
        counts = ", ".join(f"{n} {r}" for n, r in rows.items())
        errors.append(FieldError(("body",), f"inputs differ in rows: {counts}", "shape"))
    if errors:
        raise Rejected(400, errors)
    return values, next(iter(rows.values()))


def _datatype_rule(datatype: str, takes: frozenset[str], declared: str) -> str:
    if datatype not in DATATYPES:
        return f"datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
    msg = f"datatype {datatype} does not fit; send {declared}"
    if set(_FLOATS) <= takes and len(takes) < len(DATATYPES):
        msg += " (or another integer or floating-point type)"
    elif len(takes) > 1 and takes <= set(_INTS):
        msg += " (or another integer type)"
    return msg


def predict_request(
    req: InferenceRequest, values: Mapping[str, list[Any]], rows: int, sig: Signature
) -> tuple[PredictRequest, tuple[str, ...]]:
    """``/v1``'s predict request for these tensors, and the outputs to answer with.

    Raises:
        Rejected: neither (or both) the entity and the features given, routing keys beside
            entity ids, an unknown or duplicate output, a parameter of the wrong type.
    """
    errors: list[FieldError] = []
    explain: Any = False
    top_k: Any = None
    params = req.get("parameters")
    if params:
        errors += _check_parameters("parameter", None, params, _REQUEST_PARAMETERS)
        explain = params.get("explain", False)
        if not isinstance(explain, bool):
            msg = f"expected true or false, got {explain!r}"
            errors.append(FieldError(("parameter", "explain"), msg, "bool_type"))
            explain = False
        top_k = params.get("top_k")
        if top_k is not None and type(top_k) is not int:  # not a bool
            msg = f"expected an integer, got {top_k!r}"
            errors.append(FieldError(("parameter", "top_k"), msg, "int_type"))
            top_k = None
    known = sig.outputs
    wanted: list[str] = []
    for requested in req.get("outputs") or ():
        name, parameters = requested["name"], requested.get("parameters")
        where: Loc = ("output", name)
        if parameters:
            errors += _check_parameters("output", name, parameters, _OUTPUT_PARAMETERS)
        if name not in known:
            msg = f"not an output of this model; outputs: {', '.join(known)}"
            errors.append(FieldError(where, msg, "unknown_output"))
        elif name in wanted:
            errors.append(FieldError(where, "requested twice", "duplicate_output"))
        else:
            wanted.append(name)
    explain = explain or any(n in EXPLANATION_OUTPUTS for n in wanted)
    outputs = tuple(wanted) or (known if explain else known[: -len(EXPLANATION_OUTPUTS)])

    roles = sig.roles
    features, attributes = [], []
    for name in values:
        role = roles[name][0]
        if role is FEATURE:
            features.append(name)
        elif role is ATTRIBUTE:
            attributes.append(name)
    entity_ids = values.get(sig.entity)
    routing = values.get(ROUTING_KEYS)
    if entity_ids is not None and features:
        msg = (f"give the entity input or the feature inputs, not both (features given: "
               f"{', '.join(features)})")  # fmt: skip
        errors.append(FieldError(("input", sig.entity), msg, "entity_or_features"))
    elif entity_ids is None and not features:
        msg = (f"give the entity input {sig.entity!r} (features read from the online store) "
               f"or the feature inputs ({', '.join(sig.features)})")  # fmt: skip
        errors.append(FieldError(("body",), msg, "entity_or_features"))
    elif entity_ids is None:  # a missing tensor is named once, not once per row
        for name in sig.required:
            if name not in values:
                msg = "missing: the feature needs a value in every row (not nullable)"
                errors.append(FieldError(("input", name), msg, "not_null"))
    if routing is not None and entity_ids is not None:
        msg = "only with feature inputs: rows given by entity route on the entity id"
        errors.append(FieldError(("input", ROUTING_KEYS), msg, "routing_keys"))
    if errors:
        raise Rejected(400, errors)

    fields: dict[str, Any] = {"explain": explain, "top_k": top_k}
    if entity_ids is not None:
        fields["entity_ids"] = entity_ids
        if attributes:
            fields["attributes"] = [{n: values[n][i] for n in attributes} for i in range(rows)]
    else:
        given = [*features, *attributes]
        columns = [values[n] for n in given]
        fields["instances"] = [
            dict(zip(given, row, strict=True)) for row in zip(*columns, strict=True)
        ]
        if routing is not None:
            fields["routing_keys"] = routing
    try:
        return PredictRequest.model_validate(fields), outputs
    except ValidationError as exc:
        raise Rejected(400, _validation_errors(exc, ("body",))) from None


def answer(
    model: str,
    request_id: str,
    given_id: str | None,
    predictions: list[dict[str, Any]],
    served: Mapping[str, str],
    outputs: Sequence[str],
) -> dict[str, Any]:
    """The inference response: the requested outputs as JSON tensors (row-major), the model
    version when one version answered every row, the request's id (the client's if it gave
    one) and the prediction log's ``request_id`` as a parameter."""
    out: dict[str, Any] = {"model_name": model}
    versions = set(served.values())
    if len(versions) == 1:
        out["model_version"] = versions.pop()
    out["id"] = given_id if given_id is not None else request_id
    out["parameters"] = {"request_id": request_id}
    n = len(predictions)
    tensors = []
    for name in outputs:
        shape = [n]
        if name in _ANSWERED:
            data = [p[name] for p in predictions]
        elif name == "base_value":
            data = [p["explanation"]["base_value"] for p in predictions]
        else:  # contributions, contribution_features: [n, k], the rows' top k one after another
            key = "value" if name == "contributions" else "feature"
            data = [c[key] for p in predictions for c in p["explanation"]["contributions"]]
            shape = [n, len(data) // n if n else 0]
        tensors.append({"name": name, "datatype": _OUTPUTS[name][0], "shape": shape, "data": data})
    out["outputs"] = tensors
    return out


# -- routes ---------------------------------------------------------------------------------
def add_oip_routes(app: FastAPI, service: Service) -> None:
    """The protocol's routes, as plain Starlette routes (each takes only the raw request, like
    ``/v1``'s predict): the two infer routes right after ``/v1``'s predict, where the router's
    scan meets them early; the rest, and an answer in the protocol's shape for any other
    ``/v2`` path, at the end."""
    signatures: dict[str, tuple[Any, Signature]] = {}

    def signature(slot: ModelSlot) -> Signature:
        """The champion's signature, worked out once per set of feature rules."""
        rules = slot.arms.rules
        cached = signatures.get(slot.cfg.name)
        if cached is None or cached[0] is not rules:
            cached = signatures[slot.cfg.name] = (rules, Signature.of(slot, rules))
        return cached[1]

    infer = _infer_handler(service, signature)
    infer_routes = [
        Route(INFER_PATH, infer, methods=["POST"]),
        Route(VERSION_INFER_PATH, infer, methods=["POST"]),
    ]
    app.router.routes[1:1] = infer_routes
    version = importlib.metadata.version("mlsteward")

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        ok, _ = service.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        try:
            service.access.check(request.headers, Permission.READ)
        except Refused as exc:
            return _refused(exc)
        return JSONResponse({"name": "mlsteward", "version": version, "extensions": []})

    def served(request: Request) -> tuple[ModelSlot, ServedModel | None] | Response:
        """The model (and the version the path names, if any), or the refusal to answer."""
        model = request.path_params["model"]
        try:
            service.access.check(request.headers, Permission.READ, model)
        except Refused as exc:
            return _refused(exc)
        slot = service.slots.get(model)
        if slot is None:
            return _error(404, unknown_model_message(model, service))
        pinned = request.path_params.get("version")
        if pinned is None:
            return slot, slot.arms.champion
        arms = slot.arms
        arm = pinned_arm(arms, pinned)
        if arm is None:
            return _error(404, unserved_version(model, pinned, arms).msg)
        return slot, arms.champion if arm == "champion" else arms.challenger

    async def model_metadata(request: Request) -> Response:
        found = served(request)
        if isinstance(found, Response):
            return found
        slot, model = found
        if model is None or model is slot.arms.champion:
            sig = signature(slot) if model is not None else Signature.of(slot, _config_rules(slot))
        else:
            kinds = dict(zip(model.columns, model.kinds, strict=True))
            sig = Signature.of(slot, field_rules(slot.cfg, kinds))
        arms = slot.arms
        versions = [m.version for m in (arms.champion, arms.challenger) if m is not None]
        return JSONResponse(sig.metadata(slot.cfg.name, versions))

    async def model_ready(request: Request) -> Response:
        found = served(request)
        if isinstance(found, Response):
            return found
        slot, _ = found
        if "version" not in request.path_params and not service.serves(slot):
            reasons = "; ".join(sorted(slot.errors.values())) or "its champion is not loaded"
            return _error(503, f"{slot.cfg.name} is not ready: {reasons}")
        return JSONResponse({"name": slot.cfg.name, "ready": True})

    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
    ]
    known = [*infer_routes, *routes]

    async def elsewhere(request: Request) -> Response:
        """Any other ``/v2`` request: a wrong method (405) or path (404), as the protocol's
        clients read errors."""
        path, method = request.url.path, request.method
        for route in known:
            if route.path_regex.match(path) and route.methods:
                allowed = ", ".join(sorted(route.methods - {"HEAD"}))
                return _error(405, f"{method} {path}: use {allowed}", {"Allow": allowed})
        return _error(404, f"{method} {path}: no such route of the Open Inference Protocol")

    app.router.routes.extend([*routes, Route("/v2/{rest:path}", elsewhere)])
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document with the protocol's routes in it (see ``oip_openapi``)."""
        if app.openapi_schema is None:
            schema = plain_openapi()
            schema["paths"] = {**schema["paths"], **oip_paths(service.access.enabled)}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _config_rules(slot: ModelSlot) -> dict[str, FieldRule]:
    """Feature rules by the config's types alone, for a model with no champion loaded yet."""
    return field_rules(slot.cfg, {})


def _infer_handler(
    service: Service, signature: Callable[[ModelSlot], Signature]
) -> Callable[[Request], Awaitable[Response]]:
    """The infer routes' handler: the same order of checks as ``/v1``'s predict (token before
    anything is read, the model before the body, the body's size as it arrives)."""

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        params = request.path_params
        model = params["model"]
        slot = service.slots.get(model)
        try:  # before anything else is looked at or read
            principal = service.access.check(request.headers, Permission.PREDICT, model)
            pinned = params.get("version")
            if pinned is not None and slot is not None:
                # a version chosen by the caller steers rows as routing keys do
                service.access.may_route(principal, model)
        except Refused as exc:
            count_refused(service, model if slot else "", exc.response.status_code)
            return refused_unread(request, _refused(exc))
        if slot is None:
            count_refused(service, "", 404)
            return refused_unread(request, _error(404, unknown_model_message(model, service)))
        sig: Signature | None = None
        try:
            raw = await read_body(request, slot.cfg.serving.max_body_bytes)
            encoding = request.headers.get("content-encoding", "identity").lower()
            if encoding != "identity":
                msg = f"{encoding} is not supported; send the body uncompressed"
                raise Rejected(400, [FieldError(("header", "Content-Encoding"), msg,
                                                "unsupported")])  # fmt: skip
            if slot.arms.champion is None:
                msg = f"{model} has no champion to serve"
                raise Rejected(503, [FieldError(("body",), msg, "unavailable")])
            sig = signature(slot)
            req, binary = parse_request(raw, request.headers.get(HEADER_LENGTH))
            values, rows = read_tensors(req, binary, sig)
            body, outputs = predict_request(req, values, rows, sig)
            if body.routing_keys is not None:
                service.access.may_route(principal, model)
            job = make_job(slot, body, False, pinned)
            result = await score(service, model, job)
        except BodyTooLarge as exc:
            count_refused(service, model, 413)
            return closing(_error(413, _message(exc.errors, "")))
        except RequestRejected as exc:
            status = _status(exc.status)
            count_refused(service, model, status)
            entity = sig.entity if sig is not None else slot.cfg.source.entity
            return _error(status, _message(exc.errors, entity))
        except Refused as exc:
            count_refused(service, model, exc.response.status_code)
            return _refused(exc)
        content = orjson.dumps(
            answer(model, job.request_id, req.get("id"), result.predictions, result.arms, outputs)
        )
        count_answer(service, model, result.arms, time.perf_counter() - started)
        return Response(content, media_type="application/json")

    return infer

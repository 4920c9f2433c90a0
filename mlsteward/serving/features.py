"""Feature rows for a request: looked up in the Feast online store, or checked from the body.

Both paths produce plain dicts (feature name -> Python value) and, for anything wrong, a list
of :class:`FieldError` naming the row, the field and the rule, in the same rule vocabulary as
the ingestion contract (``mlsteward.data.contract``), so a client reads one kind of message
whichever way a bad value reached us.

Online lookups read the model's feature service with ``features.online.OnlineReader`` (the
online store's own read, a third of ``get_online_features``' cost for one id), one call for
every id of a micro-batch; features are taken by name. An id with no value for any feature is
unknown (404); an id with some features missing, where the contract does not allow nulls, is a
422 naming each.

A request may also carry the sensitive columns that are not features (the config's
``sensitive_attributes`` outside ``features``): in each instance, or in ``attributes`` beside
entity ids (the online store holds features only). They are checked by their contract rules,
taken out of the rows before routing and scoring, and only written to the prediction log, where
monitoring groups by them. Each is optional: absent or null, it is logged as missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.data import FeatureSpec
from mlsteward.data.contract import RULE_CATEGORY, RULE_DTYPE, RULE_NOT_NULL, RULE_RANGE
from mlsteward.features.online import OnlineReader

RULE_UNKNOWN_FIELD = "unknown_field"
RULE_ENTITY_TYPE = "entity_type"
TEXT = "text"
"""The kind of a sensitive column whose type the config leaves open: a string, number or
boolean, logged as its text (the log's column needs one type)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class FieldError:
    """One broken rule, as FastAPI reports validation errors (``loc``, ``msg``, ``type``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def to_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class RequestRejected(Exception):
    """A request we refuse, with its HTTP status and the errors to report."""

    def __init__(self, status: int, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.msg for e in errors))
        self.status = status
        self.errors = errors


@dataclass(frozen=True)
class FieldRule:
    name: str
    kind: str  # int | float | bool | category | text (a sensitive column of open type)
    minimum: float | None
    maximum: float | None
    categories: frozenset[str] | None
    nullable: bool


def field_rules(cfg: ModelConfig, kinds: Mapping[str, str]) -> dict[str, FieldRule]:
    """Rules per feature: the config's bounds, with each type as the served version recorded it
    (a config may leave types to inference at ingestion)."""

    def rule(spec: FeatureSpec) -> FieldRule:
        return FieldRule(
            name=spec.name,
            kind=kinds.get(spec.name) or spec.dtype or "float",
            minimum=spec.min,
            maximum=spec.max,
            categories=frozenset(spec.categories) if spec.categories else None,
            nullable=spec.nullable,
        )

    return {spec.name: rule(spec) for spec in cfg.features}


def attribute_rules(cfg: ModelConfig) -> dict[str, FieldRule]:
    """Rules per sensitive column that is not a feature, as a request may give it: the
    config's, always optional; a column without a declared type takes the categories' (then
    category), the bounds' (then float) or else text."""

    def kind(spec: FeatureSpec) -> str:
        if spec.dtype is not None:
            return spec.dtype
        if spec.categories is not None:
            return "category"
        return "float" if spec.min is not None or spec.max is not None else TEXT

    return {
        spec.name: FieldRule(
            name=spec.name,
            kind=kind(spec),
            minimum=spec.min,
            maximum=spec.max,
            categories=frozenset(spec.categories) if spec.categories else None,
            nullable=True,
        )
        for spec in cfg.attribute_columns
    }


def log_kind(rule: FieldRule) -> str:
    """The prediction log's type of a column with this rule."""
    return "string" if rule.kind == TEXT else rule.kind


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value(rule: FieldRule, value: Any, loc: tuple[str | int, ...]) -> FieldError | None:
    """The first rule ``value`` breaks, or None. JSON types are taken strictly: a number is
    never accepted as text or a boolean, so a client's type bug is reported, not guessed at."""
    if value is None:
        if rule.nullable:
            return None
        return FieldError(loc, f"{rule.name}: a value is required (not nullable)", RULE_NOT_NULL)
    if rule.kind in ("int", "float"):
        if not _number(value) or (isinstance(value, float) and not math.isfinite(value)):
            return FieldError(
                loc, f"{rule.name}: expected a finite number, got {value!r}", RULE_DTYPE
            )
        if rule.kind == "int" and isinstance(value, float) and not value.is_integer():
            return FieldError(loc, f"{rule.name}: expected an integer, got {value!r}", RULE_DTYPE)
        if (rule.minimum is not None and value < rule.minimum) or (
            rule.maximum is not None and value > rule.maximum
        ):
            return FieldError(
                loc,
                f"{rule.name}: {value!r} is outside [{rule.minimum}, {rule.maximum}]",
                RULE_RANGE,
            )
        return None
    if rule.kind == "bool":
        if not isinstance(value, bool):
            return FieldError(
                loc, f"{rule.name}: expected true or false, got {value!r}", RULE_DTYPE
            )
        return None
    if rule.kind == TEXT:
        if isinstance(value, str | bool) or _number(value):
            return None
        return FieldError(
            loc, f"{rule.name}: expected a string, number or boolean, got {value!r}", RULE_DTYPE
        )
    if not isinstance(value, str):
        return FieldError(loc, f"{rule.name}: expected a string, got {value!r}", RULE_DTYPE)
    if rule.categories is not None and value not in rule.categories:
        return FieldError(
            loc,
            f"{rule.name}: {value!r} is not one of {sorted(rule.categories)}",
            RULE_CATEGORY,
        )
    return None


def check_instances(
    rules: Mapping[str, FieldRule],
    instances: Sequence[Mapping[str, Any]],
    attributes: Mapping[str, FieldRule] | None = None,
) -> list[FieldError]:
    """Every broken rule of every row: missing, extra, mistyped and out-of-range fields; a
    sensitive column in ``attributes`` is not extra, and is checked by its own rule."""
    errors: list[FieldError] = []
    for i, row in enumerate(instances):
        base: tuple[str | int, ...] = ("body", "instances", i)
        for name in row:
            if name not in rules:
                rule = attributes.get(name) if attributes else None
                if rule is None:
                    msg = f"{name}: not a feature of this model"
                    if attributes:
                        msg += f" nor one of its sensitive columns {sorted(attributes)}"
                    errors.append(FieldError((*base, name), msg, RULE_UNKNOWN_FIELD))
                else:
                    err = check_value(rule, row[name], (*base, name))
                    if err is not None:
                        errors.append(err)
        for name, rule in rules.items():
            if name not in row:
                if not rule.nullable:
                    errors.append(
                        FieldError((*base, name), f"{name}: field required", RULE_NOT_NULL)
                    )
                continue
            err = check_value(rule, row[name], (*base, name))
            if err is not None:
                errors.append(err)
    return errors


def check_attributes(
    rules: Mapping[str, FieldRule], rows: Sequence[Mapping[str, Any]]
) -> list[FieldError]:
    """Every broken rule of ``attributes``, the sensitive columns given beside entity ids."""
    errors: list[FieldError] = []
    for i, row in enumerate(rows):
        for name, value in row.items():
            loc: tuple[str | int, ...] = ("body", "attributes", i, name)
            rule = rules.get(name)
            if rule is None:
                known = sorted(rules) if rules else "none"
                msg = f"{name}: not a sensitive column of this model outside its features: {known}"
                errors.append(FieldError(loc, msg, RULE_UNKNOWN_FIELD))
                continue
            err = check_value(rule, value, loc)
            if err is not None:
                errors.append(err)
    return errors


def logged_attributes(rules: Mapping[str, FieldRule], row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's checked sensitive columns as the log stores them (open types as text)."""
    return {
        name: _as_text(value) if rules[name].kind == TEXT else value
        for name, value in row.items()
        if name in rules
    }


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)  # true, 3, 2.5: as the client wrote them


def split_attributes(
    rules: Mapping[str, FieldRule], instances: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Checked instances as (features only, sensitive columns per row); the second is None,
    and the instances are returned as they came, when no row gives a sensitive column."""
    if not any(name in row for row in instances for name in rules):
        return instances, None
    features = [{k: v for k, v in row.items() if k not in rules} for row in instances]
    return features, [logged_attributes(rules, row) for row in instances]


class OnlineFeatures:
    """Lookups of one model's feature service in the Feast online store."""

    def __init__(self, cfg: ModelConfig, store: Any) -> None:
        self.cfg = cfg
        self.reader = OnlineReader.for_model(store, cfg)
        self.names = tuple(cfg.feature_names)
        key_type = self.reader.key_type
        self.int_entity = key_type is None or key_type.name.startswith("INT")

    def entity_key(self, value: Any, loc: tuple[str | int, ...]) -> Any:
        """The id as the store keys it; a wrong JSON type is a 422, not a miss."""
        if self.int_entity:
            if isinstance(value, int) and not isinstance(value, bool):
                if INT64_MIN <= value <= INT64_MAX:
                    return value
                # Caught here, per request: in the store's lookup it would fail the whole
                # micro-batch, other callers' requests with it.
                raise RequestRejected(
                    422,
                    [FieldError(loc, f"entity id {value}: outside the 64-bit integer range "
                                "entity keys are stored in", RULE_ENTITY_TYPE)],
                )  # fmt: skip
            raise RequestRejected(
                422,
                [FieldError(loc, f"entity id {value!r}: expected an integer", RULE_ENTITY_TYPE)],
            )
        if isinstance(value, str) and value:
            return value
        raise RequestRejected(
            422, [FieldError(loc, f"entity id {value!r}: expected a string", RULE_ENTITY_TYPE)]
        )

    def fetch(self, ids: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Feature values per id in request order; None for an id the store has nothing for
        (no row, or a row with no value for any feature)."""
        names = self.names
        out: list[dict[str, Any] | None] = []
        for row in self.reader.read(list(ids)):
            if row is None or all(row[name] is None for name in names):
                out.append(None)
            else:
                out.append({name: row[name] for name in names})
        return out


def missing_online(
    rules: Mapping[str, FieldRule], row: Mapping[str, Any], loc: tuple[str | int, ...]
) -> list[FieldError]:
    """Features the online store lacks for a known id, where the contract needs a value."""
    return [
        FieldError(
            (*loc, name),
            f"{name}: no online value for this entity (not materialized or expired)",
            RULE_NOT_NULL,
        )
        for name, rule in rules.items()
        if row.get(name) is None and not rule.nullable
    ]

"""Sensitive columns that are not features, as a predict request may carry them: their rules,
the checks naming each field, and the split that keeps them away from the model."""

from __future__ import annotations

from typing import Any

from mlsteward.config.models import ModelConfig
from mlsteward.serving.features import (
    TEXT,
    attribute_rules,
    check_attributes,
    check_instances,
    field_rules,
    log_kind,
    logged_attributes,
    split_attributes,
)


def _config(**extra: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "stays",
            "task": "regression",
            "source": {"path": "stays.parquet", "entity": "patient_id"},
            "label": "days",
            "features": [{"name": "age", "dtype": "int", "min": 0, "max": 120}, "sex"],
            "sensitive_attributes": [
                "sex",
                {"column": "race", "categories": ["a", "b"]},
                {"column": "income", "min": 0},
                {"column": "insured", "dtype": "bool"},
                {"column": "region"},
            ],
            **extra,
        }
    )


CFG = _config()
RULES = attribute_rules(CFG)
FEATURES = field_rules(CFG, {"age": "int", "sex": "category"})


def test_only_columns_outside_the_features_get_rules_each_optional_and_typed() -> None:
    assert list(RULES) == ["race", "income", "insured", "region"]  # sex is a feature
    kinds = {name: rule.kind for name, rule in RULES.items()}
    assert kinds == {"race": "category", "income": "float", "insured": "bool", "region": TEXT}
    assert all(rule.nullable for rule in RULES.values())
    assert {n: log_kind(r) for n, r in RULES.items()}["region"] == "string"


def test_instances_may_carry_them_and_each_wrong_value_names_its_field() -> None:
    rows = [
        {"age": 40, "sex": "F", "race": "a", "income": 10.5, "insured": True, "region": 7},
        {"age": 41, "sex": "M"},
        {"age": 42, "sex": "M", "race": None},
        {"age": 43, "sex": "F", "race": "c", "income": -1, "insured": "yes", "region": [1]},
        {"age": 44, "sex": "F", "religion": "x"},
    ]
    errors = check_instances(FEATURES, rows, RULES)
    found = [(e.loc, e.type) for e in errors]
    assert found == [
        (("body", "instances", 3, "race"), "allowed_category"),
        (("body", "instances", 3, "income"), "range"),
        (("body", "instances", 3, "insured"), "dtype"),
        (("body", "instances", 3, "region"), "dtype"),
        (("body", "instances", 4, "religion"), "unknown_field"),
    ]
    assert errors[2].msg == "insured: expected true or false, got 'yes'"
    assert errors[3].msg == "region: expected a string, number or boolean, got [1]"
    assert "nor one of its sensitive columns ['income', 'insured', 'race', 'region']" in (
        errors[4].msg
    )
    # without sensitive columns of its own, a model refuses the name as it always did
    [unknown] = check_instances(FEATURES, [{"age": 1, "sex": "F", "race": "a"}])
    assert unknown.msg == "race: not a feature of this model"


def test_beside_entity_ids_they_are_checked_alike() -> None:
    errors = check_attributes(RULES, [{"race": "a"}, {"race": 3, "religion": "x"}, {}])
    assert [(e.loc, e.type) for e in errors] == [
        (("body", "attributes", 1, "race"), "dtype"),
        (("body", "attributes", 1, "religion"), "unknown_field"),
    ]
    assert "outside its features: ['income', 'insured', 'race', 'region']" in errors[1].msg
    [none] = check_attributes({}, [{"race": "a"}])
    assert none.msg.endswith("outside its features: none")


def test_split_keeps_them_away_from_the_model_and_logs_open_types_as_text() -> None:
    rows = [
        {"age": 40, "sex": "F", "race": "a", "region": 7},
        {"age": 41, "sex": "M", "region": True},
        {"age": 42, "sex": "M"},
    ]
    features, logged = split_attributes(RULES, rows)
    assert features == [{"age": 40, "sex": "F"}, {"age": 41, "sex": "M"}, {"age": 42, "sex": "M"}]
    assert logged == [{"race": "a", "region": "7"}, {"region": "true"}, {}]
    plain = [{"age": 40, "sex": "F"}]
    assert split_attributes(RULES, plain) == (plain, None)  # nothing given: rows untouched
    assert logged_attributes(RULES, {"region": None, "income": 3}) == {"region": None, "income": 3}

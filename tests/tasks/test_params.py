"""Request parameters: the JSON Schema the API publishes (`params_schema`) says exactly what `parse_params` accepts."""

from __future__ import annotations

from typing import Any

import pytest

from squeezer.generation.params import GenerationParams
from squeezer.tasks import TASKS
from squeezer.tasks.base import InputError, params_schema, parse_params
from squeezer.tasks.seq2seq import Seq2SeqParams

CLASSES = sorted({task.params_type for task in TASKS.values()} | {GenerationParams, Seq2SeqParams}, key=lambda c: c.__name__)
STEP = {"integer": 1, "number": 1e-6}
# What another field must say for a value to be judged on its own (a cross-field rule otherwise refuses it).
ALONG = {(GenerationParams, "num_return_sequences"): {"do_sample": True}}


def accepted(cls: type, name: str, value: Any) -> bool:
    try:
        parse_params(cls, {**ALONG.get((cls, name), {}), name: value})
    except InputError:
        return False
    return True


def edges(schema: dict[str, Any]) -> list[tuple[Any, bool]]:
    """Values on and just past each documented bound, with whether the schema allows them."""
    step, out = STEP[schema["type"]], []
    if "minimum" in schema:
        out += [(schema["minimum"], True), (schema["minimum"] - step, False)]
    if "maximum" in schema:
        out += [(schema["maximum"], True), (schema["maximum"] + step, False)]
    if "exclusiveMinimum" in schema:
        out += [(schema["exclusiveMinimum"], False), (schema["exclusiveMinimum"] + step, True)]
    return out


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_documented_bound_and_choice_is_what_validation_enforces(cls: type) -> None:
    """On a bound and one step past it, and for each choice and a value outside them, the schema and the parser agree."""
    checked = 0  # bounds and choice lists tried
    for name, schema in params_schema(cls)["properties"].items():
        if "enum" in schema:
            assert all(accepted(cls, name, value) for value in schema["enum"]), name
            assert not accepted(cls, name, "not-a-choice"), name
            checked += 1
        for value, allowed in edges(schema) if schema.get("type") in STEP else []:
            assert accepted(cls, name, value) == allowed, (name, value, allowed)
            checked += 1
        if schema.get("type") in STEP:
            assert not accepted(cls, name, "7"), name  # a string is not a number, whatever the document says
    assert checked or cls.__name__ in {"SimilarityParams", "ZeroShotParams"}  # the two with no bound or choice


def test_the_schema_lists_every_field_with_its_type_and_default() -> None:
    schema = params_schema(GenerationParams)["properties"]
    assert list(schema) == [f for f in GenerationParams.__dataclass_fields__]
    assert schema["top_p"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "must be in (0, 1]"}
    assert schema["num_return_sequences"]["default"] == 1 and schema["do_sample"] == {"type": "boolean", "default": False}
    assert schema["stop"]["anyOf"][1]["type"] == "array"
    aggregation = params_schema(TASKS["token-classification"].params_type)["properties"]["aggregation_strategy"]
    assert aggregation["default"] == "simple" and "first" in aggregation["enum"]

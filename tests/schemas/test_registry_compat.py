"""JSON Schema compatibility rules, both directions, no broker and no database."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import BaseModel

from schemas.events import FeedbackEvent
from schemas.registry import (
    CompatibilityChecker,
    CompatibilityLevel,
    InvalidSchema,
    Schema,
    SubjectVersion,
    json_incompatibilities,
)
from schemas.registry._canonical import fingerprint, validate


def obj(props: dict[str, Any], required: list[str] | None = None, closed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "required": required or []}
    if closed:
        out["additionalProperties"] = False
    return out


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
OPT_STR = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}


class InnerV1(BaseModel):
    x: int


class InnerV2(BaseModel):
    x: float


class OuterV1(BaseModel):
    inner: InnerV1
    items: list[InnerV1] = []


class OuterV2(BaseModel):
    inner: InnerV2
    items: list[InnerV2] = []


# (case, old, new, backward compatible?, forward compatible?)
CASES: list[tuple[str, Any, Any, bool, bool]] = [
    ("identical", obj({"a": STR}, ["a"]), obj({"a": STR}, ["a"]), True, True),
    ("add optional property, open model", obj({"a": STR}), obj({"a": STR, "b": OPT_STR}), True, True),
    ("add required property", obj({"a": STR}), obj({"a": STR, "b": STR}, ["b"]), False, True),
    (
        "add required property with default",
        obj({"a": STR}),
        obj({"a": STR, "b": {**STR, "default": "x"}}, ["b"]),
        False,
        True,
    ),
    ("make property required", obj({"a": STR}), obj({"a": STR}, ["a"]), False, True),
    (
        "add optional property, closed model",
        obj({"a": STR}, closed=True),
        obj({"a": STR, "b": STR}, closed=True),
        True,
        False,
    ),
    (
        "remove property, closed model",
        obj({"a": STR, "b": STR}, closed=True),
        obj({"a": STR}, closed=True),
        False,
        True,
    ),
    ("remove property, open model", obj({"a": STR, "b": STR}), obj({"a": STR}), True, True),
    ("close the content model", obj({"a": STR}), obj({"a": STR}, closed=True), False, True),
    ("change type string -> integer", obj({"a": STR}), obj({"a": INT}), False, False),
    ("widen integer -> number", obj({"a": INT}), obj({"a": NUM}), True, False),
    ("add a type to a union", {"type": "string"}, {"type": ["string", "null"]}, True, False),
    ("add enum value", {"enum": ["a", "b"]}, {"enum": ["a", "b", "c"]}, True, False),
    (
        "remove enum value",
        {"type": "string", "enum": ["a", "b"]},
        {"type": "string", "enum": ["a"]},
        False,
        True,
    ),
    ("change const", {"const": "v1"}, {"const": "v2"}, False, False),
    (
        "narrow maxLength",
        {"type": "string", "maxLength": 10},
        {"type": "string", "maxLength": 5},
        False,
        True,
    ),
    ("raise minLength", {"type": "string"}, {"type": "string", "minLength": 1}, False, True),
    ("raise minimum", {"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 1}, False, True),
    (
        "lower maximum",
        {"type": "number", "maximum": 1},
        {"type": "number", "exclusiveMaximum": 1},
        False,
        True,
    ),
    ("add pattern", {"type": "string"}, {"type": "string", "pattern": "^a"}, False, True),
    ("nested object type narrowed", obj({"o": obj({"n": NUM})}), obj({"o": obj({"n": INT})}), False, True),
    ("array items narrowed", {"type": "array", "items": NUM}, {"type": "array", "items": INT}, False, True),
    (
        "array maxItems added",
        {"type": "array", "items": STR},
        {"type": "array", "items": STR, "maxItems": 3},
        False,
        True,
    ),
    ("optional -> nullable anyOf", obj({"a": STR}), obj({"a": OPT_STR}), True, False),
    (
        "drop an anyOf branch",
        {"anyOf": [STR, INT, {"type": "null"}]},
        {"anyOf": [STR, {"type": "null"}]},
        False,
        True,
    ),
    ("$defs/$ref widened (pydantic)", OuterV1.model_json_schema(), OuterV2.model_json_schema(), True, False),
    ("anything -> empty schema", obj({"a": STR}, ["a"]), {}, True, False),
]


@pytest.mark.parametrize(("case", "old", "new", "backward", "forward"), CASES, ids=[c[0] for c in CASES])
def test_rule(case: str, old: Any, new: Any, backward: bool, forward: bool) -> None:
    back = json_incompatibilities(new, old, reader_name="new", writer_name="old")
    fwd = json_incompatibilities(old, new, reader_name="old", writer_name="new")
    assert (not back) is backward, back
    assert (not fwd) is forward, fwd
    for message in back + fwd:
        assert message.startswith("#"), message  # every message names the path


def test_messages_name_path_and_change() -> None:
    old = obj({"user": obj({"age": INT, "name": STR}, ["name"])})
    new = obj({"user": obj({"age": STR, "name": STR, "email": STR}, ["name", "email"])})
    messages = json_incompatibilities(new, old, reader_name="the new schema", writer_name="version 1")
    assert any(
        m.startswith("#/properties/user/properties/age: type narrowed") and "integer" in m for m in messages
    )
    assert any(m.startswith("#/properties/user/required: property 'email' is required") for m in messages)
    assert len(messages) == 2


def test_enum_messages_list_removed_values() -> None:
    messages = json_incompatibilities({"enum": ["up"]}, {"enum": ["up", "down"]})
    assert messages == ['#: value "down" allowed by the writer is rejected by the reader']


def test_strict_open_content_is_confluents_reading() -> None:
    old, new = obj({"a": STR}), obj({"a": STR, "b": OPT_STR})
    assert json_incompatibilities(new, old) == []
    strict = json_incompatibilities(new, old, strict_open_content=True)
    assert len(strict) == 1 and "open content model" in strict[0]
    # a property with an unconstrained schema is fine even for the strict reading
    assert json_incompatibilities(obj({"a": STR, "b": {}}), old, strict_open_content=True) == []


def test_additional_properties_schema_checks_added_property() -> None:
    old = {"type": "object", "properties": {}, "additionalProperties": INT}
    assert json_incompatibilities(obj({"n": NUM}), old) == []
    assert json_incompatibilities(obj({"n": STR}), old) != []


def test_recursive_schemas_terminate() -> None:
    def tree(leaf: str) -> dict[str, Any]:
        return {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "value": {"type": leaf},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                        "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                    },
                }
            },
            "$ref": "#/$defs/Node",
        }

    assert json_incompatibilities(tree("integer"), tree("integer")) == []
    assert json_incompatibilities(tree("number"), tree("integer")) == []
    assert json_incompatibilities(tree("integer"), tree("number")) == [
        "#/properties/value: type narrowed: number written by the writer is not accepted by the reader "
        "(accepts integer)"
    ]


def test_feedback_event_evolution() -> None:
    v1 = FeedbackEvent.model_json_schema()
    assert json_incompatibilities(v1, copy.deepcopy(v1)) == []
    v2 = copy.deepcopy(v1)
    v2["properties"]["comment"] = {
        "anyOf": [{"type": "string", "maxLength": 500}, {"type": "null"}],
        "default": None,
    }
    assert json_incompatibilities(v2, v1) == [] and json_incompatibilities(v1, v2) == []
    v3 = copy.deepcopy(v2)
    v3["required"].append("comment")
    assert json_incompatibilities(v3, v1) == [
        "#/required: property 'comment' is required by the reader but not by the writer"
    ]
    v4 = copy.deepcopy(v1)
    v4["properties"]["thumbs"]["anyOf"][0]["enum"] = ["up"]
    assert json_incompatibilities(v4, v1) != [] and json_incompatibilities(v1, v4) == []


# -- levels --------------------------------------------------------------------------------------------
def versions(*schemas: Any) -> list[SubjectVersion]:
    return [SubjectVersion("s", i + 1, i + 1, Schema(json.dumps(s))) for i, s in enumerate(schemas)]


V1 = obj({"x": STR})
V2: dict[str, Any] = obj({})  # drops x (open model: backward compatible)
V3 = obj({"x": INT})  # re-adds x with another type: fine against V2, not against V1


@pytest.mark.parametrize(
    ("level", "compatible"),
    [
        (CompatibilityLevel.NONE, True),
        (CompatibilityLevel.BACKWARD, True),
        (CompatibilityLevel.BACKWARD_TRANSITIVE, False),
        (CompatibilityLevel.FORWARD, True),
        (CompatibilityLevel.FORWARD_TRANSITIVE, False),
        (CompatibilityLevel.FULL, True),
        (CompatibilityLevel.FULL_TRANSITIVE, False),
    ],
)
def test_levels_and_transitivity(level: CompatibilityLevel, compatible: bool) -> None:
    messages = CompatibilityChecker()(level, Schema(json.dumps(V3)), versions(V1, V2))
    assert (not messages) is compatible, messages
    if not compatible:
        assert all(m.startswith("version 1 (") for m in messages)


def test_level_directions() -> None:
    old, new = versions(obj({"a": INT})), Schema(json.dumps(obj({"a": NUM})))
    check = CompatibilityChecker()
    assert check(CompatibilityLevel.BACKWARD, new, old) == []
    forward = check(CompatibilityLevel.FORWARD, new, old)
    assert forward and forward[0].startswith("version 1 (forward): #/properties/a: type narrowed")
    assert check(CompatibilityLevel.FULL, new, old) == forward


def test_level_parse() -> None:
    assert CompatibilityLevel.parse("full_transitive") is CompatibilityLevel.FULL_TRANSITIVE
    with pytest.raises(Exception, match="Invalid compatibility level"):
        CompatibilityLevel.parse("SIDEWAYS")


@pytest.mark.parametrize("schema_type", ["AVRO", "PROTOBUF"])
def test_other_types_compatible_only_when_identical(schema_type: str) -> None:
    text = '{"type": "record", "name": "A", "fields": []}' if schema_type == "AVRO" else 'syntax = "proto3";'
    other = '{"type": "record", "name": "B", "fields": []}' if schema_type == "AVRO" else 'syntax = "proto2";'
    check = CompatibilityChecker()
    old = [SubjectVersion("s", 1, 1, Schema(text, schema_type))]
    assert check(CompatibilityLevel.BACKWARD, Schema(text, schema_type), old) == []
    assert check(CompatibilityLevel.BACKWARD, Schema(other, schema_type), old) != []
    assert check(CompatibilityLevel.NONE, Schema(other, schema_type), old) == []
    assert check(CompatibilityLevel.BACKWARD, Schema("{}", "JSON"), old) != []


# -- validation and canonical form ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"type": 12}',
        '{"properties": {"a": {"$ref": "#/$defs/Missing"}}}',
        '{"minLength": -1}',
        "",
    ],
)
def test_invalid_json_schemas(text: str) -> None:
    with pytest.raises(InvalidSchema):
        validate(Schema(text, "JSON"))


def test_valid_schemas_and_fingerprint() -> None:
    validate(Schema(json.dumps(FeedbackEvent.model_json_schema()), "JSON"))
    validate(Schema("true", "JSON"))
    validate(Schema('"string"', "AVRO"))
    a = Schema('{"type": "object", "properties": {"a": {"type": "string"}}}')
    b = Schema('{"properties":{"a":{"type":"string"}},\n "type":"object"}')
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(Schema(a.text, "AVRO"))
    with pytest.raises(InvalidSchema):
        validate(Schema("{}", "XML"))


def test_enum_writer_against_bounded_reader() -> None:
    old = Schema(json.dumps({"enum": [1, 2]}))
    new = Schema(json.dumps({"type": "number", "minimum": 1}))
    check = CompatibilityChecker()
    assert check(CompatibilityLevel.BACKWARD, new, [SubjectVersion("s", 1, 1, old)]) == []
    assert check(CompatibilityLevel.FORWARD, new, [SubjectVersion("s", 1, 1, old)]) != []

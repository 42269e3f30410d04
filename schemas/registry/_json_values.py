"""Values and types in JSON Schema terms: type names, equality, finite value sets, numeric bounds, and
whether one concrete value passes a (reader) schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol


class Diff(Protocol):
    """What the per-type rules need of a comparison (:class:`schemas.registry._json_diff.Diff`): the
    rules live below it, so they see it through this protocol and import nothing above them."""

    reader_root: Any
    reader_name: str
    writer_name: str
    strict_open_content: bool

    def check(self, reader: Any, writer: Any, path: str) -> list[str]: ...

    def deref(self, node: Any, root: Any) -> Any: ...


ALL_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
Bound = tuple[float, bool]  # (value, exclusive)


def types_of(schema: dict[str, Any]) -> frozenset[str] | None:
    value = schema.get("type")
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(t for t in value if isinstance(t, str))
    return None


def type_matches(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    checks: dict[str, Callable[[Any], bool]] = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return checks.get(name, lambda v: False)(value)


def json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def describe(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any value" if schema is True else "no value"
    if "const" in schema:
        return f"const {json.dumps(schema['const'])}"
    if isinstance(schema.get("enum"), list):
        return f"enum {json.dumps(schema['enum'])}"
    types = types_of(schema)
    return f"type {'/'.join(sorted(types))}" if types else "any type"


def finite_values(writer: dict[str, Any]) -> list[Any] | None:
    """The writer's values when it is a ``const`` or an ``enum`` (minus values its ``type`` forbids)."""
    if "const" in writer:
        values = [writer["const"]]
    elif isinstance(writer.get("enum"), list):
        values = list(writer["enum"])
    else:
        return None
    types = types_of(writer)
    return [v for v in values if types is None or any(type_matches(v, t) for t in types)]


def value_accepted(diff: Diff, reader: Any, value: Any) -> bool:
    reader = diff.deref(reader, diff.reader_root)
    if isinstance(reader, bool) or not isinstance(reader, dict):
        return reader is True
    for keyword in ("anyOf", "oneOf", "allOf"):
        if isinstance(reader.get(keyword), list):
            base = {k: v for k, v in reader.items() if k != keyword}
            branches = [value_accepted(diff, b, value) for b in reader[keyword]]
            return value_accepted(diff, base, value) and (
                all(branches) if keyword == "allOf" else any(branches)
            )
    if "const" in reader and not json_equal(reader["const"], value):
        return False
    if isinstance(reader.get("enum"), list) and not any(json_equal(e, value) for e in reader["enum"]):
        return False
    types = types_of(reader)
    if types is not None and not any(type_matches(value, t) for t in types):
        return False
    if type_matches(value, "number"):
        low, high = lower_bound(reader), upper_bound(reader)
        if low is not None and (value < low[0] or (low[1] and value == low[0])):
            return False
        if high is not None and (value > high[0] or (high[1] and value == high[0])):
            return False
    if isinstance(value, str):
        return bool(reader.get("minLength", 0) <= len(value) <= reader.get("maxLength", len(value)))
    return True


def lower_bound(schema: dict[str, Any]) -> Bound | None:
    return _bound(schema, "minimum", "exclusiveMinimum", max)


def upper_bound(schema: dict[str, Any]) -> Bound | None:
    return _bound(schema, "maximum", "exclusiveMaximum", min)


def _bound(
    schema: dict[str, Any], inclusive: str, exclusive: str, pick: Callable[..., Bound]
) -> Bound | None:
    found: list[Bound] = []
    limit, flag = schema.get(inclusive), schema.get(exclusive)
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        found.append((limit, flag is True))  # draft-4 boolean exclusive flag
    if isinstance(flag, int | float) and not isinstance(flag, bool):
        found.append((flag, True))
    if not found:
        return None
    # the tighter bound; on a tie the exclusive one (True sorts after False for max, before for min)
    return pick(found, key=lambda b: (b[0], b[1] if pick is max else not b[1]))

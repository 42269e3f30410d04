"""Per-type JSON Schema rules used by :class:`schemas.registry._json_diff.JsonDiff`.

Every rule answers one question: does the reader accept all the writer allows? A bound is narrowed when
the reader's is tighter than the writer's (or the writer has none), a set when the reader's is smaller.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from schemas.registry._json_values import ALL_TYPES, Bound, Diff, lower_bound, types_of, upper_bound


@dataclass(slots=True)
class TypeOutcome:
    messages: list[str]
    effective: frozenset[str]

    @property
    def narrowed_to_nothing(self) -> bool:
        return not self.effective

    def includes(self, family: str) -> bool:
        return family in self.effective or (family == "number" and "integer" in self.effective)


def compare_types(diff: Diff, reader: dict[str, Any], writer: dict[str, Any], path: str) -> TypeOutcome:
    r_types, w_declared = types_of(reader), types_of(writer)
    w_types = ALL_TYPES if w_declared is None else w_declared
    if r_types is None:
        return TypeOutcome([], w_types)

    def accepted(t: str) -> bool:
        return t in r_types or (t == "integer" and "number" in r_types)

    rejected = sorted(t for t in w_types if not accepted(t))
    effective = frozenset(t for t in w_types if accepted(t))
    if not rejected:
        return TypeOutcome([], effective)
    if w_declared is None:
        msg = (
            f"{path}: type narrowed: {diff.reader_name} only accepts {'/'.join(sorted(r_types))}, "
            f"{diff.writer_name} does not restrict the type"
        )
    else:
        msg = (
            f"{path}: type narrowed: {'/'.join(rejected)} written by {diff.writer_name} is not accepted "
            f"by {diff.reader_name} (accepts {'/'.join(sorted(r_types))})"
        )
    return TypeOutcome([msg], effective)


# -- bounds --------------------------------------------------------------------------------------------
def _show(bound: Bound | None) -> str:
    return "no bound" if bound is None else f"{'exclusive ' if bound[1] else ''}{bound[0]:g}"


def min_count(
    diff: Diff, reader: dict[str, Any], writer: dict[str, Any], key: str, path: str
) -> list[str]:
    r_value, w_value = reader.get(key, 0), writer.get(key, 0)
    if r_value > w_value:
        return [f"{path}: {key} raised from {w_value} ({diff.writer_name}) to {r_value} ({diff.reader_name})"]
    return []


def max_count(
    diff: Diff, reader: dict[str, Any], writer: dict[str, Any], key: str, path: str
) -> list[str]:
    r_value, w_value = reader.get(key), writer.get(key)
    if r_value is not None and (w_value is None or w_value > r_value):
        shown = "no limit" if w_value is None else w_value
        return [f"{path}: {key} lowered from {shown} ({diff.writer_name}) to {r_value} ({diff.reader_name})"]
    return []


def _changed(
    diff: Diff, reader: dict[str, Any], writer: dict[str, Any], key: str, path: str
) -> list[str]:
    if key in reader and reader[key] != writer.get(key):
        return [
            f"{path}: {key} changed from {json.dumps(writer.get(key))} ({diff.writer_name}) to "
            f"{json.dumps(reader[key])} ({diff.reader_name})"
        ]
    return []


# -- families ------------------------------------------------------------------------------------------
def _looser_low(writer: Bound, reader: Bound) -> bool:
    return writer[0] < reader[0] or (writer[0] == reader[0] and reader[1] and not writer[1])


def _looser_high(writer: Bound, reader: Bound) -> bool:
    return writer[0] > reader[0] or (writer[0] == reader[0] and reader[1] and not writer[1])


def compare_number(diff: Diff, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    for name, get, looser in (("minimum", lower_bound, _looser_low), ("maximum", upper_bound, _looser_high)):
        r_bound, w_bound = get(reader), get(writer)
        if r_bound is not None and (w_bound is None or looser(w_bound, r_bound)):
            out.append(
                f"{path}: {name} narrowed from {_show(w_bound)} ({diff.writer_name}) to "
                f"{_show(r_bound)} ({diff.reader_name})"
            )
    r_mult, w_mult = reader.get("multipleOf"), writer.get("multipleOf")
    if isinstance(r_mult, int | float) and r_mult > 0:
        integers_only = types_of(writer) == frozenset({"integer"}) and float(r_mult) == 1.0
        if not integers_only and not (isinstance(w_mult, int | float) and (w_mult / r_mult).is_integer()):
            out += _changed(diff, reader, writer, "multipleOf", path)
    return out


def compare_string(diff: Diff, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    return (
        min_count(diff, reader, writer, "minLength", path)
        + max_count(diff, reader, writer, "maxLength", path)
        + _changed(diff, reader, writer, "pattern", path)
        + _changed(diff, reader, writer, "format", path)
    )


def _items(schema: dict[str, Any]) -> tuple[list[Any], Any]:
    if isinstance(schema.get("prefixItems"), list):
        return schema["prefixItems"], schema.get("items", True)
    if isinstance(schema.get("items"), list):
        return schema["items"], schema.get("additionalItems", True)
    return [], schema.get("items", True)


def compare_array(diff: Diff, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    (r_prefix, r_rest), (w_prefix, w_rest) = _items(reader), _items(writer)
    out: list[str] = []
    for i in range(max(len(r_prefix), len(w_prefix))):
        r_item = r_prefix[i] if i < len(r_prefix) else r_rest
        w_item = w_prefix[i] if i < len(w_prefix) else w_rest
        out += diff.check(r_item, w_item, f"{path}/items/{i}")
    out += diff.check(r_rest, w_rest, f"{path}/items")
    out += min_count(diff, reader, writer, "minItems", path) + max_count(
        diff, reader, writer, "maxItems", path
    )
    if reader.get("uniqueItems") is True and writer.get("uniqueItems") is not True:
        out.append(f"{path}: uniqueItems added by {diff.reader_name}")
    return out


def pattern_schema(patterns: dict[str, Any], name: str) -> Any | None:
    """The first ``patternProperties`` schema whose regex matches ``name`` (None if none does)."""
    for pattern, schema in patterns.items():
        try:
            if re.search(pattern, name):
                return schema
        except re.error:
            continue
    return None

"""Object rules of the JSON Schema comparison: properties, ``required`` and the content model.

A *closed* content model (``additionalProperties: false``) rejects names it does not declare, an *open*
one accepts them with any value. Hence, for a reader of a writer's data:

* a property the writer declares and the reader dropped is fine only if the reader's content model
  still accepts it (open, or an ``additionalProperties``/``patternProperties`` schema that does);
* a property the reader added is fine if the writer's model is closed (the writer never wrote it), is
  checked against the writer's ``additionalProperties`` schema if it has one, and under an open writer
  model is fine unless ``strict_open_content`` (Confluent's reading) asks otherwise;
* every name the reader requires must be required by the writer too.
"""

from __future__ import annotations

from typing import Any

from schemas.registry._json_rules import max_count, min_count, pattern_schema
from schemas.registry._json_values import Diff


def _pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _is_open(schema: Any) -> bool:
    return schema is True or schema == {}


def _dependencies(schema: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in ("dependencies", "dependentRequired"):
        for name, needs in (schema.get(key) or {}).items():
            if isinstance(needs, list):
                out.setdefault(name, []).extend(needs)
    return out


def compare_object(diff: Diff, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    r_props: dict[str, Any] = reader.get("properties") or {}
    w_props: dict[str, Any] = writer.get("properties") or {}
    r_patterns: dict[str, Any] = reader.get("patternProperties") or {}
    w_patterns: dict[str, Any] = writer.get("patternProperties") or {}
    r_extra, w_extra = reader.get("additionalProperties", True), writer.get("additionalProperties", True)
    out: list[str] = []

    for name in w_props:
        where = f"{path}/properties/{_pointer(name)}"
        if name in r_props:
            out += diff.check(r_props[name], w_props[name], where)
            continue
        target = pattern_schema(r_patterns, name)
        target = r_extra if target is None else target
        if target is False:
            out.append(
                f"{where}: property '{name}' of {diff.writer_name} was removed and {diff.reader_name} "
                "has a closed content model (additionalProperties false)"
            )
        else:
            out += diff.check(target, w_props[name], where)

    for name in r_props:
        if name in w_props:
            continue
        where = f"{path}/properties/{_pointer(name)}"
        target = pattern_schema(w_patterns, name)
        target = w_extra if target is None else target
        if target is False:
            continue  # the writer never wrote this name
        if not _is_open(target):
            out += diff.check(r_props[name], target, where)
        elif diff.strict_open_content and diff.check(r_props[name], True, where):
            out.append(
                f"{where}: property '{name}' added to the open content model of {diff.writer_name}, "
                "whose data may hold any value under that name"
            )

    w_required = set(writer.get("required") or [])
    for name in reader.get("required") or []:
        if name not in w_required:
            out.append(
                f"{path}/required: property '{name}' is required by {diff.reader_name} but not by "
                f"{diff.writer_name}"
            )

    out += _content_model(diff, reader, writer, path, r_extra, w_extra)
    out += _pattern_properties(diff, r_patterns, w_patterns, r_extra, w_extra, path)
    out += min_count(diff, reader, writer, "minProperties", path)
    out += max_count(diff, reader, writer, "maxProperties", path)
    w_deps = _dependencies(writer)
    for name, needs in _dependencies(reader).items():
        missing = sorted(set(needs) - set(w_deps.get(name, [])) - w_required)
        if missing:
            out.append(
                f"{path}: {diff.reader_name} requires {missing} whenever '{name}' is present, "
                f"{diff.writer_name} does not"
            )
    return out


def _content_model(
    diff: Diff, reader: dict[str, Any], writer: dict[str, Any], path: str, r_extra: Any, w_extra: Any
) -> list[str]:
    if w_extra is False or _is_open(r_extra):
        return []
    if r_extra is False:
        return [
            f"{path}: {diff.reader_name} closes the content model (additionalProperties false) that "
            f"{diff.writer_name} leaves open"
        ]
    return diff.check(r_extra, w_extra, f"{path}/additionalProperties")


def _pattern_properties(
    diff: Diff,
    r_patterns: dict[str, Any],
    w_patterns: dict[str, Any],
    r_extra: Any,
    w_extra: Any,
    path: str,
) -> list[str]:
    out: list[str] = []
    for pattern, schema in r_patterns.items():
        where = f"{path}/patternProperties/{_pointer(pattern)}"
        if pattern in w_patterns:
            out += diff.check(schema, w_patterns[pattern], where)
        elif w_extra is not False and (not _is_open(w_extra) or diff.strict_open_content):
            out += diff.check(schema, w_extra, where)
    for pattern, schema in w_patterns.items():
        if pattern in r_patterns:
            continue
        where = f"{path}/patternProperties/{_pointer(pattern)}"
        if r_extra is False:
            out.append(
                f"{where}: names matching {pattern!r} allowed by {diff.writer_name} are rejected by "
                f"{diff.reader_name}'s closed content model"
            )
        else:
            out += diff.check(r_extra, schema, where)
    return out

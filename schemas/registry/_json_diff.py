"""The structural JSON Schema comparison behind :mod:`schemas.registry.compat`.

``JsonDiff(reader, writer).run()`` lists why a document valid under ``writer`` may fail ``reader``.
Each node pair is dereferenced (same-document ``$ref``, siblings merged), combinators are unfolded
(writer ``anyOf``/``oneOf`` branch by branch, reader ``anyOf``/``oneOf`` must take each writer branch
whole, ``allOf`` merged on the writer side and checked branch by branch on the reader side), then the
assertion keywords are compared per JSON type. Where a keyword is not analysed it must be unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.registry import _json_rules as rules
from schemas.registry import _json_values as values
from schemas.registry._canonical import resolve_pointer
from schemas.registry._object_rules import compare_object

_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "$anchor",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
    }
)
_OPAQUE = (
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentSchemas",
)
_MAX_REF_HOPS = 64
_MAX_DEPTH = 200
_FAMILIES = (
    ("number", rules.compare_number),
    ("string", rules.compare_string),
    ("array", rules.compare_array),
    ("object", compare_object),
)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s keywords: properties merged, required united, the rest overridden."""
    out = dict(base)
    for key, value in extra.items():
        if key == "properties" and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out[key] = value
    return out


class JsonDiff:
    def __init__(
        self,
        reader: Any,
        writer: Any,
        reader_name: str = "the reader",
        writer_name: str = "the writer",
        *,
        strict_open_content: bool = False,
    ) -> None:
        self.reader_root = reader
        self.writer_root = writer
        self.reader_name = reader_name
        self.writer_name = writer_name
        self.strict_open_content = strict_open_content
        self._active: set[tuple[int, int]] = set()

    def run(self) -> list[str]:
        return list(dict.fromkeys(self.check(self.reader_root, self.writer_root, "#")))

    # -- dereferencing -------------------------------------------------------------------------------------
    def deref(self, node: Any, root: Any) -> Any:
        """Follow same-document ``$ref``s to their target. Assertion siblings of a ``$ref`` are merged in
        (a new dict); otherwise the target itself is returned, so that the recursion guard knows it."""
        for _ in range(_MAX_REF_HOPS):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node
            try:
                target = resolve_pointer(root, node["$ref"])
            except KeyError:
                return node  # external: compared as an opaque string in _check()
            siblings = {k: v for k, v in node.items() if k != "$ref" and k not in _ANNOTATIONS}
            node = merge(target, siblings) if isinstance(target, dict) and siblings else target
        return node

    def _with_base(self, base: dict[str, Any], branch: Any, root: Any) -> Any:
        """A combinator branch with its parent's other keywords; kept as is (its ``$ref`` intact, for the
        recursion guard) when the parent only carries annotations."""
        if not (base.keys() - _ANNOTATIONS):
            return branch
        target = self.deref(branch, root)
        return merge(base, target) if isinstance(target, dict) else target

    # -- the comparison ------------------------------------------------------------------------------------
    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        if path.count("/") > _MAX_DEPTH:
            return [f"{path}: schema nested too deeply to compare"]
        reader = self.deref(reader, self.reader_root)
        writer = self.deref(writer, self.writer_root)
        key = (id(reader), id(writer))
        if key in self._active:
            return []  # recursive schema: this very pair is already being compared further up
        self._active.add(key)
        try:
            return self._check(reader, writer, path)
        finally:
            self._active.discard(key)

    def _check(self, reader: Any, writer: Any, path: str) -> list[str]:
        if reader is True or (isinstance(reader, dict) and not (reader.keys() - _ANNOTATIONS)):
            return []
        if writer is False:
            return []
        if reader is False:
            return [f"{path}: {self.reader_name} accepts nothing here, {self.writer_name} accepts values"]
        if writer is True:
            writer = {}
        if not (isinstance(reader, dict) and isinstance(writer, dict)):
            return [f"{path}: not a schema"]
        if "$ref" in reader or "$ref" in writer:
            if reader.get("$ref") == writer.get("$ref"):
                return []
            return [
                f"{path}: external $ref {reader.get('$ref')!r} cannot be compared with {writer.get('$ref')!r}"
            ]
        if isinstance(writer.get("allOf"), list):
            merged = {k: v for k, v in writer.items() if k != "allOf"}
            for branch in writer["allOf"]:
                target = self.deref(branch, self.writer_root)
                if isinstance(target, dict):
                    merged = merge(merged, target)
            return self.check(reader, merged, path)
        if isinstance(reader.get("allOf"), list):
            base = {k: v for k, v in reader.items() if k != "allOf"}
            out = self.check(base, writer, path)
            for i, branch in enumerate(reader["allOf"]):
                out += self.check(branch, writer, f"{path}/allOf/{i}")
            return out
        for keyword in ("anyOf", "oneOf"):
            if isinstance(writer.get(keyword), list):
                base = {k: v for k, v in writer.items() if k != keyword}
                variants: list[str] = []
                for i, branch in enumerate(writer[keyword]):
                    variant = self._with_base(base, branch, self.writer_root)
                    variants += self.check(reader, variant, f"{path}/{keyword}/{i}")
                return variants
        for keyword in ("anyOf", "oneOf"):
            if isinstance(reader.get(keyword), list):
                return self._reader_union(reader, keyword, writer, path)
        return self._compare(reader, writer, path)

    def _reader_union(
        self, reader: dict[str, Any], keyword: str, writer: dict[str, Any], path: str
    ) -> list[str]:
        """Each writer variant (one per writer type) must be accepted whole by one reader branch."""
        base = {k: v for k, v in reader.items() if k != keyword}
        out = self.check(base, writer, path)
        types, finite = values.types_of(writer), values.finite_values(writer)
        if finite is not None and len(finite) > 1:
            variants = [{"const": value} for value in finite]
        elif types is not None and len(types) > 1:
            variants = [{**writer, "type": t} for t in sorted(types)]
        else:
            variants = [writer]
        for variant in variants:
            best: list[str] | None = None
            for branch in reader[keyword]:
                found = self.check(self._with_base(base, branch, self.reader_root), variant, path)
                if best is None or len(found) < len(best):
                    best = found
                if not found:
                    break
            if best:
                out.append(
                    f"{path}: no branch of {keyword} in {self.reader_name} accepts "
                    f"{values.describe(variant)} from {self.writer_name}"
                )
                out += best
        return out

    def _compare(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        finite = values.finite_values(writer)
        if finite is not None:
            return [
                f"{path}: value {canonical(v)} allowed by {self.writer_name} is rejected by "
                f"{self.reader_name}"
                for v in finite
                if not values.value_accepted(self, reader, v)
            ]
        if "const" in reader or "enum" in reader:
            return [
                f"{path}: {self.reader_name} only accepts {values.describe(reader)}, "
                f"{self.writer_name} allows {values.describe(writer)}"
            ]
        out = rules.compare_types(self, reader, writer, path)
        if out.narrowed_to_nothing:
            return out.messages
        messages = out.messages
        for family, compare in _FAMILIES:
            if out.includes(family):
                messages += compare(self, reader, writer, path)
        for keyword in _OPAQUE:
            if keyword in reader and canonical(reader[keyword]) != canonical(writer.get(keyword)):
                messages.append(
                    f"{path}: '{keyword}' added or changed in {self.reader_name} (not analysed; "
                    "only an unchanged value is compatible)"
                )
        return messages

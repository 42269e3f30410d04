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
from schemas.registry._canonical import resolve_pointer

_ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "$defs", "definitions", "$anchor", "title", "description", "default",
    "examples", "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding",
})
_OPAQUE = ("not", "if", "then", "else", "contains", "propertyNames", "unevaluatedProperties",
           "unevaluatedItems", "dependentSchemas")
_MAX_REF_HOPS = 64


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
    def __init__(self, reader: Any, writer: Any, reader_name: str = "the reader",
                 writer_name: str = "the writer", *, strict_open_content: bool = False) -> None:
        self.reader_root = reader
        self.writer_root = writer
        self.reader_name = reader_name
        self.writer_name = writer_name
        self.strict_open_content = strict_open_content
        self._active: set[tuple[str, str]] = set()

    def run(self) -> list[str]:
        return list(dict.fromkeys(self.check(self.reader_root, self.writer_root, "#")))

    # -- dereferencing -------------------------------------------------------------------------------------
    def deref(self, node: Any, root: Any) -> tuple[Any, str | None]:
        """Follow same-document ``$ref``s; return the target (siblings merged) and the last ref."""
        last: str | None = None
        for _ in range(_MAX_REF_HOPS):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node, last
            ref = node["$ref"]
            try:
                target = resolve_pointer(root, ref)
            except KeyError:
                return node, last  # external: compared as an opaque string in check()
            last = ref
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = merge(target, siblings) if isinstance(target, dict) and siblings else target
        return node, last

    # -- the comparison ------------------------------------------------------------------------------------
    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        reader, reader_ref = self.deref(reader, self.reader_root)
        writer, writer_ref = self.deref(writer, self.writer_root)
        if reader_ref is not None and writer_ref is not None:
            key = (reader_ref, writer_ref)
            if key in self._active:
                return []  # recursive schema: this pair is already being compared further up
            self._active.add(key)
            try:
                return self._check(reader, writer, path)
            finally:
                self._active.discard(key)
        return self._check(reader, writer, path)

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
            return [f"{path}: external $ref {reader.get('$ref')!r} cannot be compared with "
                    f"{writer.get('$ref')!r}"]
        if isinstance(writer.get("allOf"), list):
            merged = {k: v for k, v in writer.items() if k != "allOf"}
            for branch in writer["allOf"]:
                target, _ = self.deref(branch, self.writer_root)
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
                out: list[str] = []
                for i, branch in enumerate(writer[keyword]):
                    target, _ = self.deref(branch, self.writer_root)
                    variant = merge(base, target) if isinstance(target, dict) else target
                    out += self.check(reader, variant, f"{path}/{keyword}/{i}")
                return out
        for keyword in ("anyOf", "oneOf"):
            if isinstance(reader.get(keyword), list):
                return self._reader_union(reader, keyword, writer, path)
        return self._compare(reader, writer, path)

    def _reader_union(self, reader: dict[str, Any], keyword: str, writer: dict[str, Any],
                      path: str) -> list[str]:
        """Each writer variant (one per writer type) must be accepted whole by one reader branch."""
        base = {k: v for k, v in reader.items() if k != keyword}
        out = self.check(base, writer, path)
        types = rules.types_of(writer)
        variants = [writer] if types is None or len(types) < 2 else [{**writer, "type": t} for t in sorted(types)]
        for variant in variants:
            best: list[str] | None = None
            for branch in reader[keyword]:
                target, _ = self.deref(branch, self.reader_root)
                candidate = merge(base, target) if isinstance(target, dict) else target
                found = self.check(candidate, variant, path)
                if best is None or len(found) < len(best):
                    best = found
                if not found:
                    break
            if best:
                out.append(f"{path}: no branch of {keyword} in {self.reader_name} accepts "
                           f"{rules.describe(variant)} from {self.writer_name}")
                out += best
        return out

    def _compare(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        finite = rules.finite_values(writer)
        if finite is not None:
            return [f"{path}: value {canonical(v)} allowed by {self.writer_name} is rejected by {self.reader_name}"
                    for v in finite if not rules.value_accepted(self, reader, v)]
        if "const" in reader or "enum" in reader:
            return [f"{path}: {self.reader_name} only accepts {rules.describe(reader)}, "
                    f"{self.writer_name} allows {rules.describe(writer)}"]
        out = rules.compare_types(self, reader, writer, path)
        if out.narrowed_to_nothing:
            return out.messages
        messages = out.messages
        for family, compare in rules.FAMILIES:
            if out.includes(family):
                messages += compare(self, reader, writer, path)
        for keyword in _OPAQUE:
            if keyword in reader and canonical(reader[keyword]) != canonical(writer.get(keyword)):
                messages.append(f"{path}: '{keyword}' added or changed in {self.reader_name} (not analysed; "
                                "only an unchanged value is compatible)")
        return messages

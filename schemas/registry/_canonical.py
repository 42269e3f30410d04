"""Schema validation and canonical form: one fingerprint per distinct schema, whatever its whitespace.

JSON and AVRO texts are parsed and re-serialised compactly with sorted keys; PROTOBUF text is compared
with its line ends and surrounding blanks normalised. The fingerprint also covers type and references,
so equal fingerprints mean "the same schema" and hence the same global id.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from schemas.registry.exceptions import InvalidSchema
from schemas.registry.model import SCHEMA_TYPES, Schema


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidSchema(f"Invalid schema: not parseable JSON: {exc}") from exc


def validate(schema: Schema) -> Any:
    """Raise :class:`InvalidSchema` (42201) unless ``schema`` is well formed; return the parsed JSON
    document for JSON and AVRO schemas (None for PROTOBUF)."""
    if schema.schema_type not in SCHEMA_TYPES:
        raise InvalidSchema(
            f"Invalid schema type {schema.schema_type!r}; supported: {', '.join(SCHEMA_TYPES)}"
        )
    if not schema.text.strip():
        raise InvalidSchema("Invalid schema: the schema text is empty")
    if schema.schema_type == "PROTOBUF":
        return None
    document = parse_json(schema.text)
    if schema.schema_type == "AVRO":
        if not isinstance(document, dict | list | str):
            raise InvalidSchema("Invalid schema: an Avro schema is a JSON object, array or type name")
        return document
    if not isinstance(document, dict | bool):
        raise InvalidSchema("Invalid schema: a JSON schema is a JSON object or a boolean")
    try:
        jsonschema.validators.validator_for(document).check_schema(document)
    except jsonschema.exceptions.SchemaError as exc:
        raise InvalidSchema(f"Invalid schema: {exc.message} at #/{'/'.join(map(str, exc.path))}") from exc
    _check_local_refs(document, document)
    return document


def canonical_text(schema: Schema) -> str:
    if schema.schema_type == "PROTOBUF":
        return "\n".join(line.rstrip() for line in schema.text.strip().splitlines())
    return json.dumps(parse_json(schema.text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(schema: Schema) -> str:
    refs = [[r.name, r.subject, r.version] for r in schema.references]
    blob = json.dumps([schema.schema_type, canonical_text(schema), refs], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def resolve_pointer(root: Any, ref: str) -> Any:
    """Resolve a same-document ``$ref`` (``#`` or ``#/json/pointer``); raise KeyError if it does not."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise KeyError(ref)
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(ref)
    return node


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_VALUE_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


def _check_local_refs(root: Any, node: Any, *, schema_map: bool = False) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if not schema_map and isinstance(ref, str) and ref.startswith("#"):
            try:
                resolve_pointer(root, ref)
            except KeyError as exc:
                raise InvalidSchema(f"Invalid schema: $ref {ref!r} does not resolve in the document") from exc
        for key, value in node.items():
            if schema_map or key not in _VALUE_KEYWORDS:
                _check_local_refs(root, value, schema_map=not schema_map and key in _SCHEMA_MAPS)
    elif isinstance(node, list):
        for item in node:
            _check_local_refs(root, item)

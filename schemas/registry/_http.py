"""HTTP plumbing shared by the registry's routes: media type, request bodies, dependencies, renderers."""

from __future__ import annotations

import re
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from schemas.registry import _canonical
from schemas.registry.base import CompatibilityCheck, SchemaStore
from schemas.registry.exceptions import InvalidSchema, InvalidSubject, InvalidVersion, SchemaRegistryError
from schemas.registry.model import Reference, Schema, SubjectVersion

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
_MAX_VERSION = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RegistryJSONResponse(JSONResponse):
    media_type = MEDIA_TYPE


def schema_text_response(text: str) -> Response:
    """The bare schema document (``GET .../schema``), sent as stored."""
    return Response(content=text, media_type=MEDIA_TYPE)


class ReferenceIn(BaseModel):
    name: str
    subject: str
    version: int


class SchemaIn(BaseModel):
    """Body of register, lookup and compatibility requests. A missing ``schemaType`` means AVRO, as in
    Confluent; unknown fields (metadata, ruleSet) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_text: str = Field(alias="schema")
    schema_type: str | None = Field(default=None, alias="schemaType")
    references: list[ReferenceIn] | None = None

    def to_schema(self) -> Schema:
        refs = tuple(Reference(r.name, r.subject, r.version) for r in self.references or [])
        return Schema(self.schema_text, (self.schema_type or "AVRO").upper(), refs)


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    compatibility: str | None = None
    compatibilityLevel: str | None = None

    def level_text(self) -> str | None:
        return self.compatibility or self.compatibilityLevel


def _store(request: Request) -> SchemaStore:
    return cast(SchemaStore, request.app.state.store)


def _checker(request: Request) -> CompatibilityCheck:
    return cast(CompatibilityCheck, request.app.state.checker)


def checked_subject(request: Request) -> None:
    """A router dependency: a ``{subject}`` in the path with a control character is a 422 (42208), never a
    store error (Postgres text cannot hold NUL) nor a raw control character in a log line."""
    subject = request.path_params.get("subject")
    if isinstance(subject, str) and _CONTROL.search(subject):
        raise InvalidSubject(subject)


StoreDep = Annotated[SchemaStore, Depends(_store)]
CheckerDep = Annotated[CompatibilityCheck, Depends(_checker)]


def parse_version(text: str) -> int | None:
    """``latest`` or -1 -> None (the latest); 1..2^31-1 -> int; anything else -> 42202."""
    if text.strip().lower() == "latest":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidVersion(text) from None
    if value == -1:
        return None
    if not 1 <= value <= _MAX_VERSION:
        raise InvalidVersion(text)
    return value


def validated(body: SchemaIn, store: SchemaStore, *, normalize: bool = False) -> Schema:
    """The request's schema, checked (42201 if malformed, if it holds a NUL character, which Postgres text
    cannot store, or if a reference points nowhere)."""
    schema = body.to_schema()
    texts = [schema.text, schema.schema_type, *(t for r in schema.references for t in (r.name, r.subject))]
    if any("\x00" in text for text in texts):
        raise InvalidSchema("Invalid schema: it contains a NUL character (\\u0000)")
    _canonical.validate(schema)
    for ref in schema.references:
        try:
            store.get_version(ref.subject, ref.version)
        except SchemaRegistryError as exc:
            if exc.http_status != 404:
                raise
            raise InvalidSchema(
                f"Invalid schema: reference '{ref.name}' to subject '{ref.subject}' "
                f"version {ref.version} not found"
            ) from exc
    if normalize:
        schema = Schema(_canonical.canonical_text(schema), schema.schema_type, schema.references)
    return schema


def render_schema(schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {"schema": schema.text, "schemaType": schema.schema_type}
    if schema.references:
        out["references"] = [r.to_dict() for r in schema.references]
    return out


def render_version(version: SubjectVersion) -> dict[str, Any]:
    return {
        "subject": version.subject,
        "version": version.version,
        "id": version.schema_id,
        **render_schema(version.schema),
    }


def page(items: list[Any], offset: int, limit: int) -> list[Any]:
    """Confluent's paging: skip ``offset``, then at most ``limit`` items (negative: no limit)."""
    items = items[max(offset, 0) :]
    return items if limit < 0 else items[:limit]

"""Routes under ``/subjects``: register, look up, list, read and delete subject versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from schemas.registry import _canonical
from schemas.registry._http import (
    CheckerDep,
    SchemaIn,
    StoreDep,
    checked_subject,
    page,
    parse_version,
    render_version,
    schema_text_response,
    validated,
)

router = APIRouter(prefix="/subjects", dependencies=[Depends(checked_subject)])


@router.get("")
def list_subjects(
    store: StoreDep,
    deleted: bool = False,
    deleted_only: bool = False,
    subjectPrefix: str = "",
    offset: int = 0,
    limit: int = -1,
) -> list[str]:
    names = store.subjects(deleted=deleted or deleted_only)
    if deleted_only:
        live = set(store.subjects())
        names = [name for name in names if name not in live]
    return page([name for name in names if name.startswith(subjectPrefix)], offset, limit)


@router.post("/{subject}/versions")
def register(
    subject: str, body: SchemaIn, store: StoreDep, checker: CheckerDep, normalize: bool = False
) -> dict[str, Any]:
    registered = store.register(subject, validated(body, store, normalize=normalize), checker)
    return {"id": registered.schema_id}


@router.post("/{subject}")
def lookup(
    subject: str, body: SchemaIn, store: StoreDep, normalize: bool = False, deleted: bool = False
) -> dict[str, Any]:
    schema = validated(body, store, normalize=normalize)
    return render_version(store.lookup(subject, _canonical.fingerprint(schema), deleted=deleted))


@router.get("/{subject}/versions")
def list_versions(
    subject: str,
    store: StoreDep,
    deleted: bool = False,
    deleted_only: bool = False,
    offset: int = 0,
    limit: int = -1,
) -> list[int]:
    rows = store.versions(subject, deleted=deleted or deleted_only)
    return page([row.version for row in rows if row.deleted or not deleted_only], offset, limit)


@router.get("/{subject}/versions/{version}")
def get_version(subject: str, version: str, store: StoreDep, deleted: bool = False) -> dict[str, Any]:
    return render_version(store.get_version(subject, parse_version(version), deleted=deleted))


@router.get("/{subject}/versions/{version}/schema")
def get_version_schema(subject: str, version: str, store: StoreDep, deleted: bool = False) -> Response:
    found = store.get_version(subject, parse_version(version), deleted=deleted)
    return schema_text_response(found.schema.text)


@router.delete("/{subject}")
def delete_subject(subject: str, store: StoreDep, permanent: bool = False) -> list[int]:
    return store.delete_subject(subject, permanent=permanent)


@router.delete("/{subject}/versions/{version}")
def delete_version(subject: str, version: str, store: StoreDep, permanent: bool = False) -> int:
    return store.delete_version(subject, parse_version(version), permanent=permanent)

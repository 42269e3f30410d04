"""Routes under ``/schemas``, ``/compatibility`` and ``/config``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from schemas.registry._http import (
    CheckerDep,
    ConfigIn,
    SchemaIn,
    StoreDep,
    checked_subject,
    page,
    parse_version,
    render_schema,
    schema_text_response,
    validated,
)
from schemas.registry.base import SchemaStore
from schemas.registry.exceptions import SubjectConfigNotFound, SubjectNotFound
from schemas.registry.model import DEFAULT_LEVEL, SCHEMA_TYPES, CompatibilityLevel

router = APIRouter(dependencies=[Depends(checked_subject)])


# -- schemas by id -------------------------------------------------------------------------------------
@router.get("/schemas/types")
def schema_types() -> list[str]:
    return list(SCHEMA_TYPES)


@router.get("/schemas/ids/{schema_id}")
def get_schema(schema_id: int, store: StoreDep) -> dict[str, Any]:
    return render_schema(store.get_schema(schema_id))


@router.get("/schemas/ids/{schema_id}/schema")
def get_schema_text(schema_id: int, store: StoreDep) -> Response:
    return schema_text_response(store.get_schema(schema_id).text)


@router.get("/schemas/ids/{schema_id}/versions")
def schema_versions(
    schema_id: int,
    store: StoreDep,
    deleted: bool = False,
    subject: str | None = None,
    offset: int = 0,
    limit: int = -1,
) -> list[dict[str, Any]]:
    pairs = _pairs(store, schema_id, deleted, subject)
    return page([{"subject": s, "version": v} for s, v in pairs], offset, limit)


@router.get("/schemas/ids/{schema_id}/subjects")
def schema_subjects(
    schema_id: int,
    store: StoreDep,
    deleted: bool = False,
    subject: str | None = None,
    offset: int = 0,
    limit: int = -1,
) -> list[str]:
    subjects = dict.fromkeys(s for s, _ in _pairs(store, schema_id, deleted, subject))
    return page(list(subjects), offset, limit)


def _pairs(store: SchemaStore, schema_id: int, deleted: bool, subject: str | None) -> list[tuple[str, int]]:
    pairs = store.schema_versions(schema_id, deleted=deleted)
    if not pairs:
        store.get_schema(schema_id)  # 40403 unless only soft-deleted versions use it
    return [(s, v) for s, v in pairs if subject is None or s == subject]


# -- compatibility -------------------------------------------------------------------------------------
@router.post("/compatibility/subjects/{subject}/versions/{version}")
def test_against_version(
    subject: str,
    version: str,
    body: SchemaIn,
    store: StoreDep,
    checker: CheckerDep,
    verbose: bool = False,
    normalize: bool = False,
) -> dict[str, Any]:
    target = store.get_version(subject, parse_version(version))
    level = store.effective_level(subject)
    single = CompatibilityLevel(level.value.removesuffix("_TRANSITIVE"))
    messages = checker(single, validated(body, store, normalize=normalize), [target])
    return _verdict(messages, verbose)


@router.post("/compatibility/subjects/{subject}/versions")
def test_against_subject(
    subject: str,
    body: SchemaIn,
    store: StoreDep,
    checker: CheckerDep,
    verbose: bool = False,
    normalize: bool = False,
) -> dict[str, Any]:
    schema = validated(body, store, normalize=normalize)
    try:
        live = store.versions(subject)
    except SubjectNotFound:
        live = []
    return _verdict(checker(store.effective_level(subject), schema, live), verbose)


def _verdict(messages: list[str], verbose: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"is_compatible": not messages}
    if verbose:
        out["messages"] = messages
    return out


# -- config --------------------------------------------------------------------------------------------
@router.get("/config")
def get_global_config(store: StoreDep) -> dict[str, str]:
    return {"compatibilityLevel": store.effective_level(None).value}


@router.put("/config")
def set_global_config(body: ConfigIn, store: StoreDep) -> dict[str, str]:
    level = CompatibilityLevel.parse(body.level_text())
    store.set_config(None, level)
    return {"compatibility": level.value}


@router.delete("/config")
def delete_global_config(store: StoreDep) -> dict[str, str]:
    previous = store.delete_config(None) or DEFAULT_LEVEL
    return {"compatibilityLevel": previous.value}


@router.get("/config/{subject}")
def get_subject_config(subject: str, store: StoreDep, defaultToGlobal: bool = False) -> dict[str, str]:
    level = store.effective_level(subject) if defaultToGlobal else store.get_config(subject)
    if level is None:
        raise SubjectConfigNotFound(subject)
    return {"compatibilityLevel": level.value}


@router.put("/config/{subject}")
def set_subject_config(subject: str, body: ConfigIn, store: StoreDep) -> dict[str, str]:
    level = CompatibilityLevel.parse(body.level_text())
    store.set_config(subject, level)
    return {"compatibility": level.value}


@router.delete("/config/{subject}")
def delete_subject_config(subject: str, store: StoreDep) -> dict[str, str]:
    previous = store.delete_config(subject)
    if previous is None:
        raise SubjectConfigNotFound(subject)
    return {"compatibilityLevel": previous.value}

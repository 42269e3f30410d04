"""Confluent's deletion rules, shared by every store: which versions a delete touches, or why it may not."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.registry.exceptions import (
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from schemas.registry.model import SubjectVersion


def subject_delete(subject: str, rows: Sequence[SubjectVersion], permanent: bool) -> list[SubjectVersion]:
    """The versions a subject delete affects: the live ones (soft), or all, once none is live (permanent)."""
    if not rows:
        raise SubjectNotFound(subject)
    live = [row for row in rows if not row.deleted]
    if permanent:
        if live:
            raise SubjectNotSoftDeleted(subject)
        return list(rows)
    if not live:
        raise SubjectSoftDeleted(subject)
    return live


def version_delete(
    subject: str, rows: Sequence[SubjectVersion], version: int | None, permanent: bool
) -> SubjectVersion:
    """The version a version delete affects (None: the latest live one, or latest of all if permanent)."""
    if not rows:
        raise SubjectNotFound(subject)
    if version is None:
        candidates = list(rows) if permanent else [row for row in rows if not row.deleted]
        if not candidates:
            raise VersionNotFound(subject, "latest")
        target = candidates[-1]
    else:
        found = [row for row in rows if row.version == version]
        if not found:
            raise VersionNotFound(subject, version)
        target = found[0]
    if permanent and not target.deleted:
        raise VersionNotSoftDeleted(subject, target.version)
    if not permanent and target.deleted:
        raise VersionSoftDeleted(subject, target.version)
    return target

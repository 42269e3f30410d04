"""The storage contract of the schema registry.

A store keeps three things: schemas (text, type, references) under global ids that are never reused,
subject versions pointing at those ids (soft-deletable), and compatibility levels (global + per
subject). Registration is the one operation with a rule inside: it is atomic per subject, so two
concurrent registrations cannot both pass the compatibility check against the same latest version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from schemas.registry._canonical import fingerprint as fingerprint_of
from schemas.registry.exceptions import IncompatibleSchema, SchemaNotFound, VersionNotFound
from schemas.registry.model import DEFAULT_LEVEL, CompatibilityLevel, Schema, SubjectVersion

CompatibilityCheck = Callable[[CompatibilityLevel, Schema, Sequence[SubjectVersion]], list[str]]
"""``check(level, new, live_versions_oldest_first) -> messages``; no messages means compatible."""

Version = int | None
"""A version number, or None for the latest one."""


class SchemaStore(ABC):
    """Schemas, subject versions and compatibility config. Implementations must be thread-safe."""

    # -- writes ------------------------------------------------------------------------------------------
    @abstractmethod
    def register(self, subject: str, schema: Schema, check: CompatibilityCheck) -> SubjectVersion:
        """Add ``schema`` as the next version of ``subject`` and return it, atomically per subject.

        If an identical schema (same fingerprint) is a live version of ``subject``, return that version
        unchanged. Otherwise call ``check(effective_level, schema, live_versions)`` and raise
        :class:`IncompatibleSchema` if it answers with messages. An identical schema registered under
        any subject keeps its id (and the text first stored under it)."""

    @abstractmethod
    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete every live version (or, ``permanent``, remove the soft-deleted ones); return the
        version numbers affected. Confluent's rule: a permanent delete needs a soft delete first."""

    @abstractmethod
    def delete_version(self, subject: str, version: Version, *, permanent: bool = False) -> int:
        """Soft-delete one live version (or, ``permanent``, remove a soft-deleted one)."""

    @abstractmethod
    def set_config(self, subject: str | None, level: CompatibilityLevel) -> None:
        """Set the level of ``subject`` (None: the global level)."""

    @abstractmethod
    def delete_config(self, subject: str | None) -> CompatibilityLevel | None:
        """Drop the level of ``subject`` (None: reset the global one); return what it was."""

    # -- reads -------------------------------------------------------------------------------------------
    @abstractmethod
    def get_config(self, subject: str | None) -> CompatibilityLevel | None:
        """The level set for ``subject`` (None: the global level), or None if none is set."""

    @abstractmethod
    def subjects(self, *, deleted: bool = False) -> list[str]:
        """Subjects with a live version (``deleted``: with any version), sorted."""

    @abstractmethod
    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        """Versions of ``subject``, oldest first: live ones, or all with ``deleted``. Raises
        :class:`SubjectNotFound` when there are none."""

    @abstractmethod
    def get_schema(self, schema_id: int) -> Schema:
        """The schema with this id while some version (live or soft-deleted) uses it, else
        :class:`SchemaNotFound`."""

    @abstractmethod
    def schema_versions(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        """``(subject, version)`` pairs using ``schema_id``: live ones, or all with ``deleted``."""

    def close(self) -> None:  # noqa: B027 - optional hook with a working default
        """Release connections; a no-op by default."""

    # -- derived behaviour (working defaults) ------------------------------------------------------------
    def get_version(self, subject: str, version: Version, *, deleted: bool = False) -> SubjectVersion:
        """One version (None: the latest). :class:`SubjectNotFound`, :class:`VersionNotFound`."""
        existing = self.versions(subject, deleted=deleted)
        if version is None:
            return existing[-1]
        for found in existing:
            if found.version == version:
                return found
        raise VersionNotFound(subject, version)

    def lookup(self, subject: str, fingerprint: str, *, deleted: bool = False) -> SubjectVersion:
        """The newest version of ``subject`` whose schema has ``fingerprint`` (live ones first)."""
        matches = [
            v for v in self.versions(subject, deleted=deleted) if fingerprint_of(v.schema) == fingerprint
        ]
        if not matches:
            raise SchemaNotFound(f"Schema not found under subject '{subject}'")
        return max(matches, key=lambda v: (not v.deleted, v.version))

    def effective_level(self, subject: str | None) -> CompatibilityLevel:
        """The subject's level, else the global one, else BACKWARD."""
        level = self.get_config(subject) if subject is not None else None
        return level or self.get_config(None) or DEFAULT_LEVEL

    def schema_exists(self, schema_id: int) -> bool:
        """Whether ``schema_id`` is known (decoders dead-letter records with an unknown id)."""
        try:
            self.get_schema(schema_id)
        except SchemaNotFound:
            return False
        return True

    @staticmethod
    def check_compatible(
        check: CompatibilityCheck,
        level: CompatibilityLevel,
        subject: str,
        schema: Schema,
        previous: Sequence[SubjectVersion],
    ) -> None:
        """Raise :class:`IncompatibleSchema` if ``check`` finds anything (stores call this inside
        their per-subject critical section)."""
        messages = check(level, schema, previous)
        if messages:
            raise IncompatibleSchema(subject, messages)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

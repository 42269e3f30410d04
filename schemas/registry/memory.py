"""An in-memory :class:`SchemaStore`: the fake for tests and for running without Postgres."""

from __future__ import annotations

import dataclasses
import threading

from schemas.registry import _policy
from schemas.registry._canonical import fingerprint
from schemas.registry.base import CompatibilityCheck, SchemaStore, Version
from schemas.registry.exceptions import SchemaNotFound, SubjectNotFound
from schemas.registry.model import CompatibilityLevel, Schema, SubjectVersion

_GLOBAL = ""


class MemorySchemaStore(SchemaStore):
    """Dicts behind one re-entrant lock; ids start at 1 and are never reused."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._schemas: dict[int, Schema] = {}
        self._ids: dict[str, int] = {}  # fingerprint -> id
        self._versions: dict[str, list[SubjectVersion]] = {}
        self._config: dict[str, CompatibilityLevel] = {}

    def register(self, subject: str, schema: Schema, check: CompatibilityCheck) -> SubjectVersion:
        key = fingerprint(schema)
        with self._lock:
            rows = self._versions.get(subject, [])
            live = [row for row in rows if not row.deleted]
            known = self._ids.get(key)
            for row in live:
                if row.schema_id == known:
                    return row
            self.check_compatible(check, self.effective_level(subject), subject, schema, live)
            schema_id = known
            if schema_id is None:
                schema_id = len(self._schemas) + 1
                self._ids[key] = schema_id
                self._schemas[schema_id] = schema
            version = max((row.version for row in rows), default=0) + 1
            registered = SubjectVersion(subject, version, schema_id, self._schemas[schema_id])
            self._versions[subject] = [*rows, registered]
            return registered

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        with self._lock:
            rows = self._versions.get(subject, [])
            affected = _policy.subject_delete(subject, rows, permanent)
            if permanent:
                del self._versions[subject]
                self._config.pop(subject, None)
            else:
                self._versions[subject] = [dataclasses.replace(row, deleted=True) for row in rows]
            return [row.version for row in affected]

    def delete_version(self, subject: str, version: Version, *, permanent: bool = False) -> int:
        with self._lock:
            rows = self._versions.get(subject, [])
            target = _policy.version_delete(subject, rows, version, permanent)
            if permanent:
                remaining = [row for row in rows if row.version != target.version]
            else:
                remaining = [dataclasses.replace(row, deleted=True) if row == target else row for row in rows]
            if remaining:
                self._versions[subject] = remaining
            else:
                del self._versions[subject]
            return target.version

    def set_config(self, subject: str | None, level: CompatibilityLevel) -> None:
        with self._lock:
            self._config[subject or _GLOBAL] = level

    def delete_config(self, subject: str | None) -> CompatibilityLevel | None:
        with self._lock:
            return self._config.pop(subject or _GLOBAL, None)

    def get_config(self, subject: str | None) -> CompatibilityLevel | None:
        with self._lock:
            return self._config.get(subject or _GLOBAL)

    def subjects(self, *, deleted: bool = False) -> list[str]:
        with self._lock:
            return sorted(
                s for s, rows in self._versions.items() if deleted or any(not r.deleted for r in rows)
            )

    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        with self._lock:
            rows = [row for row in self._versions.get(subject, []) if deleted or not row.deleted]
        if not rows:
            raise SubjectNotFound(subject)
        return rows

    def get_schema(self, schema_id: int) -> Schema:
        with self._lock:
            if schema_id in self._schemas and self._used(schema_id):
                return self._schemas[schema_id]
        raise SchemaNotFound(f"Schema {schema_id} not found")

    def schema_versions(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(
                (row.subject, row.version)
                for rows in self._versions.values()
                for row in rows
                if row.schema_id == schema_id and (deleted or not row.deleted)
            )

    def _used(self, schema_id: int) -> bool:
        return any(row.schema_id == schema_id for rows in self._versions.values() for row in rows)

"""The Postgres :class:`SchemaStore` (psycopg 3), on the tables of migration 0002.

Registration runs in one transaction holding a transaction-scoped advisory lock on the subject, so the
compatibility check and the new version number see a stable subject; the schema row is found or
inserted by its unique fingerprint (``ON CONFLICT DO NOTHING``), which is safe across subjects.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from schemas.registry import _policy
from schemas.registry._canonical import fingerprint
from schemas.registry._pool import ConnectionPool
from schemas.registry.base import CompatibilityCheck, SchemaStore, Version
from schemas.registry.exceptions import SchemaNotFound, SchemaStoreError, SubjectNotFound
from schemas.registry.model import DEFAULT_LEVEL, CompatibilityLevel, Reference, Schema, SubjectVersion

_LOCK_NAMESPACE = 0x53526567  # "SReg": first key of pg_advisory_xact_lock(int, int)
_GLOBAL = ""
_MAX_UNKNOWN = 10_000  # cached unknown ids; beyond this the negative cache starts over
_ROWS = """
    SELECT v.subject, v.version, v.schema_id, v.deleted, s.schema_type, s.schema_text, s.refs
    FROM schema_registry_versions v JOIN schema_registry_schemas s ON s.id = v.schema_id
"""


def _schema(schema_type: str, text: str, refs: list[dict[str, Any]]) -> Schema:
    return Schema(
        text, schema_type, tuple(Reference(r["name"], r["subject"], int(r["version"])) for r in refs)
    )


def _version(row: Sequence[Any]) -> SubjectVersion:
    subject, version, schema_id, deleted, schema_type, text, refs = row
    return SubjectVersion(subject, version, schema_id, _schema(schema_type, text, refs), deleted)


class PostgresSchemaStore(SchemaStore):
    """``url`` is a libpq URL or conninfo string of a database migrated to 0002 or later.

    ``schema_exists`` caches its answers for a while of ``clock``: known ids for ``known_ttl_s`` seconds, so
    an id whose versions are permanently deleted by another process (``flywheel schema-registry``) is
    unknown here within that time (a permanent delete through this store forgets it at once); unknown ids
    for ``unknown_ttl_s`` seconds, so a flood of records with a bogus id costs few queries."""

    def __init__(
        self,
        url: str,
        *,
        max_idle: int = 4,
        connect_timeout: int = 5,
        unknown_ttl_s: float = 5.0,
        known_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = ConnectionPool(url, max_idle=max_idle, connect_timeout=connect_timeout)
        self._unknown_ttl_s = unknown_ttl_s
        self._known_ttl_s = known_ttl_s
        self._clock = clock
        self._known: dict[int, float] = {}  # id -> known until
        self._unknown_until: dict[int, float] = {}
        self._cache_lock = threading.Lock()

    # -- writes ------------------------------------------------------------------------------------------
    def register(self, subject: str, schema: Schema, check: CompatibilityCheck) -> SubjectVersion:
        key = fingerprint(schema)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, subject))
            rows = self._rows(conn, "WHERE v.subject = %s", (subject,))
            live = [row for row in rows if not row.deleted]
            found = conn.execute(
                "SELECT id FROM schema_registry_schemas WHERE fingerprint = %s", (key,)
            ).fetchone()
            for row in live:
                if found is not None and row.schema_id == found[0]:
                    return row
            self.check_compatible(check, self._level(conn, subject), subject, schema, live)
            if found is None:
                refs = json.dumps([r.to_dict() for r in schema.references])
                conn.execute(
                    "INSERT INTO schema_registry_schemas (schema_type, schema_text, refs, fingerprint) "
                    "VALUES (%s, %s, %s::jsonb, %s) ON CONFLICT (fingerprint) DO NOTHING",
                    (schema.schema_type, schema.text, refs, key),
                )
            stored = conn.execute(
                "SELECT id, schema_type, schema_text, refs FROM schema_registry_schemas "
                "WHERE fingerprint = %s",
                (key,),
            ).fetchone()
            if stored is None:  # inserted above, or by a concurrent registration that has committed
                raise SchemaStoreError(f"schema with fingerprint {key} vanished during registration")
            version = max((row.version for row in rows), default=0) + 1
            conn.execute(
                "INSERT INTO schema_registry_versions (subject, version, schema_id) VALUES (%s, %s, %s)",
                (subject, version, stored[0]),
            )
        self._remember(stored[0])
        return SubjectVersion(subject, version, stored[0], _schema(stored[1], stored[2], stored[3]))

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, subject))
            affected = _policy.subject_delete(
                subject, self._rows(conn, "WHERE v.subject = %s", (subject,)), permanent
            )
            if permanent:
                conn.execute("DELETE FROM schema_registry_versions WHERE subject = %s", (subject,))
                conn.execute("DELETE FROM schema_registry_config WHERE subject = %s", (subject,))
            else:
                conn.execute(
                    "UPDATE schema_registry_versions SET deleted = true WHERE subject = %s", (subject,)
                )
        if permanent:  # after the commit: a lookup in between would remember the id again
            self._forget(row.schema_id for row in affected)
        return [row.version for row in affected]

    def delete_version(self, subject: str, version: Version, *, permanent: bool = False) -> int:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, subject))
            rows = self._rows(conn, "WHERE v.subject = %s", (subject,))
            target = _policy.version_delete(subject, rows, version, permanent)
            if permanent:
                statement = "DELETE FROM schema_registry_versions WHERE subject = %s AND version = %s"
            else:
                statement = (
                    "UPDATE schema_registry_versions SET deleted = true WHERE subject = %s AND version = %s"
                )
            conn.execute(statement, (subject, target.version))
        if permanent:
            self._forget([target.schema_id])
        return target.version

    def set_config(self, subject: str | None, level: CompatibilityLevel) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO schema_registry_config (subject, compatibility) VALUES (%s, %s) "
                "ON CONFLICT (subject) DO UPDATE "
                "SET compatibility = EXCLUDED.compatibility, updated_at = now()",
                (subject or _GLOBAL, level.value),
            )

    def delete_config(self, subject: str | None) -> CompatibilityLevel | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "DELETE FROM schema_registry_config WHERE subject = %s RETURNING compatibility",
                (subject or _GLOBAL,),
            ).fetchone()
        return None if row is None else CompatibilityLevel(row[0])

    # -- reads -------------------------------------------------------------------------------------------
    def get_config(self, subject: str | None) -> CompatibilityLevel | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT compatibility FROM schema_registry_config WHERE subject = %s", (subject or _GLOBAL,)
            ).fetchone()
        return None if row is None else CompatibilityLevel(row[0])

    def subjects(self, *, deleted: bool = False) -> list[str]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT subject FROM schema_registry_versions WHERE %s OR NOT deleted "
                "ORDER BY subject",
                (deleted,),
            ).fetchall()
        return [row[0] for row in rows]

    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        with self._pool.connection() as conn:
            rows = self._rows(conn, "WHERE v.subject = %s AND (%s OR NOT v.deleted)", (subject, deleted))
        if not rows:
            raise SubjectNotFound(subject)
        return rows

    def get_schema(self, schema_id: int) -> Schema:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT schema_type, schema_text, refs FROM schema_registry_schemas s WHERE id = %s "
                "AND EXISTS (SELECT 1 FROM schema_registry_versions v WHERE v.schema_id = s.id)",
                (schema_id,),
            ).fetchone()
        if row is None:
            raise SchemaNotFound(f"Schema {schema_id} not found")
        self._remember(schema_id)
        return _schema(row[0], row[1], row[2])

    def schema_versions(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT subject, version FROM schema_registry_versions WHERE schema_id = %s "
                "AND (%s OR NOT deleted) ORDER BY subject, version",
                (schema_id, deleted),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def schema_exists(self, schema_id: int) -> bool:
        now = self._clock()
        with self._cache_lock:
            if self._known.get(schema_id, now) > now:
                return True
            if self._unknown_until.get(schema_id, now) > now:
                return False
        exists = super().schema_exists(schema_id)  # get_schema remembers a known id
        if not exists:
            with self._cache_lock:
                if len(self._unknown_until) >= _MAX_UNKNOWN:
                    self._unknown_until.clear()
                self._unknown_until[schema_id] = now + self._unknown_ttl_s
        return exists

    def close(self) -> None:
        self._pool.close()

    # -- helpers -----------------------------------------------------------------------------------------
    def _remember(self, schema_id: int) -> None:
        with self._cache_lock:
            if len(self._known) >= _MAX_UNKNOWN:
                self._known.clear()
            self._known[schema_id] = self._clock() + self._known_ttl_s
            self._unknown_until.pop(schema_id, None)

    def _forget(self, schema_ids: Iterable[int]) -> None:
        """After a permanent delete: the next ``schema_exists`` asks the database (another subject may
        still hold the id)."""
        with self._cache_lock:
            for schema_id in schema_ids:
                self._known.pop(schema_id, None)

    @staticmethod
    def _rows(conn: psycopg.Connection, where: str, params: Sequence[Any]) -> list[SubjectVersion]:
        return [
            _version(row) for row in conn.execute(f"{_ROWS} {where} ORDER BY v.version", params).fetchall()
        ]

    @staticmethod
    def _level(conn: psycopg.Connection, subject: str) -> CompatibilityLevel:
        row = conn.execute(
            "SELECT compatibility FROM schema_registry_config WHERE subject IN (%s, '') "
            "ORDER BY subject = '' LIMIT 1",
            (subject,),
        ).fetchone()
        return DEFAULT_LEVEL if row is None else CompatibilityLevel(row[0])

"""A Confluent-compatible schema registry (the REST subset ``confluent_kafka.schema_registry`` uses),
stored in Postgres or in memory.

    store = PostgresSchemaStore(database_url)
    url = RegistryServer(create_app(store), "127.0.0.1", 8081).start()
"""

from schemas.registry.app import create_app
from schemas.registry.base import CompatibilityCheck, SchemaStore
from schemas.registry.compat import CompatibilityChecker, json_incompatibilities
from schemas.registry.events import register_event_schemas
from schemas.registry.exceptions import (
    IncompatibleSchema,
    InvalidCompatibilityLevel,
    InvalidSchema,
    InvalidSubject,
    InvalidVersion,
    SchemaNotFound,
    SchemaRegistryError,
    SchemaStoreError,
    ServerStartError,
    SubjectConfigNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from schemas.registry.memory import MemorySchemaStore
from schemas.registry.model import CompatibilityLevel, Reference, Schema, SubjectVersion
from schemas.registry.postgres import PostgresSchemaStore
from schemas.registry.server import RegistryServer

__all__ = [
    "CompatibilityCheck",
    "CompatibilityChecker",
    "CompatibilityLevel",
    "IncompatibleSchema",
    "InvalidCompatibilityLevel",
    "InvalidSchema",
    "InvalidSubject",
    "InvalidVersion",
    "MemorySchemaStore",
    "PostgresSchemaStore",
    "Reference",
    "RegistryServer",
    "Schema",
    "SchemaNotFound",
    "SchemaRegistryError",
    "SchemaStore",
    "SchemaStoreError",
    "ServerStartError",
    "SubjectConfigNotFound",
    "SubjectNotFound",
    "SubjectNotSoftDeleted",
    "SubjectSoftDeleted",
    "SubjectVersion",
    "VersionNotFound",
    "VersionNotSoftDeleted",
    "VersionSoftDeleted",
    "create_app",
    "json_incompatibilities",
    "register_event_schemas",
]

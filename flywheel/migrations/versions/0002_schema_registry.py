"""Schema registry tables: schemas under global ids, subject versions, compatibility config.

A schema row is never deleted, so an id is never reused and the same schema (by fingerprint of its
canonical form, type and references) keeps its id under every subject. Versions are soft-deleted by
flag; a permanent delete removes the row. Config has one row per subject, '' for the global level.

Revision ID: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LEVELS = (
    "'NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'"
)


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE schema_registry_schemas (
            id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            schema_type text NOT NULL CHECK (schema_type IN ('AVRO', 'JSON', 'PROTOBUF')),
            schema_text text NOT NULL,
            refs        jsonb NOT NULL DEFAULT '[]'::jsonb,
            fingerprint text NOT NULL UNIQUE,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE schema_registry_versions (
            subject    text NOT NULL CHECK (subject <> ''),
            version    integer NOT NULL CHECK (version > 0),
            schema_id  integer NOT NULL REFERENCES schema_registry_schemas (id),
            deleted    boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (subject, version)
        );
        CREATE INDEX schema_registry_versions_schema_id ON schema_registry_versions (schema_id);
        CREATE UNIQUE INDEX schema_registry_versions_live_schema
            ON schema_registry_versions (subject, schema_id) WHERE NOT deleted;

        CREATE TABLE schema_registry_config (
            subject       text PRIMARY KEY,
            compatibility text NOT NULL CHECK (compatibility IN ({_LEVELS})),
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE schema_registry_config, schema_registry_versions, schema_registry_schemas")

"""Ingest tables: predictions, feedback (joined / pending / orphan), stream offsets, dead letters,
exactly-once counters.

Revision ID: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE predictions (
            id            bigint GENERATED ALWAYS AS IDENTITY,
            prediction_id text PRIMARY KEY,
            model         text NOT NULL,
            model_version text NOT NULL,
            variant       text NOT NULL,
            text          text NOT NULL,
            label         text NOT NULL,
            probabilities jsonb NOT NULL,
            latency_ms    double precision NOT NULL,
            user_id       text,
            domain        text,
            segment       text,
            ts            timestamptz NOT NULL,
            landed_at     timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE feedback (
            id              bigint GENERATED ALWAYS AS IDENTITY,
            feedback_id     text PRIMARY KEY,
            content_key     uuid NOT NULL UNIQUE,
            prediction_id   text NOT NULL,
            label           text,
            thumbs          text CHECK (thumbs IN ('up', 'down')),
            user_id         text,
            source          text NOT NULL,
            ts              timestamptz NOT NULL,
            status          text NOT NULL CHECK (status IN ('pending', 'joined', 'orphan')),
            model           text,
            model_version   text,
            variant         text,
            predicted_label text,
            probabilities   jsonb,
            received_at     timestamptz NOT NULL DEFAULT now(),
            resolved_at     timestamptz,
            CHECK ((label IS NULL) <> (thumbs IS NULL))
        );
        -- ids grow with insertion order, so a BRIN index serves id-range reads (Landed signals,
        -- reconciliation) at a fraction of a b-tree's insert cost
        CREATE INDEX predictions_id ON predictions USING brin (id);
        CREATE INDEX feedback_id ON feedback USING brin (id);
        -- only feedback still waiting for its prediction: small, and it serves both the late join and
        -- the orphan sweep
        CREATE INDEX feedback_pending ON feedback (prediction_id) WHERE status = 'pending';

        CREATE TABLE stream_offsets (
            group_id    text NOT NULL,
            topic       text NOT NULL,
            partition   integer NOT NULL,
            next_offset bigint NOT NULL,
            cluster_id  text NOT NULL DEFAULT '',
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, topic, partition)
        );

        CREATE TABLE dead_letters (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            group_id     text NOT NULL,
            cluster_id   text NOT NULL DEFAULT '',
            topic        text NOT NULL,
            partition    integer NOT NULL,
            "offset"     bigint NOT NULL,
            reason       text NOT NULL,
            detail       text NOT NULL,
            original     bytea,
            original_key bytea,
            created_at   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (group_id, cluster_id, topic, partition, "offset")
        );
        CREATE INDEX dead_letters_reason ON dead_letters (reason);

        CREATE TABLE stream_counters (
            group_id text NOT NULL,
            name     text NOT NULL,
            value    bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (group_id, name)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE stream_counters, dead_letters, stream_offsets, feedback, predictions")

"""Model lifecycle: the ``samples`` interface, the evaluation holdout, the embedding cache and the
record of every training run.

``samples`` is a view for now: every joined feedback row with a label (an explicit label, or thumbs up
on the served label) is an accepted sample with weight 1. The curation stage replaces the view with a
table of the same columns (status accepted | quarantined | rejected, weight, reasons).

Revision ID: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE VIEW samples AS
        SELECT f.id,
               f.feedback_id,
               f.prediction_id,
               p.text,
               COALESCE(f.label, CASE WHEN f.thumbs = 'up' THEN f.predicted_label END) AS label,
               'accepted'::text AS status,
               1.0::double precision AS weight,
               '[]'::jsonb AS reasons,
               f.user_id,
               p.domain,
               p.segment,
               f.ts,
               f.resolved_at AS landed_at
          FROM feedback f
          JOIN predictions p ON p.prediction_id = f.prediction_id
         WHERE f.status = 'joined'
           AND (f.label IS NOT NULL OR f.thumbs = 'up');

        -- the labelled corpus a bootstrap trains from: its 'holdout' split is the fixed base holdout,
        -- never trained on; its 'train' split joins every full retrain and the incremental replay
        CREATE TABLE corpus (
            id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            text     text NOT NULL,
            label    text NOT NULL,
            domain   text,
            segment  text,
            split    text NOT NULL CHECK (split IN ('train', 'holdout')),
            source   text NOT NULL,
            added_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX corpus_split ON corpus (split);

        -- sentence embeddings, computed once per (encoder, text): float32 little-endian vectors
        CREATE TABLE embeddings (
            encoder_id  text NOT NULL,
            text_sha256 bytea NOT NULL,
            vector      bytea NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (encoder_id, text_sha256)
        );

        CREATE TABLE training_runs (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id        uuid NOT NULL UNIQUE,
            model_name    text NOT NULL,
            trigger       text NOT NULL,
            request_id    text,
            mode          text NOT NULL CHECK (mode IN ('bootstrap', 'incremental', 'full')),
            status        text NOT NULL CHECK (status IN ('running', 'promoted', 'canary', 'refused', 'failed',
                                                           'abandoned')),
            watermark     bigint NOT NULL,
            sample_count  bigint NOT NULL,
            trained_count bigint NOT NULL DEFAULT 0,
            data_hash     text NOT NULL,
            parent_version text,
            version       text,
            kind          text,
            candidates    jsonb NOT NULL DEFAULT '[]',
            reason        text NOT NULL DEFAULT '',
            mlflow_run_id text,
            started_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            duration_s    double precision
        );
        CREATE INDEX training_runs_watermark ON training_runs (model_name, watermark);
        -- a retrain request (by its id) starts at most one run, however often it is replayed
        CREATE UNIQUE INDEX training_runs_request ON training_runs (request_id) WHERE request_id IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE training_runs, embeddings, corpus; DROP VIEW samples")

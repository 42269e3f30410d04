"""The curation stage: ``samples`` becomes a table the curation service writes (status, weight, reasons
and the scores behind them), with its annotators and its cursor.

Data: every row the 0003 view showed is copied as an ``accepted`` sample of weight 1 with its
``landed_at`` kept (= the feedback's ``resolved_at``), so the trainer's snapshot, counts and late-join
logic see exactly what they saw before. Those rows have ``curated_at`` NULL: the service computes their
signatures and scores on its first pass (their verdict stays until a new near-duplicate or an annotator
change re-decides their cluster). Joined feedback the view did not show (thumbs down) is curated by the
service's start-up sweep like any other pending row.

Revision ID: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE curated_samples (
            id              bigint PRIMARY KEY,             -- feedback.id
            feedback_id     text NOT NULL UNIQUE,
            prediction_id   text NOT NULL,
            text            text NOT NULL,
            label           text,                           -- NULL only for a thumbs down (rejected, no_label)
            status          text NOT NULL CHECK (status IN ('accepted', 'quarantined', 'rejected')),
            weight          double precision NOT NULL CHECK (weight >= 0),
            reasons         jsonb NOT NULL DEFAULT '[]',
            user_id         text,
            domain          text,
            segment         text,
            ts              timestamptz NOT NULL,
            landed_at       timestamptz NOT NULL DEFAULT now(),  -- when it last became or changed as a sample
            thumbs          text,
            predicted_label text,
            model_version   text,
            disagreement    boolean NOT NULL DEFAULT false,  -- the user contradicts the served prediction
            label_quality   double precision,                -- self-confidence: p(label) the prediction carried
            label_issue     boolean NOT NULL DEFAULT false,  -- confident learning puts it off the diagonal
            suggested_label text,                            -- the confident other class of a label issue
            trust           double precision,                -- the annotator's trust when curated
            cluster_id      bigint,                          -- id of the near-duplicate cluster's first sample
            text_hash       bytea,                           -- md5 of the normalised text
            minhash         bytea,                           -- MinHash signature, int32 little-endian
            lsh_bands       bigint[],
            curated_at      timestamptz,                     -- NULL: copied from the 0003 view, not scored yet
            CHECK (status <> 'accepted' OR label IS NOT NULL)
        );

        INSERT INTO curated_samples (id, feedback_id, prediction_id, text, label, status, weight, reasons, user_id,
                                     domain, segment, ts, landed_at, thumbs, predicted_label, model_version,
                                     disagreement, cluster_id)
        SELECT f.id, f.feedback_id, f.prediction_id, p.text,
               COALESCE(f.label, CASE WHEN f.thumbs = 'up' THEN f.predicted_label END),
               'accepted', 1.0, '[]'::jsonb, f.user_id, p.domain, p.segment, f.ts,
               COALESCE(f.resolved_at, f.received_at), f.thumbs, f.predicted_label, f.model_version,
               COALESCE(f.label <> f.predicted_label, false), f.id
          FROM feedback f
          JOIN predictions p ON p.prediction_id = f.prediction_id
         WHERE f.status = 'joined'
           AND (f.label IS NOT NULL OR f.thumbs = 'up');

        DROP VIEW samples;
        ALTER TABLE curated_samples RENAME TO samples;
        ALTER TABLE samples RENAME CONSTRAINT curated_samples_pkey TO samples_pkey;
        ALTER INDEX curated_samples_feedback_id_key RENAME TO samples_feedback_id_key;

        CREATE INDEX samples_status ON samples (status, id);
        CREATE INDEX samples_landed ON samples (landed_at);
        CREATE INDEX samples_cluster ON samples (cluster_id);
        CREATE INDEX samples_user ON samples (user_id) WHERE user_id IS NOT NULL;
        CREATE INDEX samples_unscored ON samples (id) WHERE curated_at IS NULL;
        CREATE INDEX samples_lsh ON samples USING gin (lsh_bands) WITH (fastupdate = off);  -- no pending list to scan

        -- per-user evidence: labels judged against the trust-weighted consensus of the same text
        CREATE TABLE annotators (
            user_id    text PRIMARY KEY,
            agree      double precision NOT NULL DEFAULT 0,
            disagree   double precision NOT NULL DEFAULT 0,
            labels     bigint NOT NULL DEFAULT 0,
            trust      double precision NOT NULL,
            low_trust  boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        -- where curation stands: feedback ids above the watermark, and rows resolved (late-joined) after
        -- the cursor minus a margin, are looked at; one row, locked by each batch
        CREATE TABLE curation_state (
            name            text PRIMARY KEY,
            watermark       bigint NOT NULL,
            resolved_cursor timestamptz,
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO curation_state (name, watermark, resolved_cursor)
        SELECT 'samples', COALESCE(max(id), 0), max(landed_at) FROM samples;

        -- late joins are found by resolved_at; rows are resolved roughly in order, so BRIN is enough
        CREATE INDEX feedback_resolved ON feedback USING brin (resolved_at);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX feedback_resolved;
        DROP TABLE curation_state, annotators, samples;
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
        """
    )

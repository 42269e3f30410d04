"""Many models: declared model specs (``models``), and every table that holds a model's data keyed by
model. Inputs that are not a text (a tabular row) are stored in an ``input`` jsonb column.

Data: samples take the model of the feedback (or prediction) they come from; the bootstrap corpus,
the curation cursor and the annotators belong to the default model (the ``flywheel.default_model``
option, which ``flywheel db upgrade`` sets from ``FLYWHEEL_MODEL_NAME``; default ``sentiment``), so
nothing is lost and the default model sees exactly the rows it saw before. Downgrade keeps the default
model's rows and deletes the rows of non-text inputs (version 0008 cannot hold them).

Revision ID: 0009
"""

from __future__ import annotations

from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _default_model() -> str:
    return context.config.get_main_option("flywheel.default_model") or "sentiment"


def upgrade() -> None:
    default = _default_model().replace("'", "''")
    op.execute(
        f"""
        CREATE TABLE models (
            name       text PRIMARY KEY,
            task       text NOT NULL,
            spec       jsonb NOT NULL,
            source     text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        ALTER TABLE predictions ALTER COLUMN text DROP NOT NULL, ADD COLUMN input jsonb,
            ADD CONSTRAINT predictions_has_input CHECK (text IS NOT NULL OR input IS NOT NULL);
        CREATE INDEX predictions_model ON predictions (model, id);

        ALTER TABLE samples ADD COLUMN model text, ADD COLUMN input jsonb, ALTER COLUMN text DROP NOT NULL;
        UPDATE samples s SET model = COALESCE(
            (SELECT f.model FROM feedback f WHERE f.id = s.id AND f.feedback_id = s.feedback_id),
            (SELECT p.model FROM predictions p WHERE p.prediction_id = s.prediction_id),
            '{default}');
        ALTER TABLE samples ALTER COLUMN model SET NOT NULL,
            ADD CONSTRAINT samples_has_input CHECK (text IS NOT NULL OR input IS NOT NULL);
        CREATE INDEX samples_model ON samples (model, status, id);

        ALTER TABLE corpus ADD COLUMN model text NOT NULL DEFAULT '{default}', ADD COLUMN input jsonb,
            ALTER COLUMN text DROP NOT NULL;
        ALTER TABLE corpus ALTER COLUMN model DROP DEFAULT;
        CREATE INDEX corpus_model ON corpus (model, split, id);

        -- one curation cursor per model: the single 'samples' cursor was the default model's
        UPDATE curation_state SET name = '{default}' WHERE name = 'samples'
           AND NOT EXISTS (SELECT 1 FROM curation_state WHERE name = '{default}');

        ALTER TABLE annotators ADD COLUMN model text NOT NULL DEFAULT '{default}';
        ALTER TABLE annotators ALTER COLUMN model DROP DEFAULT;
        ALTER TABLE annotators DROP CONSTRAINT annotators_pkey, ADD PRIMARY KEY (model, user_id);
        """
    )


def downgrade() -> None:
    default = _default_model().replace("'", "''")
    op.execute(
        f"""
        DELETE FROM annotators WHERE model <> '{default}';
        ALTER TABLE annotators DROP CONSTRAINT annotators_pkey, ADD PRIMARY KEY (user_id);
        ALTER TABLE annotators DROP COLUMN model;
        DELETE FROM curation_state WHERE name NOT IN ('{default}', 'samples');
        UPDATE curation_state SET name = 'samples' WHERE name = '{default}';
        DELETE FROM corpus WHERE text IS NULL;
        DROP INDEX corpus_model;
        ALTER TABLE corpus DROP COLUMN model, DROP COLUMN input, ALTER COLUMN text SET NOT NULL;
        DELETE FROM samples WHERE text IS NULL;
        DROP INDEX samples_model;
        ALTER TABLE samples DROP CONSTRAINT samples_has_input, DROP COLUMN model, DROP COLUMN input,
            ALTER COLUMN text SET NOT NULL;
        DELETE FROM feedback f USING predictions p WHERE p.prediction_id = f.prediction_id AND p.text IS NULL;
        DELETE FROM predictions WHERE text IS NULL;
        DROP INDEX predictions_model;
        ALTER TABLE predictions DROP CONSTRAINT predictions_has_input, DROP COLUMN input,
            ALTER COLUMN text SET NOT NULL;
        DROP TABLE models;
        """
    )

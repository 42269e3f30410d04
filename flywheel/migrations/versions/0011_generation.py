"""Text generation: a prediction may carry a generated ``output`` (jsonb: text, token counts, finish reason)
instead of a label and probabilities; feedback may carry a ``rating`` (1-5), a ``correction`` (the response
the user preferred) and an interaction ``signal`` (continued / abandoned) beside or instead of a label or
thumbs; a sample of a generator has a ``target`` (the response to learn) instead of a label.

Constraints keep their meaning for the classifiers: a prediction has a label and probabilities, or an
output; feedback has label and thumbs never both, and at least one judgement; an accepted sample has a
label or a target. Downgrade deletes the generation rows version 0010 cannot hold.

Revision ID: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE predictions ADD COLUMN output jsonb,
            ALTER COLUMN label DROP NOT NULL, ALTER COLUMN probabilities DROP NOT NULL,
            ADD CONSTRAINT predictions_has_output
                CHECK ((label IS NOT NULL AND probabilities IS NOT NULL) OR output IS NOT NULL);

        ALTER TABLE feedback ADD COLUMN rating smallint CHECK (rating BETWEEN 1 AND 5),
            ADD COLUMN correction text, ADD COLUMN signal text CHECK (signal IN ('continued', 'abandoned')),
            DROP CONSTRAINT feedback_check,
            ADD CONSTRAINT feedback_judgement CHECK (
                NOT (label IS NOT NULL AND thumbs IS NOT NULL)
                AND num_nonnulls(label, thumbs, rating, correction, signal) > 0);

        ALTER TABLE samples ADD COLUMN target text, ADD COLUMN rating smallint, ADD COLUMN signal text,
            DROP CONSTRAINT curated_samples_check,
            ADD CONSTRAINT samples_accepted_has_target
                CHECK (status <> 'accepted' OR label IS NOT NULL OR target IS NOT NULL);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM samples WHERE label IS NULL AND status = 'accepted';
        ALTER TABLE samples DROP CONSTRAINT samples_accepted_has_target,
            ADD CONSTRAINT curated_samples_check CHECK (status <> 'accepted' OR label IS NOT NULL),
            DROP COLUMN target, DROP COLUMN rating, DROP COLUMN signal;
        DELETE FROM feedback WHERE (label IS NULL) = (thumbs IS NULL);
        ALTER TABLE feedback DROP CONSTRAINT feedback_judgement,
            ADD CONSTRAINT feedback_check CHECK ((label IS NULL) <> (thumbs IS NULL)),
            DROP COLUMN rating, DROP COLUMN correction, DROP COLUMN signal;
        DELETE FROM feedback f USING predictions p WHERE p.prediction_id = f.prediction_id AND p.label IS NULL;
        DELETE FROM predictions WHERE label IS NULL OR probabilities IS NULL;
        ALTER TABLE predictions DROP CONSTRAINT predictions_has_output, DROP COLUMN output,
            ALTER COLUMN label SET NOT NULL, ALTER COLUMN probabilities SET NOT NULL;
        """
    )

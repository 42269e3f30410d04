"""Pending feedback is found through the content key: the index on ``feedback (prediction_id)`` goes.

Every pending row (feedback whose prediction has not landed, the whole of a stream that arrives before its
predictions) paid a random insert into ``feedback_pending (prediction_id)``: measured on the AVX2-only EPYC,
~2.5 of the backend's ~13 µs a row, and ~4 of ~18 µs of wall a row on this series' AMD EPYC with AVX-512
(docs/benchmarks.md, issue 22). The content key now starts with the first 8 bytes of md5(prediction_id)
(``streams.ingest.content_key``), so the unique index the key already has holds one prediction's feedback
in one range and serves the join when the prediction lands. ``feedback_pending`` becomes a partial index
on ``id``: its inserts go to the rightmost leaf, and it still serves "is anything pending", the orphan sweep
and the housekeeping join, which read every pending row anyway.

The stored keys are rewritten in place: bytes 0-7 become md5(prediction_id)'s, bytes 8-15 (md5 of the
content) stay, so a resend of old feedback still meets its row. The unique constraint is dropped for the
rewrite and built again after it (one sorted build instead of a random insert per row into an index that
keeps every old entry until vacuum; no transient conflict between a new key and an old one either). The
downgrade recomputes the whole md5 of the content (the key 0001-0013 computed) and restores the index on
``prediction_id``.

Revision ID: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_HEX = "replace(content_key::text, '-', '')"


def upgrade() -> None:
    op.execute(
        f"""
        DROP INDEX feedback_pending;
        ALTER TABLE feedback DROP CONSTRAINT feedback_content_key_key;
        UPDATE feedback SET content_key = overlay({_HEX} placing left(md5(prediction_id), 16) from 1)::uuid
         WHERE left({_HEX}, 16) <> left(md5(prediction_id), 16);
        ALTER TABLE feedback ADD CONSTRAINT feedback_content_key_key UNIQUE (content_key);
        CREATE INDEX feedback_pending ON feedback (id) WHERE status = 'pending';
        """
    )


def downgrade() -> None:
    # the content as streams.ingest.content_key joins it; a generator's judgement only when there is one
    op.execute(
        """
        DROP INDEX feedback_pending;
        ALTER TABLE feedback DROP CONSTRAINT feedback_content_key_key;
        UPDATE feedback SET content_key = md5(
            concat_ws(chr(31), prediction_id, coalesce(user_id, ''), coalesce(label, ''), coalesce(thumbs, ''))
            || CASE WHEN rating IS NULL AND correction IS NULL AND signal IS NULL THEN ''
                    ELSE concat_ws(chr(31), '', coalesce(rating::text, ''), coalesce(correction, ''),
                                   coalesce(signal, '')) END)::uuid;
        ALTER TABLE feedback ADD CONSTRAINT feedback_content_key_key UNIQUE (content_key);
        CREATE INDEX feedback_pending ON feedback (prediction_id) WHERE status = 'pending';
        """
    )

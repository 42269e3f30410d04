"""Data-to-deploy: the time from a feedback event (its event time ``ts``) to the first prediction served by
a model version trained on it, per model (:mod:`registry.deploys`).

- ``version_feedback``: per registered version, the samples it trained on that no served version had
  trained on yet (written by the trainer before the version's aliases move); emptied for a version once it
  has served (its rows move to ``feedback_served``).
- ``version_first_served``: one row per model and version, written by the serving pod that served it first
  (first writer wins: several pods, restarts and replays add nothing).
- ``feedback_served``: one row per model and feedback sample, the version that first served a model trained
  on it and the seconds from the feedback's event time to that prediction. One row per sample is what keeps
  the histogram from counting an event twice.

Revision ID: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE version_feedback (
            model      text NOT NULL,
            version    text NOT NULL,
            sample_id  bigint NOT NULL,
            ts         timestamptz NOT NULL,
            PRIMARY KEY (model, version, sample_id)
        );
        CREATE TABLE version_first_served (
            model      text NOT NULL,
            version    text NOT NULL,
            served_at  timestamptz NOT NULL,
            pod        text NOT NULL DEFAULT '',
            feedback   integer NOT NULL DEFAULT 0,  -- samples whose first deployment this was
            PRIMARY KEY (model, version)
        );
        CREATE TABLE feedback_served (
            model      text NOT NULL,
            sample_id  bigint NOT NULL,
            ts         timestamptz NOT NULL,
            version    text NOT NULL,
            served_at  timestamptz NOT NULL,
            seconds    double precision NOT NULL,
            PRIMARY KEY (model, sample_id)
        );
        CREATE INDEX feedback_served_at ON feedback_served (model, served_at);
        """)


def downgrade() -> None:
    op.execute("DROP TABLE feedback_served, version_first_served, version_feedback")

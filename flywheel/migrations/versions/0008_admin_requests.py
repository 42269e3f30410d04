"""Admin requests: the work a serving pod's admin route asked the trainers for (retrain, bootstrap,
evaluate), so that any pod can answer ``GET /training/{id}``. A pod inserts the row ``queued`` and
publishes a ``RetrainRequest`` with the same id; the trainer that takes it moves it to ``running`` (the
claim: a replayed request finds it taken) and to ``done`` or ``failed`` with the outcome (a run's status,
or ``evaluated``), its run id, its result (an evaluation report) or the error. A bootstrap's corpus
travels here (``params``), never on Kafka.

Revision ID: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE admin_requests (
            id          text PRIMARY KEY,
            model_name  text NOT NULL,
            action      text NOT NULL CHECK (action IN ('retrain', 'bootstrap', 'evaluate')),
            status      text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
            outcome     text,
            run_id      uuid,
            params      jsonb NOT NULL DEFAULT '{}',
            result      jsonb,
            error       text,
            created_at  timestamptz NOT NULL DEFAULT now(),
            started_at  timestamptz,
            finished_at timestamptz
        );
        CREATE INDEX admin_requests_model ON admin_requests (model_name, created_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE admin_requests")

"""Drift checks: every verdict of the drift monitor on the serving champion (domain-classifier AUC, PSI of
predicted labels, confidence shift, label-free accuracy estimate) and whether it asked for a retrain; and
the review queue's claims (a prediction handed to a reviewer is not handed to another for a while).

Revision ID: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE drift_checks (
            id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            model_name         text NOT NULL,
            version            text NOT NULL,
            current_rows       integer NOT NULL,
            reference_rows     integer NOT NULL,
            domain_auc         double precision NOT NULL,
            psi                double precision NOT NULL,
            confidence_shift   double precision NOT NULL,
            reference_accuracy double precision NOT NULL,
            estimated_accuracy double precision NOT NULL,
            crossed            text[] NOT NULL DEFAULT '{}',
            alerted            boolean NOT NULL DEFAULT false,
            note               text NOT NULL DEFAULT '',
            checked_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX drift_checks_model ON drift_checks (model_name, version, checked_at);

        CREATE TABLE review_claims (
            prediction_id text PRIMARY KEY,
            reviewer      text NOT NULL,
            claimed_at    timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE drift_checks, review_claims")

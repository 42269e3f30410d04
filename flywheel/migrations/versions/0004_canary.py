"""Canary controller decisions: every action (promote, retire, rollback, retrain) with the evidence
behind it (per-arm counts of joined feedback, the sequential test's statistic and thresholds).

Revision ID: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE canary_decisions (
            id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            model_name       text NOT NULL,
            action           text NOT NULL CHECK (action IN ('promote', 'retire', 'rollback', 'retrain')),
            verdict          text CHECK (verdict IN ('promote', 'rollback', 'continue')),
            version          text NOT NULL,
            champion_version text,
            statistic        double precision,
            lower_threshold  double precision,
            upper_threshold  double precision,
            champion_n       bigint,
            champion_correct bigint,
            canary_n         bigint,
            canary_correct   bigint,
            reason           text NOT NULL,
            decided_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX canary_decisions_model ON canary_decisions (model_name, decided_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE canary_decisions")

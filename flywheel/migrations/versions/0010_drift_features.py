"""Drift checks of tabular models: ``features`` holds the per-feature detail of a check (name, type, PSI,
chi-square p-value, Jensen-Shannon distance, missing shares, the signal it crossed), most drifted first;
``[]`` for a text model. The other columns keep their meaning for both tasks (``domain_auc`` is the
domain classifier over texts or over every feature; ``psi`` is of the predicted labels).

Revision ID: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE drift_checks ADD COLUMN features jsonb NOT NULL DEFAULT '[]'::jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE drift_checks DROP COLUMN features")

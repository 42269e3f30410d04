"""A BRIN index on ``feedback.received_at``: the canary controller and the champion watchdog count the
joined feedback of one version since a moment, and rows arrive in ``received_at`` order, so a BRIN index
narrows that scan to the recent block ranges at next to no cost for ingest (a b-tree would be paid on
every landed row).

Revision ID: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX feedback_received ON feedback USING brin (received_at)")


def downgrade() -> None:
    op.execute("DROP INDEX feedback_received")

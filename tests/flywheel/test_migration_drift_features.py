"""Migration 0010 (per-feature drift detail): checks recorded before it read as having no features; a
downgrade drops the detail and keeps every check; upgrading again restores the column."""

from __future__ import annotations

from alembic import command

from core import db
from flywheel import migrate


def test_drift_checks_keep_their_rows_across_0010(db_url: str) -> None:
    config = migrate.alembic_config(db_url)
    command.downgrade(config, "0009")
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO drift_checks (model_name, version, current_rows, reference_rows, domain_auc, psi, "
                     "confidence_shift, reference_accuracy, estimated_accuracy) "
                     "VALUES ('sentiment', '1', 300, 300, 0.5, 0.01, 0.0, 0.8, 0.8)")
    migrate.upgrade(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT model_name, features FROM drift_checks").fetchall() == [("sentiment", [])]
        conn.execute("INSERT INTO drift_checks (model_name, version, current_rows, reference_rows, domain_auc, psi, "
                     "confidence_shift, reference_accuracy, estimated_accuracy, features) VALUES ('churn', '2', 300, "
                     "300, 0.7, 0.3, 0.0, 0.8, 0.7, '[{\"name\": \"income\", \"psi\": 1.2}]')")
    command.downgrade(config, "0009")
    with db.connect(db_url, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT model_name FROM drift_checks ORDER BY id")] == ["sentiment", "churn"]
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'drift_checks'")}
        assert "features" not in columns
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)

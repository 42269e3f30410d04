"""Migration 0013: one BRIN index over ``feedback (id, received_at, resolved_at)`` replaces the three
one-column ones; it serves each column's range reads, rows survive a downgrade and upgrade, and a downgrade
brings the three indexes back."""

from __future__ import annotations

import psycopg
from alembic import command

from core import db
from flywheel import migrate

_ROWS = """
INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status, received_at, resolved_at)
SELECT 'f' || i, md5(i::text)::uuid, 'p' || i, 'positive', 'test', now(), 'joined',
       timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i),
       timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i)
  FROM generate_series(1, 20000) i
"""


def _feedback_indexes(db_url: str) -> dict[str, str]:
    with db.connect(db_url, autocommit=True) as conn:
        return dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'feedback'").fetchall())


def _plan(conn: psycopg.Connection, query: str) -> str:
    return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query}"))


def test_one_brin_index_serves_id_received_and_resolved_reads(db_url: str) -> None:
    indexes = _feedback_indexes(db_url)
    assert "USING brin (id, received_at, resolved_at)" in indexes["feedback_brin"]
    assert not {"feedback_id", "feedback_received", "feedback_resolved"} & set(indexes)
    assert [name for name, ddl in indexes.items() if "USING brin" in ddl] == ["feedback_brin"]
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute(_ROWS)
        conn.execute("ANALYZE feedback")
        conn.execute("SET enable_seqscan = off")  # whether the index can serve each read, not the planner's choice
        for where in ("id > 19000", "received_at >= '2026-01-01 05:31:41+00'",
                      "resolved_at >= '2026-01-01 05:31:41+00'",
                      "id > 19000 OR resolved_at >= '2026-01-01 05:31:41+00'"):
            plan = _plan(conn, f"SELECT count(*) FROM feedback WHERE {where}")
            assert "Bitmap Index Scan on feedback_brin" in plan, (where, plan)
        assert conn.execute("SELECT count(*) FROM feedback WHERE received_at >= '2026-01-01 05:31:41+00'"
                            ).fetchone() == (100,)


def test_rows_and_indexes_survive_a_downgrade_across_0013(db_url: str) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute(_ROWS)
    command.downgrade(migrate.alembic_config(db_url), "0012")
    indexes = _feedback_indexes(db_url)
    assert "feedback_brin" not in indexes
    assert "USING brin (id)" in indexes["feedback_id"]
    assert "USING brin (received_at)" in indexes["feedback_received"]
    assert "USING brin (resolved_at)" in indexes["feedback_resolved"]
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)
    assert "feedback_brin" in _feedback_indexes(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT feedback_id) FROM feedback").fetchone() == (20000, 20000)

"""Migration 0014: content keys stored by 0001-0013 (md5 of the content) get md5(prediction_id)'s first 8
bytes, ``feedback_pending`` moves from ``prediction_id`` to ``id``; feedback that was pending before the
upgrade is joined when its prediction lands after it, a resend of old feedback with a new id is still a
duplicate, and a downgrade gives back the old keys and index."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from alembic import command

from core import db
from core.settings import FlywheelSettings
from flywheel import migrate
from schemas.fast import FeedbackRecord, PredictionRecord
from streams.base import Item
from streams.ingest import IngestProcessor, content_key

# the key as 0001-0013 computed it; a generator's judgement appended when there is one
_OLD_KEY = ("md5(concat_ws(chr(31), prediction_id, coalesce(user_id, ''), coalesce(label, ''), coalesce(thumbs, ''))"
            " || CASE WHEN rating IS NULL AND correction IS NULL AND signal IS NULL THEN '' ELSE concat_ws(chr(31), "
            "'', coalesce(rating::text, ''), coalesce(correction, ''), coalesce(signal, '')) END)::uuid")
_ROWS = [  # feedback_id, prediction_id, user, label, thumbs, rating, correction, status
    ("f1", "p1", "u1", "positive", None, None, None, "pending"),
    ("f2", "p1", None, None, "up", None, None, "pending"),
    ("f3", "p2", "u1", "negative", None, None, None, "joined"),
    ("f4", "p3", "u2", None, None, 4, "Hello there.", "joined"),
]
TS = datetime.now(UTC)


def _insert_old(conn: psycopg.Connection) -> None:
    for fid, pid, user, label, thumbs, rating, correction, status in _ROWS:
        conn.execute("INSERT INTO feedback (feedback_id, content_key, prediction_id, user_id, label, thumbs, rating, "
                     "correction, source, ts, status) VALUES (%s, gen_random_uuid(), %s, %s, %s, %s, %s, %s, 'test', "
                     "now(), %s)", (fid, pid, user, label, thumbs, rating, correction, status))
    conn.execute(f"UPDATE feedback SET content_key = {_OLD_KEY}")


def _keys(conn: psycopg.Connection) -> dict[str, bytes]:
    return {r[0]: r[1].bytes for r in conn.execute("SELECT feedback_id, content_key FROM feedback")}


def _pending_index(db_url: str) -> str:
    with db.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'feedback_pending'").fetchone()
    assert row is not None
    return str(row[0])


def test_old_keys_are_rewritten_and_old_pending_feedback_still_joins(db_url: str) -> None:
    command.downgrade(migrate.alembic_config(db_url), "0013")
    assert "(prediction_id) WHERE (status = 'pending'::text)" in _pending_index(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        _insert_old(conn)
        old = _keys(conn)
    migrate.upgrade(db_url)
    assert "(id) WHERE (status = 'pending'::text)" in _pending_index(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        new = _keys(conn)
        for fid, pid, user, label, thumbs, rating, correction, _ in _ROWS:
            extra = (None, None, None) if rating is None else (rating, correction, None)
            assert new[fid] == content_key(pid, user, label, thumbs, extra), fid
            assert new[fid][8:] == old[fid][8:]  # the content's half is kept
        processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
        processor.prepare(conn)
        with conn.transaction():
            out = processor.write(conn, [
                Item("t", 0, 0, PredictionRecord(ts=TS, prediction_id="p1", model="m", model_version="1", text="t",
                                                 label="negative", probabilities={"negative": 1.0},
                                                 latency_ms=1.0)),
                # f1's content again under a new id: a duplicate
                Item("t", 0, 1, FeedbackRecord(ts=TS, feedback_id="f1-resent", prediction_id="p1",
                                               label="positive", user_id="u1", source="test"))])
        assert out.counts["duplicates:feedback"] == 1
        assert out.counts["joined"] == 2
        assert conn.execute("SELECT count(*) FROM feedback WHERE status = 'joined' AND prediction_id = 'p1'"
                            ).fetchone() == (2,)


def test_a_downgrade_gives_back_the_old_keys_and_index(db_url: str) -> None:
    command.downgrade(migrate.alembic_config(db_url), "0013")
    with db.connect(db_url, autocommit=True) as conn:
        _insert_old(conn)
        old = _keys(conn)
    migrate.upgrade(db_url)
    command.downgrade(migrate.alembic_config(db_url), "0013")
    assert "(prediction_id) WHERE (status = 'pending'::text)" in _pending_index(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        assert _keys(conn) == old
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)

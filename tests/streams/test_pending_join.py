"""Feedback that lands before its prediction waits as ``pending`` and is joined when the prediction lands,
found through the content key's index (migration 0014: no index on ``feedback (prediction_id)``). Checked
through ``IngestProcessor.write`` and ``housekeeping`` on real Postgres, and the plan on a table where most
rows are pending (a feedback stream ahead of its predictions)."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from core.settings import FlywheelSettings
from schemas.fast import FeedbackRecord, PredictionRecord
from streams.base import Item
from streams.ingest import _JOIN_STAGED, IngestProcessor, ModelFeedback

TS = datetime.now(UTC)


def _pred(pid: str, label: str = "positive", model: str = "m") -> PredictionRecord:
    return PredictionRecord(ts=TS, prediction_id=pid, model=model, model_version="1.2.0", text="t", label=label,
                            probabilities={"positive": 0.9, "negative": 0.1}, latency_ms=1.0)


def _fb(fid: str, pid: str, user: str, label: str = "negative") -> FeedbackRecord:
    return FeedbackRecord(ts=TS, feedback_id=fid, prediction_id=pid, label=label, user_id=user, source="test")


def _write(processor: IngestProcessor, conn: psycopg.Connection, events: list) -> dict[str, int]:
    with conn.transaction():
        out = processor.write(conn, [Item("t", 0, i, e) for i, e in enumerate(events)])
    return dict(out.counts)


def _status(conn: psycopg.Connection) -> dict[str, tuple[object, ...]]:
    rows = conn.execute("SELECT feedback_id, status, model_version, predicted_label, resolved_at IS NOT NULL "
                        "FROM feedback").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_pending_feedback_joins_when_its_prediction_lands(db_url: str) -> None:
    processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        counts = _write(processor, conn, [_fb("f1", "p1", "u1"), _fb("f2", "p1", "u2"), _fb("f3", "p2", "u1"),
                                          _fb("f4", "p3", "u1")])
        assert counts["pending"] == 4
        # p1 (two feedback rows) and p2 land; p3 does not: its feedback stays pending
        counts = _write(processor, conn, [_pred("p1"), _pred("p2", "negative"), _pred("p9")])
        assert counts["joined"] == 3
        status = _status(conn)
        assert status["f1"] == status["f2"] == ("joined", "1.2.0", "positive", True)
        assert status["f3"] == ("joined", "1.2.0", "negative", True)
        assert status["f4"] == ("pending", None, None, False)
        # a later batch of predictions joins nothing twice
        assert _write(processor, conn, [_pred("p10")]).get("joined", 0) == 0
        assert _status(conn) == status


def test_feedback_naming_another_model_is_not_joined(db_url: str) -> None:
    processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        other = ModelFeedback("f1", "p1", "other-model", "negative", None, "u1", "test", TS, None, None, None)
        mine = ModelFeedback("f2", "p1", "m", "negative", None, "u2", "test", TS, None, None, None)
        _write(processor, conn, [other, mine])
        assert _write(processor, conn, [_pred("p1")])["joined"] == 1
        assert {k: v[0] for k, v in _status(conn).items()} == {"f1": "pending", "f2": "joined"}


def test_housekeeping_joins_what_a_concurrent_batch_missed(db_url: str) -> None:
    """The race two instances can have (a prediction and its feedback committed concurrently, each seeing
    nothing of the other) is healed by housekeeping, which reads every pending row."""
    processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        _write(processor, conn, [_pred("p1")])
        # as if landed by another instance that had not seen p1 yet
        _write(processor, conn, [_fb("f1", "p1", "u1")])
        conn.execute("UPDATE feedback SET status = 'pending', model_version = NULL, predicted_label = NULL, "
                     "resolved_at = NULL")
        with conn.transaction():
            assert processor.housekeeping(conn).counts["joined"] == 1
        assert _status(conn)["f1"] == ("joined", "1.2.0", "positive", True)


@pytest.mark.parametrize("analysed", [True, False], ids=["analysed", "statistics-lag"])
def test_the_join_probes_the_content_key_index_when_most_rows_are_pending(db_url: str, analysed: bool) -> None:
    """200k feedback rows, 90% pending: the join of a staged batch reads the content-key index once per
    staged prediction and updates by TID, never scanning ``feedback`` nor the partial index of pending rows
    (with statistics that lag the table it was ANDed with the key range, and read whole on every probe: 1.8 ms
    a staged prediction with 100,000 pending rows); and it joins the right rows."""
    processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status)
            SELECT 'f' || g, overlay(md5(g::text) placing left(md5('p' || g), 16) from 1)::uuid, 'p' || g,
                   'positive', 'test', now(), CASE WHEN g > 20000 THEN 'pending' ELSE 'joined' END
            FROM generate_series(1, 200000) g""")
        if analysed:
            conn.execute("ANALYZE feedback")
        processor.prepare(conn)
        with conn.transaction():
            conn.execute("INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, "
                         "probabilities, latency_ms, ts) SELECT 'p' || g, 'm', '1', 'champion', 't', 'negative', "
                         "'{}', 1, now() FROM generate_series(150001, 150100) g")
            conn.execute("INSERT INTO stg_predictions (ord, prediction_id) "
                         "SELECT g, 'p' || g FROM generate_series(150001, 150100) g")
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + _JOIN_STAGED))
            assert "feedback_content_key_key" in plan and "Tid Scan on feedback" in plan, plan
            assert "Seq Scan on feedback" not in plan and "feedback_pending" not in plan, plan
            assert conn.execute(_JOIN_STAGED).fetchone()[0] == 100
        assert conn.execute("SELECT count(*) FROM feedback WHERE status = 'joined' AND predicted_label = 'negative'"
                            ).fetchone() == (100,)

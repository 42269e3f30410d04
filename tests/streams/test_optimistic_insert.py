"""The ingest INSERT tried without ON CONFLICT (streams.ingest.Optimism) lands exactly what
ON CONFLICT DO NOTHING in batch order lands: checked on real Postgres against that reference, with
duplicates inside a batch (by id, by content, both) and rows that already exist from earlier batches."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from core.settings import FlywheelSettings
from schemas.fast import FeedbackRecord, PredictionRecord
from streams.base import Item
from streams.ingest import IngestProcessor, Optimism, content_key

_REFERENCE = """
INSERT INTO feedback (feedback_id, content_key, prediction_id, label, thumbs, user_id, source, ts, status)
SELECT f, k::uuid, p, l, NULL, u, 'test', now(), 'pending'
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS x(f, k, p, l, u, o)
ORDER BY o
ON CONFLICT DO NOTHING
"""


def _batches(rng: random.Random, n_batches: int, size: int) -> list[list[FeedbackRecord]]:
    """Feedback with collisions: exact resends, new ids for old content, old ids for new content,
    within a batch and across batches."""
    ts = datetime.now(UTC)
    pool: list[FeedbackRecord] = []
    batches = []
    for _ in range(n_batches):
        batch = []
        for _ in range(size):
            r = rng.random()
            if pool and r < 0.15:
                batch.append(rng.choice(pool))  # exact resend (this batch or an earlier one)
                continue
            if pool and r < 0.25:
                old = rng.choice(pool)  # same content, new id
                e = FeedbackRecord(ts=ts, feedback_id=uuid.uuid4().hex, prediction_id=old.prediction_id,
                                   label=old.label, user_id=old.user_id, source="test")
            elif pool and r < 0.32:
                old = rng.choice(pool)  # same id, other content
                e = FeedbackRecord(ts=ts, feedback_id=old.feedback_id, prediction_id=uuid.uuid4().hex,
                                   label="negative", user_id="u-other", source="test")
            else:
                e = FeedbackRecord(ts=ts, feedback_id=uuid.uuid4().hex, prediction_id=uuid.uuid4().hex,
                                   label=rng.choice(["negative", "positive"]), user_id=f"u{rng.randrange(9)}",
                                   source="test")
            pool.append(e)
            batch.append(e)
        batches.append(batch)
    return batches


def _rows(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT feedback_id, content_key, prediction_id, label, user_id FROM feedback "
                        "ORDER BY feedback_id").fetchall()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_optimistic_write_lands_what_on_conflict_in_order_lands(db_url: str, seed: int) -> None:
    batches = _batches(random.Random(seed), n_batches=12, size=60)
    processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
    processor.optimism = Optimism(pause=1, max_pause=2)  # attempt often: most batches here conflict
    landed = duplicates = retries = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        for batch in batches:
            with conn.transaction():
                out = processor.write(conn, [Item("t", 0, i, e) for i, e in enumerate(batch)])
            landed += out.counts["landed:feedback"]
            duplicates += out.counts["duplicates:feedback"]
            retries += out.counts["insert_retries:feedback"]
        got = _rows(conn)
        conn.execute("TRUNCATE feedback")
        for batch in batches:
            conn.execute(_REFERENCE, ([e.feedback_id for e in batch],
                                      [content_key(e.prediction_id, e.user_id, e.label, e.thumbs).hex() for e in batch],
                                      [e.prediction_id for e in batch], [e.label for e in batch],
                                      [e.user_id for e in batch]))
        want = _rows(conn)
    assert got == want
    assert landed == len(want)
    assert landed + duplicates == sum(map(len, batches))
    assert retries >= 1  # the fallback ran (rows from earlier batches) ...
    assert retries < len(batches)  # ... and the attempt succeeded at least once


def test_predictions_deduplicated_in_batch_and_across_batches(db_url: str) -> None:
    ts = datetime.now(UTC)

    def pred(pid: str, label: str) -> PredictionRecord:
        return PredictionRecord(ts=ts, prediction_id=pid, model="m", model_version="1", text="t", label=label,
                                probabilities={"positive": 1.0, "negative": 0.0}, latency_ms=1.0)

    processor = IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        outs = []
        for batch in ([pred("a", "positive"), pred("a", "negative"), pred("b", "positive")],
                      [pred("b", "negative"), pred("c", "positive")]):
            with conn.transaction():
                outs.append(processor.write(conn, [Item("t", 0, i, e) for i, e in enumerate(batch)]))
        rows = conn.execute("SELECT prediction_id, label FROM predictions ORDER BY prediction_id").fetchall()
    assert rows == [("a", "positive"), ("b", "positive"), ("c", "positive")]  # the first of each id wins
    assert [(o.counts["landed:prediction"], o.counts["duplicates:prediction"]) for o in outs] == [(2, 1), (1, 1)]
    assert outs[1].counts["insert_retries:predictions"] == 1


def test_optimism_pauses_after_conflicts_doubling_up_to_a_cap() -> None:
    o = Optimism(pause=2, max_pause=5)
    assert o.attempt("t")
    o.conflicted("t")
    assert [o.attempt("t") for _ in range(3)] == [False, False, True]
    o.conflicted("t")  # a second conflict in a row: pause 4
    assert [o.attempt("t") for _ in range(5)] == [False] * 4 + [True]
    o.conflicted("t")  # capped at 5
    assert [o.attempt("t") for _ in range(6)] == [False] * 5 + [True]
    o.succeeded("t")
    o.conflicted("t")  # after a success: back to 2
    assert [o.attempt("t") for _ in range(3)] == [False, False, True]
    assert o.attempt("other")


def test_an_isolated_conflict_pauses_nothing_until_a_second_in_a_row() -> None:
    o = Optimism(pause=2, max_pause=8, isolated_share=0.05)
    o.conflicted("t", existing=1, rows=100)  # one row of a hundred was there: the next batch is tried
    assert o.attempt("t")
    o.conflicted("t", existing=1, rows=100)  # a second in a row: the pause starts at 2
    assert [o.attempt("t") for _ in range(3)] == [False, False, True]
    o.conflicted("t", existing=1, rows=100)  # a third: 4
    assert [o.attempt("t") for _ in range(5)] == [False] * 4 + [True]
    o.succeeded("t")
    o.conflicted("t", existing=5, rows=100)  # 5% of the batch (a replay's edge): not isolated
    assert [o.attempt("t") for _ in range(3)] == [False, False, True]
    o.succeeded("t")
    o.conflicted("t", existing=0, rows=0)  # nothing known to be there, nothing to compare: the pause starts
    assert not o.attempt("t")


def test_the_pending_check_reads_the_partial_index_when_pending_rows_look_common(db_url: str) -> None:
    """Every batch holding predictions asks whether any feedback is pending. With the newest 10% of
    200k feedback rows pending (a prediction stream behind its feedback) the statistics make a plain
    EXISTS a sequential scan through every joined row first; the check goes through ``feedback_pending``."""
    from streams.ingest import _ANY_PENDING

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO feedback (feedback_id, content_key, prediction_id, label, source, ts, status)
            SELECT 'f' || g, md5(g::text)::uuid, 'p' || g, 'positive', 'test', now(),
                   CASE WHEN g > 180000 THEN 'pending' ELSE 'joined' END
            FROM generate_series(1, 200000) g""")
        conn.execute("ANALYZE feedback")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + _ANY_PENDING))
        assert "feedback_pending" in plan and "Seq Scan" not in plan, plan
        assert conn.execute(_ANY_PENDING).fetchone() is not None
        conn.execute("UPDATE feedback SET status = 'orphan' WHERE status = 'pending'")
        assert conn.execute(_ANY_PENDING).fetchone() is None


@pytest.mark.parametrize(("prediction_id", "user_id", "label", "thumbs"), [
    ("p-1", "u-1", "positive", None), ("p-2", None, None, "up"), ("prédiction-é", "usér ☃", "négatif", None),
    ("p\x1f3", "", "neutral", None)])
def test_content_keys_are_the_md5_postgres_computes(db_url: str, prediction_id: str, user_id: str | None,
                                                      label: str | None, thumbs: str | None) -> None:
    """The key computed in the processor (CPython's own MD5 when it has one) is the one SQL gives: md5 of the
    content, its first 8 bytes replaced by md5(prediction_id)'s (what migration 0014 and the join rely on)."""
    with psycopg.connect(db_url) as conn:
        expected = conn.execute(
            "SELECT overlay(md5(concat_ws(chr(31), %s::text, coalesce(%s, ''), coalesce(%s, ''), coalesce(%s, '')))"
            " placing left(md5(%s::text), 16) from 1)::uuid",
            (prediction_id, user_id, label, thumbs, prediction_id)).fetchone()
    assert expected is not None
    assert content_key(prediction_id, user_id, label, thumbs) == expected[0].bytes


def test_one_predictions_feedback_is_one_range_of_content_keys() -> None:
    """Every key of a prediction's feedback shares its 8-byte prefix (what ``_JOIN_STAGED`` scans); keys of
    other content differ in the rest."""
    keys = {content_key("p-1", u, lab, None) for u in ("u1", "u2", None) for lab in ("positive", "negative")}
    keys |= {content_key("p-1", "u1", None, "up"), content_key("p-1", "u1", "positive", None, (4, "hi", None))}
    assert len(keys) == 8
    assert {k[:8] for k in keys} == {hashlib.md5(b"p-1").digest()[:8]}
    assert content_key("p-2", "u1", "positive", None)[:8] != content_key("p-1", "u1", "positive", None)[:8]

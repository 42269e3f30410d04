"""Feedback none of whose predictions has landed is copied straight into ``feedback`` as pending (no staging,
no join); every other batch goes the staged way and is joined in SQL. Checked on real Postgres through
``IngestProcessor.write``: which way each batch went (the staging table holds the batch's rows inside the
transaction only when it was staged), the rows either way lands, the id range, the switch back and forth, and
the cases that must take the staged way."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from core.settings import FlywheelSettings
from schemas.fast import FeedbackRecord, PredictionRecord
from streams.base import Item, Outcome
from streams.ingest import _PROBE_LANDED, IngestProcessor, ModelFeedback

TS = datetime.now(UTC)


def _pred(pid: str, model: str = "m") -> PredictionRecord:
    return PredictionRecord(ts=TS, prediction_id=pid, model=model, model_version="1.2.0", text="t", label="positive",
                            probabilities={"positive": 0.9, "negative": 0.1}, latency_ms=1.0)


def _fb(fid: str, pid: str, user: str = "u1", label: str = "negative") -> FeedbackRecord:
    return FeedbackRecord(ts=TS, feedback_id=fid, prediction_id=pid, label=label, user_id=user, source="test")


def _write(processor: IngestProcessor, conn: psycopg.Connection, events: list) -> tuple[Outcome, int]:
    """The batch's outcome and how many rows it staged."""
    with conn.transaction():
        out = processor.write(conn, [Item("t", 0, i, e) for i, e in enumerate(events)])
        staged = conn.execute("SELECT count(*) FROM stg_feedback").fetchone()
    assert staged is not None
    return out, staged[0]


def _rows(conn: psycopg.Connection) -> dict[str, tuple[object, ...]]:
    rows = conn.execute("SELECT feedback_id, status, model, model_version, predicted_label, probabilities, "
                        "resolved_at IS NOT NULL, label, user_id, source, ts, rating, correction, signal "
                        "FROM feedback").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.fixture
def processor(db_url: str) -> IngestProcessor:
    return IngestProcessor.from_settings(FlywheelSettings(database_url=db_url, metrics_port=0))


def test_pending_feedback_is_copied_in_and_joined_feedback_staged_switching_with_the_stream(
        db_url: str, processor: IngestProcessor) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        # no prediction landed: copied straight in, pending, nothing staged
        out, staged = _write(processor, conn, [_fb("f1", "p1"), _fb("f2", "p2", "u2", "positive")])
        assert staged == 0
        assert (out.counts["landed:feedback"], out.counts["pending"], out.counts["joined"]) == (2, 2, 0)
        ids = [r[0] for r in conn.execute("SELECT id FROM feedback ORDER BY id")]
        lo, hi = out.id_ranges["feedback"]
        assert lo <= ids[0] and hi == ids[-1]  # the batch's range: above the identity's value before it
        first = _rows(conn)
        assert first["f1"] == ("pending", None, None, None, None, False, "negative", "u1", "test", TS, None, None, None)
        assert first["f2"][0] == "pending" and first["f2"][6:8] == ("positive", "u2")

        # p3 lands, then feedback on it and on a prediction still missing: the probe finds p3, so staged and joined
        _write(processor, conn, [_pred("p3")])
        out, staged = _write(processor, conn, [_fb("f3", "p3"), _fb("f4", "p4")])
        assert staged == 2
        assert (out.counts["joined"], out.counts["pending"]) == (1, 1)
        assert _rows(conn)["f3"][:6] == ("joined", "m", "1.2.0", "positive", {"positive": 0.9, "negative": 0.1},
                                         True)
        assert not processor.pending_likely

        # after a batch that joined, the next is staged without a probe, though none of it would join ...
        out, staged = _write(processor, conn, [_fb("f5", "p5")])
        assert staged == 1 and out.counts["pending"] == 1
        assert processor.pending_likely
        # ... and the one after that, which joined nothing, is copied in again
        out, staged = _write(processor, conn, [_fb("f6", "p6")])
        assert staged == 0 and out.counts["pending"] == 1
        assert {fid: row[0] for fid, row in _rows(conn).items()} == {
            "f1": "pending", "f2": "pending", "f3": "joined", "f4": "pending", "f5": "pending", "f6": "pending"}


def test_the_copied_rows_join_when_their_prediction_lands(db_url: str, processor: IngestProcessor) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        _out, staged = _write(processor, conn, [_fb("f1", "p1"), _fb("f2", "p1", "u2"), _fb("f3", "p2")])
        assert staged == 0
        out, _ = _write(processor, conn, [_pred("p1")])
        assert out.counts["joined"] == 2
        rows = _rows(conn)
        assert rows["f1"][:4] == rows["f2"][:4] == ("joined", "m", "1.2.0", "positive")
        assert rows["f3"][0] == "pending"


def test_a_generators_judgement_is_copied_with_its_model_and_fields(db_url: str, processor: IngestProcessor) -> None:
    fb = ModelFeedback("g1", "pg1", "npc", None, None, "u1", "game", TS, rating=4, correction="Well met.",
                       signal="continued")
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        out, staged = _write(processor, conn, [fb])
        assert staged == 0 and out.counts["pending"] == 1
        row = _rows(conn)["g1"]
    assert row[:2] == ("pending", "npc")
    assert row[-3:] == (4, "Well met.", "continued")


def test_ids_holding_the_separator_take_the_staged_way(db_url: str, processor: IngestProcessor) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        _write(processor, conn, [_pred("p\x1fa")])
        processor.pending_likely = True
        # split at the separator, "p" and "a" would not be found, and the feedback would land pending
        out, staged = _write(processor, conn, [_fb("f1", "p\x1fa"), _fb("f2", "p")])
        assert staged == 2
        assert (out.counts["joined"], out.counts["pending"]) == (1, 1)
        assert _rows(conn)["f1"][0] == "joined"


def test_a_row_that_exists_makes_the_copy_fall_back_to_on_conflict(db_url: str, processor: IngestProcessor) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        _write(processor, conn, [_fb("f1", "p1")])
        # f1 again (a resend across batches) and its content under a new id, with one new row
        out, staged = _write(processor, conn, [_fb("f1", "p1"), _fb("f1-new-id", "p1"), _fb("f2", "p2")])
        assert out.counts["insert_retries:feedback"] == 1
        assert (out.counts["landed:feedback"], out.counts["duplicates:feedback"]) == (1, 2)
        assert staged == 3  # every event staged again, in order, for ON CONFLICT
        assert sorted(_rows(conn)) == ["f1", "f2"]


def test_a_record_postgres_refuses_in_the_copy_is_rolled_back_with_nothing_landed(
        db_url: str, processor: IngestProcessor) -> None:
    """A NUL in a text field: the copy fails as a data error, the batch's savepoint rolls back (the sink then
    bisects it down to that record and dead-letters it, tests/streams/test_bad_input.py)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        with pytest.raises(psycopg.DataError), conn.transaction():
            processor.write(conn, [Item("t", 0, 0, _fb("f1", "p1")), Item("t", 0, 1, _fb("f2", "p2", "u\x00"))])
        assert _rows(conn) == {}
        _out, staged = _write(processor, conn, [_fb("f1", "p1")])
        assert staged == 0 and sorted(_rows(conn)) == ["f1"]


def test_the_probe_reads_the_predictions_primary_key(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO predictions (prediction_id, model, model_version, variant, text, label, probabilities,
                                     latency_ms, ts)
            SELECT 'p' || g, 'm', '1', 'champion', 't', 'positive', '{"positive": 1.0}', 1.0, now()
            FROM generate_series(1, 50000) g""")
        conn.execute("ANALYZE predictions")
        ids = "\x1f".join(f"x{i}" for i in range(1250))
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + _PROBE_LANDED, (ids,)))
        assert "predictions_pkey" in plan and "Seq Scan" not in plan, plan
        assert conn.execute(_PROBE_LANDED, (ids,)).fetchone()[1] is False  # type: ignore[index]
        assert conn.execute(_PROBE_LANDED, (ids + "\x1fp77",)).fetchone()[1] is True  # type: ignore[index]


def test_an_isolated_resend_does_not_pause_the_copy_a_replay_does(db_url: str, processor: IngestProcessor) -> None:
    """A resend whose first copy ended the previous batch fails the next batch's attempt once (the fallback
    stages it for ``ON CONFLICT``); the batch after it is copied in again. A replayed batch (every row there
    already) pauses the attempts: the next batches are staged."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        first = [_fb(f"a{i}", f"pa{i}") for i in range(40)]
        assert _write(processor, conn, first)[1] == 0
        out, staged = _write(processor, conn, [first[-1], *(_fb(f"b{i}", f"pb{i}") for i in range(39))])
        assert out.counts["insert_retries:feedback"] == 1 and staged == 40  # the fallback: every event staged
        assert (out.counts["landed:feedback"], out.counts["duplicates:feedback"]) == (39, 1)
        out, staged = _write(processor, conn, [_fb(f"c{i}", f"pc{i}") for i in range(40)])
        assert staged == 0 and out.counts["landed:feedback"] == 40  # copied in: no pause for one row

        out, staged = _write(processor, conn, first)  # a replay of a whole batch
        assert out.counts["insert_retries:feedback"] == 1 and out.counts["duplicates:feedback"] == 40
        out, staged = _write(processor, conn, [_fb(f"d{i}", f"pd{i}") for i in range(40)])
        assert staged == 40 and out.counts["insert_retries:feedback"] == 0  # paused: ON CONFLICT, no attempt
        assert out.counts["landed:feedback"] == 40
    assert len(_rows_of(db_url)) == 159


def _rows_of(db_url: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        return _rows(conn)


def _cleared(processor: IngestProcessor, conn: psycopg.Connection, events: list) -> bool:
    """Did writing ``events`` clear the staging tables? (A marker row put there first in the same transaction.)"""
    with conn.transaction():
        conn.execute("INSERT INTO stg_predictions (ord, prediction_id) VALUES (-1, 'marker')")
        processor.write(conn, [Item("t", 0, i, e) for i, e in enumerate(events)])
        return conn.execute("SELECT count(*) FROM stg_predictions WHERE ord = -1").fetchone() == (0,)


def test_a_transaction_that_stages_nothing_leaves_the_staging_tables_alone(
        db_url: str, processor: IngestProcessor) -> None:
    """Pending feedback copied straight in touches no temporary table (so its commit truncates none); the
    first write on a connection, and the first after one that staged, clears them."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        assert _cleared(processor, conn, [_fb("f1", "p1")])  # a connection it has not seen: cleared once
        assert not _cleared(processor, conn, [_fb("f2", "p2")])
        assert not _cleared(processor, conn, [_fb("f3", "p3")])
        _write(processor, conn, [_pred("p4")])  # staged
        assert _cleared(processor, conn, [_fb("f5", "p5")])  # cleared after the staged batch
        assert not _cleared(processor, conn, [_fb("f6", "p6")])
        assert len(_rows(conn)) == 5


def test_rows_an_earlier_write_staged_never_land_again_after_a_failed_write(
        db_url: str, processor: IngestProcessor) -> None:
    """The sink's bisect writes twice in one transaction, each in a savepoint. A write that cleared the staging
    tables and then failed has its DELETE rolled back with it: the rows the first write staged are back, and
    the next write must clear them again rather than land them a second time."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        processor.prepare(conn)
        _write(processor, conn, [_pred("p1"), _pred("p2")])
        with conn.transaction():
            out = processor.write(conn, [Item("t", 0, 0, _fb("f1", "p1"))])  # staged and joined
            assert out.counts["joined"] == 1
            processor.pending_likely = True  # so the next batch clears the tables, then copies straight in
            with pytest.raises(psycopg.errors.DataError), conn.transaction():
                processor.write(conn, [Item("t", 0, 1, _fb("f9", "p9", "u\x00"))])
            out = processor.write(conn, [Item("t", 0, 2, _fb("f2", "p2"))])
            staged = conn.execute("SELECT feedback_id FROM stg_feedback").fetchall()
            assert staged == [("f2",)]
            assert (out.counts["landed:feedback"], out.counts["joined"], out.counts["duplicates:feedback"]) == (1, 1, 0)
            assert out.counts["insert_retries:feedback"] == 0  # f1 staged again would have failed the attempt
        assert sorted(_rows(conn)) == ["f1", "f2"]

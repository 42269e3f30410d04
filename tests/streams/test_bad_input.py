"""Every class of bad input, mixed with valid records in the same batches: each bad record is
dead-lettered (Postgres + DLQ topic) with the right reason and its original bytes; every valid record
lands; the processor never stops."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from confluent_kafka import Consumer

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from schemas.events import DeadLetter
from streams import kafka
from tests.streams.helpers import (
    count,
    create_topics,
    feedback,
    prediction,
    produce,
    producer,
    running_ingest,
    wait_until,
)


def _fb(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "feedback", "schema_version": 1, "feedback_id": uuid.uuid4().hex,
                               "prediction_id": uuid.uuid4().hex, "label": "positive", "user_id": "u9",
                               "source": "test", "ts": datetime.now(UTC).isoformat()}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not _DROP}


def _pred(**kw: object) -> dict[str, object]:
    base = json.loads(prediction().to_json())
    base.update(kw)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def feedback_corpus() -> list[tuple[bytes | None, str]]:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pred_on_feedback_topic = _j(_pred())
    return [
        (None, "empty_value"),
        (b"{\"type\": \"feedback\", " + uuid.uuid4().hex.encode(), "malformed_json"),
        (b"\xff\xfe{\"a\": \"" + uuid.uuid4().hex.encode() + b"\"}", "invalid_utf8"),
        (_j([1, 2, uuid.uuid4().hex]), "not_an_object"),
        (_j(_fb(type="bogus")), "unknown_event_type"),
        (pred_on_feedback_topic, "wrong_topic"),
        (_j(_fb(schema_version=3)), "unknown_schema_version"),  # 2 is a version now (a model's events)
        (_j(_fb(schema_version=2)), "missing_field"),  # version 2 feedback names its model
        (_j(_fb(feedback_id=_DROP)), "missing_field"),
        (_j(_fb(prediction_id=12345)), "wrong_type"),
        (_j(_fb(ts="not-a-time-" + uuid.uuid4().hex)), "wrong_type"),
        (_j(_fb(thumbs="up")), "invalid_value"),  # label and thumbs both given
        (_j(_fb(label="furious")), "label_not_in_set"),
        (_j(_fb(ts=future)), "timestamp_in_future"),
        (b"\x00\x00", "malformed_json"),  # truncated Confluent wire-format header
        (_j(_fb(user_id="nul\u0000byte")), "sink_rejected"),  # valid JSON Postgres cannot store
        (b'{"type": "feedback", "note": "' + b"x" * 800_000 + b'"', "malformed_json"),  # too big for the DLQ as is
    ]


def prediction_corpus() -> list[tuple[bytes | None, str]]:
    return [
        (_j(_pred(text="")), "text_empty"),
        (_j(_pred(text="   \n ")), "text_empty"),
        (_j(_pred(text="x" * 6000)), "text_too_long"),
        (_j(_pred(probabilities={"negative": 0.5, "furious": 0.5}, label="negative")), "label_not_in_set"),
        (_j(_pred(probabilities={"negative": 0.5, "positive": 0.1}, label="negative")), "invalid_value"),
        (_j(_pred(latency_ms="fast")), "wrong_type"),
        (_j(_fb()), "wrong_topic"),
        (_j(_pred(text="bad \u0000 text")), "sink_rejected"),
        # user-supplied keys end up in the error detail: it must still be storable
        (_j(_pred(probabilities={"neg\u0000": "x"}, label="negative")), "wrong_type"),
        (b'{"type": "prediction", "probabilities": {"\\ud800": "x"}, "id": "' + uuid.uuid4().hex.encode() + b'"}',
         "malformed_json"),  # the JSON parser refuses lone surrogates
    ]


def test_every_bad_record_is_dead_lettered_and_every_valid_one_lands(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    create_topics(settings, kafka_conn)
    t = settings.topics
    bad_fb, bad_pred = feedback_corpus(), prediction_corpus()
    preds = [prediction() for _ in range(300)]
    fbs = [feedback(p.prediction_id) for p in preds]
    wire = [b"\x00\x00\x00\x00\x07" + f.to_json() for f in (feedback(p.prediction_id, "negative") for p in preds[:5])]
    # interleave: bad records spread among the valid ones, all in the same few batches
    fb_values: list[bytes | None] = [f.to_json() for f in fbs] + wire
    for i, (value, _reason) in enumerate(bad_fb):
        fb_values.insert(i * 20, value)
    pred_values: list[bytes | None] = [p.to_json() for p in preds]
    for i, (value, _reason) in enumerate(bad_pred):
        pred_values.insert(i * 30, value)
    p = producer(kafka_conn)
    produce(p, t.predictions, [(b"k", v) for v in pred_values])
    produce(p, t.feedback, [(b"k", v) for v in fb_values])
    total = len(fb_values) + len(pred_values)
    with running_ingest(settings):
        wait_until(lambda: count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets") == total,
                   what="all records committed")
    expected = sorted(r for _, r in bad_fb + bad_pred)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute('SELECT reason, original, topic FROM dead_letters ORDER BY "offset"').fetchall()
    assert sorted(r for r, _, _ in rows) == expected
    by_original = {bytes(o): r for r, o, _ in rows}
    for value, reason in bad_fb + bad_pred:
        assert by_original[value or b""] == reason, (value, reason)
    assert count(db_url, "SELECT count(*) FROM predictions") == 300
    assert count(db_url, "SELECT count(*) FROM feedback") == 305  # 300 + 5 wire-format (other label)
    assert count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 305

    consumer = Consumer(kafka.consumer_config(kafka_conn, f"{settings.topic_prefix}-dlq-check"))
    consumer.subscribe([t.dlq])
    letters: list[DeadLetter] = []
    try:
        wait_until(lambda: bool(letters.extend(
            DeadLetter.model_validate_json(m.value()) for m in consumer.consume(100, 0.5) if not m.error()
        )) or len({(d.source_topic, d.source_partition, d.source_offset) for d in letters}) >= len(expected),
            what="DLQ topic records")
    finally:
        consumer.close()
    # the topic copy is at-least-once (a producer retry of a large request may repeat it): one per source
    letters = list({(d.source_topic, d.source_partition, d.source_offset): d for d in letters}.values())
    assert sorted(d.reason.value for d in letters) == expected
    big = [d for d in letters if "original truncated" in d.detail]
    assert len(big) == 1 and len(big[0].original) == 256 * 1024  # the table keeps all 800k bytes
    assert {d.original: d.reason.value for d in letters if d not in big} == {
        o: r for o, r in by_original.items() if len(o) < 800_000}
    assert all(d.detail and d.source_topic in (t.feedback, t.predictions) for d in letters)

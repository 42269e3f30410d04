"""Wake-up signals after commits, the orphan time-out, and consumer lag from the Fetch high watermark."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from schemas.events import Landed
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


def _landed(kafka_conn: KafkaConnection, topic: str, group: str) -> list[Landed]:
    consumer = Consumer(kafka.consumer_config(kafka_conn, group))
    consumer.subscribe([topic])
    out: list[Landed] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msgs = consumer.consume(100, 0.5)
            out.extend(Landed.model_validate_json(m.value()) for m in msgs if m.error() is None)
            if out and not msgs:
                break
    finally:
        consumer.close()
    return out


def test_landed_signals_describe_what_was_committed(settings: FlywheelSettings, kafka_conn: KafkaConnection,
                                                    db_url: str) -> None:
    create_topics(settings, kafka_conn)
    t = settings.topics
    preds = [prediction() for _ in range(30)]
    p = producer(kafka_conn)
    produce(p, t.predictions, [(e.prediction_id.encode(), e.to_json()) for e in preds])
    produce(p, t.feedback, [(e.prediction_id.encode(), feedback(e.prediction_id).to_json()) for e in preds])
    with running_ingest(settings):
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined'") == 30)
    signals = _landed(kafka_conn, t.landed, f"{settings.topic_prefix}-landed-check")
    assert sum(s.predictions for s in signals) == 30
    assert sum(s.feedback for s in signals) == 30
    assert sum(s.joined for s in signals) == 30
    first = min(s.prediction_ids.first for s in signals if s.prediction_ids)
    last = max(s.prediction_ids.last for s in signals if s.prediction_ids)
    assert count(db_url, "SELECT count(*) FROM predictions WHERE id BETWEEN %s AND %s", first, last) == 30


def test_feedback_without_prediction_becomes_orphan_after_the_timeout(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    fast = settings.model_copy(update={"orphan_timeout_s": 1.0, "orphan_sweep_interval_s": 0.3})
    create_topics(settings, kafka_conn)
    lonely = feedback("never-predicted")
    late = prediction()
    waiting = feedback(late.prediction_id)
    produce(producer(kafka_conn), settings.topics.feedback,
            [(b"a", lonely.to_json()), (b"b", waiting.to_json())])
    with running_ingest(fast) as runner:
        wait_until(lambda: count(db_url, "SELECT count(*) FROM feedback WHERE status = 'orphan'") == 2,
                   what="both orphaned")
        produce(producer(kafka_conn), settings.topics.predictions, [(b"b", late.to_json())])
        wait_until(lambda: count(db_url, "SELECT count(*) FROM predictions") == 1)
        assert runner.metrics.orphans.labels(runner.group)._value.get() == 2
    assert count(db_url, "SELECT count(*) FROM stream_counters WHERE name = 'orphans' AND value = 2") == 1


def test_lag_gauge_comes_from_the_fetch_high_watermark(settings: FlywheelSettings, kafka_conn: KafkaConnection,
                                                      db_url: str) -> None:
    create_topics(settings, kafka_conn)
    preds = [prediction() for _ in range(200)]
    produce(producer(kafka_conn), settings.topics.predictions, [(b"k", e.to_json()) for e in preds])
    slow = settings.model_copy(update={"batch_max_records": 10})
    with running_ingest(slow) as runner:
        runner.config = runner.config.__class__(**{**runner.config.__dict__, "lag_interval_s": 0.05})
        wait_until(lambda: count(db_url, "SELECT count(*) FROM predictions") == 200)
        time.sleep(0.5)
        samples = [s for m in runner.metrics.registry.collect() if m.name == "flywheel_stream_lag" for s in m.samples]
    assert samples and all(s.value == 0 for s in samples), samples


def test_group_lag_counts_records_not_yet_committed(settings: FlywheelSettings, kafka_conn: KafkaConnection,
                                                   db_url: str) -> None:
    from flywheel.status import group_lag

    create_topics(settings, kafka_conn)
    t = settings.topics
    first = [prediction() for _ in range(40)]
    produce(producer(kafka_conn), t.predictions, [(e.prediction_id.encode(), e.to_json()) for e in first])
    with running_ingest(settings) as runner:
        wait_until(lambda: count(db_url, "SELECT count(*) FROM predictions") == 40)
        group = runner.group
    assert sum(r.lag or 0 for r in group_lag(kafka_conn, db_url, group)) == 0
    more = [prediction() for _ in range(50)]
    produce(producer(kafka_conn), t.predictions, [(e.prediction_id.encode(), e.to_json()) for e in more])
    rows = group_lag(kafka_conn, db_url, group)
    assert sum(r.lag or 0 for r in rows if r.topic == t.predictions) == 50
    assert all(r.high_watermark is not None for r in rows)

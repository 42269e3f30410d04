"""The frontend producer client: events reach the topic keyed by prediction id; delivery failures reach
the caller through the per-send callback and through flush()/close()."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings, Topics
from flywheel.stack import free_port
from schemas.events import FeedbackEvent
from schemas.exceptions import InvalidEvent
from streams import kafka
from streams.exceptions import DeliveryError
from streams.producer import FeedbackProducer
from tests.streams.helpers import create_topics, wait_until


def test_feedback_is_published_keyed_by_prediction(settings: FlywheelSettings, kafka_conn: KafkaConnection) -> None:
    create_topics(settings, kafka_conn)
    outcomes: list[DeliveryError | None] = []
    with FeedbackProducer(kafka_conn, settings.topics) as frontend:
        sent = [frontend.feedback(f"pred-{i}", thumbs="up", user_id="u1", on_delivery=outcomes.append)
                for i in range(5)]
    assert outcomes == [None] * 5
    consumer = Consumer(kafka.consumer_config(kafka_conn, f"{settings.topic_prefix}-check"))
    consumer.subscribe([settings.topics.feedback])
    got: list[tuple[bytes | None, FeedbackEvent]] = []
    try:
        wait_until(lambda: bool(got.extend((m.key(), FeedbackEvent.model_validate_json(m.value()))
                                           for m in consumer.consume(10, 0.5) if m.error() is None))
                   or len(got) == 5, what="5 records")
    finally:
        consumer.close()
    assert sorted(e.feedback_id for _k, e in got) == sorted(e.feedback_id for e in sent)
    assert all(key == e.prediction_id.encode() for key, e in got)


def test_delivery_failures_reach_the_caller() -> None:
    dead = KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens here
    outcomes: list[DeliveryError | None] = []
    frontend = FeedbackProducer(dead, Topics("nowhere"), flush_timeout_s=10, **{"message.timeout.ms": 1500})
    frontend.feedback("p1", label="positive", on_delivery=outcomes.append)
    with pytest.raises(DeliveryError) as info:
        frontend.flush()
    assert info.value.failed == 1 and info.value.topic == "nowhere"
    assert len(outcomes) == 1 and isinstance(outcomes[0], DeliveryError)
    frontend.flush()  # failures are reported once


def test_invalid_feedback_is_refused_before_sending(kafka_conn: KafkaConnection) -> None:
    with FeedbackProducer(kafka_conn, Topics("t-refuse")) as frontend:
        with pytest.raises(InvalidEvent, match="exactly one of label or thumbs"):
            frontend.feedback("p1")  # neither label nor thumbs
        with pytest.raises(InvalidEvent, match="thumbs"):
            frontend.feedback("p1", thumbs="sideways")

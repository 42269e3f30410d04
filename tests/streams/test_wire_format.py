"""Frontends that use confluent-kafka's JSONSerializer with our schema registry: their Confluent
wire-format records land; a record naming a schema id the registry does not know is dead-lettered."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel.stack import free_port
from schemas.base import Event
from schemas.events import FeedbackEvent
from schemas.registry import PostgresSchemaStore, RegistryServer, create_app
from streams.ingest import IngestProcessor
from streams.producer import FeedbackProducer
from streams.runtime import ProcessorRunner, RunnerConfig
from tests.streams.helpers import count, create_topics, prediction, produce, producer, wait_until


@pytest.fixture
def store(db_url: str) -> Iterator[PostgresSchemaStore]:
    with PostgresSchemaStore(db_url) as pg:
        yield pg


def test_confluent_serialized_feedback_lands_and_unknown_ids_are_dead_lettered(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str, store: PostgresSchemaStore
) -> None:
    create_topics(settings, kafka_conn)
    t = settings.topics
    server = RegistryServer(create_app(store), "127.0.0.1", free_port())
    url = server.start()
    try:
        serializer = JSONSerializer(json.dumps(FeedbackEvent.model_json_schema()), SchemaRegistryClient({"url": url}))

        def confluent(event: Event, topic: str) -> bytes:
            data = json.loads(event.to_json())
            out = serializer(data, SerializationContext(topic, MessageField.VALUE))
            assert out is not None
            return out

        preds = [prediction() for _ in range(10)]
        produce(producer(kafka_conn), t.predictions, [(p.prediction_id.encode(), p.to_json()) for p in preds])
        with FeedbackProducer(kafka_conn, t, serializer=confluent) as frontend:
            sent = [frontend.feedback(p.prediction_id, label="negative", user_id="u7") for p in preds]
        good = confluent(sent[0], t.feedback)
        bogus = b"\x00" + (999_999).to_bytes(4, "big") + good[5:]
        produce(producer(kafka_conn), t.feedback, [(b"x", bogus)])

        config = RunnerConfig.from_settings(settings, kafka_conn)
        runner = ProcessorRunner(IngestProcessor.from_settings(settings, store.schema_exists), config,
                                 session_connector(db_url))
        import threading

        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: count(db_url, "SELECT coalesce(sum(next_offset), 0) FROM stream_offsets") == 21,
                       what="all records committed")
        finally:
            runner.stop()
            thread.join(30)
    finally:
        server.stop()
    assert count(db_url, "SELECT count(*) FROM feedback WHERE status = 'joined' AND label = 'negative'") == 10
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT reason, original FROM dead_letters").fetchall()
    assert rows == [("unknown_schema_id", bogus)]

"""Round trip through the real broker with confluent-kafka's own Schema Registry client and JSON serdes,
against our registry served by uvicorn on Postgres."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from core.kafka import KafkaConnection
from flywheel.stack import free_port
from schemas.codec import split_wire_format
from schemas.events import FeedbackEvent
from schemas.registry import PostgresSchemaStore, RegistryServer, create_app

FEEDBACK_SCHEMA = FeedbackEvent.model_json_schema()


@pytest.fixture
def store(db_url: str) -> Iterator[PostgresSchemaStore]:
    with PostgresSchemaStore(db_url) as pg:
        yield pg


@pytest.fixture
def registry_url(store: PostgresSchemaStore) -> Iterator[str]:
    server = RegistryServer(create_app(store), "127.0.0.1", free_port())
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def sr_client(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


def _create_topic(kafka_conn: KafkaConnection, topic: str) -> None:
    admin = AdminClient(kafka_conn.client_config())
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=20)


def _events(n: int) -> list[FeedbackEvent]:
    ts = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        FeedbackEvent(
            feedback_id=f"f{i}",
            prediction_id=f"p{i}",
            ts=ts,
            **({"label": "positive"} if i % 2 else {"thumbs": "down", "user_id": "u1"}),
        )
        for i in range(n)
    ]


def _consume(kafka_conn: KafkaConnection, topic: str, count: int, timeout: float = 60.0) -> list[bytes]:
    consumer = Consumer(
        {
            **kafka_conn.client_config(),
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            value = message.value()
            assert message.error() is None and value is not None, message.error()
            values.append(value)
    finally:
        consumer.close()
    return values


def test_json_round_trip_through_the_broker(
    kafka_conn: KafkaConnection, topic_prefix: str, sr_client: SchemaRegistryClient, store: PostgresSchemaStore
) -> None:
    topic = f"{topic_prefix}.feedback.v1"
    _create_topic(kafka_conn, topic)
    serializer = JSONSerializer(json.dumps(FEEDBACK_SCHEMA), sr_client)  # auto-registers under <topic>-value
    deserializer = JSONDeserializer(None, schema_registry_client=sr_client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    events = _events(6)

    producer = Producer(kafka_conn.client_config())
    for event in events:
        producer.produce(
            topic, key=event.feedback_id.encode(), value=serializer(event.model_dump(mode="json"), ctx)
        )
    assert producer.flush(20) == 0

    values = _consume(kafka_conn, topic, len(events))
    assert len(values) == len(events)
    latest = sr_client.get_latest_version(f"{topic}-value")
    assert latest.version == 1 and latest.schema.schema_type == "JSON"
    for value, event in zip(values, events, strict=True):
        schema_id, _ = split_wire_format(value)
        assert schema_id is not None and schema_id == latest.schema_id
        assert store.schema_exists(schema_id)
        decoded: Any = deserializer(value, ctx)
        assert decoded == event.model_dump(mode="json")
        assert FeedbackEvent.model_validate(decoded) == event


def test_client_sees_compatibility_rules(topic_prefix: str, sr_client: SchemaRegistryClient) -> None:
    subject = f"{topic_prefix}.feedback.v1-value"
    v1_id = sr_client.register_schema(subject, Schema(json.dumps(FEEDBACK_SCHEMA), "JSON"))
    assert sr_client.get_compatibility() == "BACKWARD"

    breaking = copy.deepcopy(FEEDBACK_SCHEMA)
    breaking["properties"]["comment"] = {"type": "string", "title": "Comment"}
    breaking["required"].append("comment")
    assert sr_client.test_compatibility(subject, Schema(json.dumps(breaking), "JSON")) is False
    with pytest.raises(SchemaRegistryError) as refused:
        sr_client.register_schema(subject, Schema(json.dumps(breaking), "JSON"))
    assert refused.value.http_status_code == 409 and refused.value.error_code == 409
    assert "comment" in refused.value.error_message

    optional = copy.deepcopy(FEEDBACK_SCHEMA)
    optional["properties"]["comment"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    v2_id = sr_client.register_schema(subject, Schema(json.dumps(optional), "JSON"))
    assert v2_id != v1_id
    latest = sr_client.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (2, v2_id)
    assert sr_client.get_versions(subject) == [1, 2]
    assert sr_client.lookup_schema(subject, Schema(json.dumps(FEEDBACK_SCHEMA), "JSON")).version == 1

    # a producer pinned to the latest registered version (no auto-registration) writes with v2's id
    serializer = JSONSerializer(
        json.dumps(optional), sr_client, conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    ctx = SerializationContext(f"{topic_prefix}.feedback.v1", MessageField.VALUE)
    value = serializer({**_events(1)[0].model_dump(mode="json"), "comment": "nice"}, ctx)
    assert split_wire_format(value)[0] == v2_id
    decoded: Any = JSONDeserializer(None, schema_registry_client=sr_client)(value, ctx)
    assert decoded["comment"] == "nice"

    with pytest.raises(SchemaRegistryError) as missing:
        sr_client.get_schema(v2_id + 1000)
    assert missing.value.error_code == 40403
    assert sr_client.delete_subject(subject) == [1, 2]
    assert sr_client.delete_subject(subject, permanent=True) == [1, 2]
    assert subject not in sr_client.get_subjects()

"""The embedded broker with durable storage: a stopped broker's log, cluster id and port come back at
the next start; a second broker on the same storage is refused while the first runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flywheel.exceptions import StackError
from flywheel.stack import EmbeddedBroker, free_port
from streams import kafka


def _read_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "durable-test", "log_level": 0,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        seen += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
    consumer.close()
    return seen


def test_log_cluster_id_and_port_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    first = EmbeddedBroker(port=port, storage_dir=tmp_path / "broker")
    bootstrap = first.start()
    try:
        kafka.create_topics(kafka.admin(first.connection), ["durable"], 1)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
        for i in range(300):
            producer.produce("durable", f"m{i}".encode())
        assert producer.flush(30) == 0
        with pytest.raises(StackError, match="still in use"):
            EmbeddedBroker(port=free_port(), storage_dir=tmp_path / "broker").start(timeout=1.0)
    finally:
        first.stop()
    second = EmbeddedBroker(port=port, storage_dir=tmp_path / "broker")
    assert second.start() == bootstrap
    try:
        assert second.cluster_id == first.cluster_id == kafka.cluster_id(second.connection)
        assert _read_all(bootstrap, "durable", 300) == [f"m{i}".encode() for i in range(300)]
    finally:
        second.stop()


def test_memory_storage_starts_empty_with_a_new_cluster_id(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        assert broker.storage == "memory storage" and kafka.cluster_id(broker.connection) == broker.cluster_id

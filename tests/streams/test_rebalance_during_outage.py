"""A rebalance while every commit is failing (Postgres outage) and sub-batches are queued: after the
outage, every record lands exactly once and the partition is consumed again (review findings: queued
sub-batches abandoned by the rebalance must not seek past unwritten records; a pause taken during the
outage must not survive the re-assignment)."""

from __future__ import annotations

import threading
import time

import psycopg
from confluent_kafka import Consumer

from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from schemas.codec import EventRules
from streams import kafka
from streams.ingest import IngestProcessor
from streams.runtime import ProcessorRunner, RunnerConfig
from tests.streams.helpers import count, prediction, wait_until


def test_rebalance_during_an_outage_loses_nothing_and_resumes(
    settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str
) -> None:
    topics = settings.topics
    other_topic = f"{topics.prefix}.other"
    kafka.create_topics(kafka.admin(kafka_conn), [*topics.all(), other_topic], 1)
    producer = kafka.Producer(kafka.producer_config(kafka_conn))
    for _ in range(400):
        kafka.produce(producer, topics.predictions, prediction().to_json())
    assert producer.flush(10) == 0

    processor = IngestProcessor(topics, EventRules(frozenset(["negative", "neutral", "positive"])),
                                group=f"{topics.prefix}-ingest", housekeeping_interval_s=0)
    config = RunnerConfig(kafka_conn, topics.dlq, batch_max_records=100, retry_initial_s=2.0, retry_max_s=3.0)
    runner: ProcessorRunner = ProcessorRunner(processor, config, session_connector(db_url))  # type: ignore[type-arg]
    outage = threading.Event()
    outage.set()
    real_commit = runner._commit

    def failing_commit(batch, slot=0):  # type: ignore[no-untyped-def]
        if outage.is_set():
            raise psycopg.OperationalError("simulated outage")
        return real_commit(batch, slot)

    runner._commit = failing_commit  # type: ignore[method-assign]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    other = Consumer(kafka.consumer_config(kafka_conn, processor.group))
    try:
        wait_until(lambda: len(runner._inflight) >= 3, timeout=30, what="sub-batches queued behind the outage")
        other.subscribe([other_topic])  # a second member joins: revoke + assign while commits fail
        deadline = time.monotonic() + 40
        while runner.metrics.rebalances.labels(processor.group)._value.get() < 2 and time.monotonic() < deadline:
            other.poll(0.1)
        assert runner.metrics.rebalances.labels(processor.group)._value.get() >= 2
        outage.clear()

        def all_landed() -> bool:
            other.poll(0.1)
            return count(db_url, "SELECT count(*) FROM predictions") == 400

        wait_until(all_landed, timeout=60, what="all 400 records landed after the outage")
        for _ in range(50):  # and the partition keeps being consumed afterwards
            kafka.produce(producer, topics.predictions, prediction().to_json())
        assert producer.flush(10) == 0

        def more_landed() -> bool:
            other.poll(0.1)
            return count(db_url, "SELECT count(*) FROM predictions") == 450

        wait_until(more_landed, timeout=60, what="records produced after the re-assignment")
    finally:
        runner.stop()
        thread.join(30)
        other.close()
    assert count(db_url, "SELECT sum(next_offset) FROM stream_offsets WHERE topic = %s", topics.predictions) == 450
    assert count(db_url, "SELECT value FROM stream_counters WHERE name = %s",
                 f"consumed:{topics.predictions}") == 450

"""Shared helpers for stream tests: event factories, a runner in a thread, polling waits."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
from confluent_kafka import Producer

from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from schemas.events import FeedbackEvent, PredictionEvent
from streams import kafka
from streams.ingest import IngestProcessor
from streams.runtime import ProcessorRunner, RunnerConfig

LABELS = ("negative", "neutral", "positive")


def prediction(pid: str | None = None, label: str = "positive", **kw: object) -> PredictionEvent:
    probs = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}
    top = max(probs, key=probs.__getitem__)
    probs[label], probs[top] = probs[top], probs[label]
    fields: dict[str, object] = dict(
        prediction_id=pid or str(uuid.uuid4()), model="sentiment", model_version="1.0.0", variant="champion",
        text="what a lovely film", label=label, probabilities=probs, latency_ms=3.5, user_id="u1",
        ts=datetime.now(UTC))
    fields.update(kw)
    return PredictionEvent.model_validate(fields)


def feedback(pid: str, label: str | None = "positive", fid: str | None = None, **kw: object) -> FeedbackEvent:
    fields: dict[str, object] = dict(
        feedback_id=fid or str(uuid.uuid4()), prediction_id=pid, label=label, user_id="u1", source="test",
        ts=datetime.now(UTC))
    fields.update(kw)
    return FeedbackEvent.model_validate(fields)


def create_topics(settings: FlywheelSettings, kafka_conn: KafkaConnection) -> None:
    kafka.create_topics(kafka.admin(kafka_conn), settings.topics.all(), settings.topic_partitions)


def producer(kafka_conn: KafkaConnection) -> Producer:
    return Producer(kafka.producer_config(kafka_conn, **{"linger.ms": 20}))


def produce(p: Producer, topic: str, values: list[tuple[bytes | None, bytes | None]]) -> None:
    for key, value in values:
        kafka.produce(p, topic, value, key)
    assert p.flush(30) == 0


@contextlib.contextmanager
def running_ingest(settings: FlywheelSettings, **runner_kw: object) -> Iterator[ProcessorRunner]:  # type: ignore[type-arg]
    assert settings.kafka_bootstrap and settings.database_url
    processor = IngestProcessor.from_settings(settings)
    config = RunnerConfig.from_settings(settings, settings.kafka_connection())
    connector = session_connector(settings.database_url.get_secret_value())
    runner = ProcessorRunner(processor, config, connector, **runner_kw)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(30)
        assert not thread.is_alive(), "runner did not stop"
    if errors:
        raise errors[0]


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count(db_url: str, query: str, *params: object) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0

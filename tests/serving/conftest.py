"""Serving fixtures: a real lifecycle (registry on Postgres + MLflow, promotion events on the real
broker), a bootstrapped tfidf champion, a second registered version, and the app with its watcher."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel.lifecycle import Lifecycle, lifecycle
from kinds.tfidf import TfidfLogReg
from registry import Lineage, ModelVersionInfo
from registry.announce import model_event
from schemas import ModelEvent
from serving import create_app
from serving.services import Services
from streams.kafka import admin, consumer_config, describe_topic
from tests.trainer.lifecycle_helpers import rows
from trainer.config import PromotionConfig, TrainerConfig


@pytest.fixture
def db_url(registry_db_url: str) -> str:
    """The platform database that also holds MLflow's tables (the registry lives there)."""
    return registry_db_url


@pytest.fixture
def lc(settings: FlywheelSettings, db_url: str) -> Iterator[Lifecycle]:
    config = TrainerConfig(promotion=PromotionConfig(mode="direct"))
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as found:
        yield found


def bootstrap_champion(lc: Lifecycle) -> ModelVersionInfo:
    result = lc.trainer.bootstrap(rows("vader_movies")[:400], source="vader_movies.csv", kind="tfidf-logreg")
    assert result.status == "promoted", result.reason
    return lc.registry.champion()


def register_version(lc: Lifecycle, tmp_path: Path, start: int, count: int = 300, c: float = 1.0) -> ModelVersionInfo:
    """A second model (tfidf on other rows), registered without promotion."""
    sample = rows("vader_movies")[start:start + count]
    model = TfidfLogReg(c=c).fit([r.text for r in sample], [r.label for r in sample])
    directory = tmp_path / f"model-{uuid.uuid4().hex[:6]}"
    model.save(directory)
    return lc.registry.register(directory, mode="full", metrics={"accuracy": 0.5},
                                lineage=Lineage(data_hash=uuid.uuid4().hex, watermark=0, sample_count=count))


def announce(lc: Lifecycle, info: ModelVersionInfo, action: str = "canary", traffic: float = 1.0) -> ModelEvent:
    return lc.announcer.publish(model_event(info, lc.settings.model_name, action, traffic, "test"))  # type: ignore[arg-type]


@pytest.fixture
def champion(lc: Lifecycle) -> ModelVersionInfo:
    return bootstrap_champion(lc)


@pytest.fixture
def app_client(settings: FlywheelSettings, db_url: str) -> Iterator[TestClient]:
    app = create_app(settings, database_url=db_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def services(client: TestClient) -> Services:
    found: Services = client.app.state.services  # type: ignore[attr-defined]
    return found


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def read_topic(kafka_conn: KafkaConnection, topic: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """At least ``count`` records of ``topic`` from offset 0 of every partition (or fail)."""
    partitions = describe_topic(admin(kafka_conn), topic).partitions
    consumer = Consumer(consumer_config(kafka_conn, f"test-read-{uuid.uuid4().hex[:8]}"))
    found: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            found += [m.value() or b"" for m in consumer.consume(500, 0.2) if not m.error()]
    finally:
        consumer.close()
    assert len(found) >= count, f"{topic}: {len(found)} records, wanted {count}"
    return found

"""Promotion events on ``flywheel.models.v1``: publishing them, and folding the topic to the desired
serving state (the embedded broker does not compact, so every reader folds from the beginning)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from confluent_kafka import KafkaException, TopicPartition
from pydantic import ValidationError

from core.kafka import KafkaConnection
from registry import ModelVersionInfo
from schemas import ModelAction, ModelEvent
from streams.exceptions import KafkaUnavailable
from streams.kafka import CheckedProducer, admin, consumer_config, describe_topic, high_watermarks, new_consumer

log = logging.getLogger(__name__)


class ModelAnnouncer:
    """Publishes one event and returns only once the broker acknowledged it (or raises DeliveryError)."""

    def __init__(self, producer: CheckedProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def publish(self, event: ModelEvent) -> ModelEvent:
        self.producer.send_all(self.topic, [(event.model.encode(), event.to_json())])
        return event


@dataclass(frozen=True)
class ServedVersion:
    version: str
    semver: str
    kind: str
    artifact_uri: str
    sha256: str

    @classmethod
    def of(cls, event: ModelEvent) -> ServedVersion:
        return cls(event.version, event.semver, event.kind, event.artifact_uri, event.sha256)


@dataclass(frozen=True)
class ModelState:
    """What should be served for one model: the champion, and a canary with its traffic share."""

    champion: ServedVersion | None = None
    canary: ServedVersion | None = None
    canary_traffic: float = 0.0
    last_event: ModelEvent | None = None
    history: tuple[str, ...] = field(default=())

    def apply(self, event: ModelEvent) -> ModelState:
        served = ServedVersion.of(event)
        state = replace(self, last_event=event, history=(*self.history, f"{event.action}:{event.version}"))
        if event.action == "canary":
            return replace(state, canary=served, canary_traffic=event.traffic)
        if event.action in ("promote", "rollback"):
            return replace(state, champion=served, canary=None, canary_traffic=0.0)
        # retire: out of any traffic
        if state.canary is not None and state.canary.version == event.version:
            state = replace(state, canary=None, canary_traffic=0.0)
        if state.champion is not None and state.champion.version == event.version:
            state = replace(state, champion=None)
        return state


def fold(events: Iterable[ModelEvent]) -> dict[str, ModelState]:
    """The desired state per model after every event, in topic order."""
    states: dict[str, ModelState] = {}
    for event in events:
        states[event.model] = states.get(event.model, ModelState()).apply(event)
    return states


def read_model_events(kafka: KafkaConnection, topic: str, timeout: float = 15.0) -> list[ModelEvent]:
    """Every event on the models topic up to its current end, in order per model (one key, one
    partition). A record that is not a valid ModelEvent is logged and skipped, never fatal."""
    partitions = describe_topic(admin(kafka), topic).partitions
    ends = high_watermarks(kafka, [(topic, p) for p in range(partitions)], timeout)
    wanted = {p: end for (_t, p), end in ends.items() if end > 0}
    if not wanted:
        return []
    consumer = new_consumer(consumer_config(kafka, f"flywheel-fold-{uuid.uuid4().hex[:8]}"))
    events: list[ModelEvent] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in wanted])
        deadline = time.monotonic() + timeout
        while wanted and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error():
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                try:
                    events.append(ModelEvent.model_validate_json(msg.value() or b""))
                except ValidationError as exc:
                    log.warning("skipping a bad record at %s[%d]@%d: %s", topic, partition, offset,
                                exc.errors()[0]["msg"] if exc.errors() else exc)
                if partition in wanted and offset + 1 >= wanted[partition]:
                    del wanted[partition]
    except KafkaException as exc:
        raise KafkaUnavailable(str(exc)) from exc
    finally:
        consumer.close()
    if wanted:
        raise KafkaUnavailable(f"{topic}: could not read to the end of partitions {sorted(wanted)} in {timeout}s")
    return events


def model_event(info: ModelVersionInfo, model: str, action: ModelAction, traffic: float, reason: str,
                previous: str | None = None, *, ts: datetime | None = None) -> ModelEvent:
    """The event announcing ``info`` (its artifact and sha256 travel with it, for the pods to verify),
    stamped ``ts`` (default: now)."""
    return ModelEvent(ts=ts or now(), model=model, version=info.version, semver=info.semver, action=action,
                      traffic=traffic, kind=info.kind, artifact_uri=info.artifact_uri, sha256=info.sha256,
                      reason=reason[:2000], previous_version=previous)


def now() -> datetime:
    return datetime.now(UTC)

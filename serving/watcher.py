"""The models-topic watcher: every pod folds every event of ``<prefix>.models.v1`` from offset 0 (all
partitions assigned, no consumer group offsets), and applies the desired state to the runtime when the
versions it names change. Bad records are logged and skipped; a broker outage only delays swaps. It also
remembers the champions announced before, as fallbacks for a pod whose announced champion fails to load
or verify: newest first, without the versions a rollback left or a retire took out."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from registry.announce import ModelState, ServedVersion
from schemas import ModelEvent
from serving.metrics import ServingMetrics
from serving.runtime import Desired, Runtime
from streams.exceptions import StreamError
from streams.kafka import admin, consumer_config, create_topics, describe_topic, new_consumer

log = logging.getLogger(__name__)


class ModelWatcher:
    """Run it in a thread: ``start()`` / ``stop()``. ``retry_s``: a desired state that failed to load
    is tried again after this long (the registry may have been away)."""

    def __init__(self, settings: FlywheelSettings, kafka: KafkaConnection, runtime: Runtime, metrics: ServingMetrics,
                 *, retry_s: float = 10.0, poll_s: float = 0.2) -> None:
        self.settings = settings
        self.kafka = kafka
        self.runtime = runtime
        self.metrics = metrics
        self.retry_s = retry_s
        self.poll_s = poll_s
        self.state = ModelState()
        self.events_seen = 0
        self._champions: dict[str, ServedVersion] = {}  # announced champions, oldest first
        self._applied: Desired | None = None
        self._failed_at: float | None = None
        self._failed_desired: Desired | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="flywheel-model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                consumer = self._subscribe()
            except (StreamError, KafkaException) as exc:
                log.warning("models topic not readable yet (%s); retrying", exc)
                self._stop.wait(1.0)
                continue
            try:
                self._loop(consumer)
            finally:
                with contextlib.suppress(KafkaException, RuntimeError):
                    consumer.close()

    def _subscribe(self) -> Consumer:
        topics = self.settings.topics
        client = admin(self.kafka)
        create_topics(client, [topics.models, topics.predictions, topics.feedback], self.settings.topic_partitions)
        partitions = describe_topic(client, topics.models).partitions
        consumer = new_consumer(consumer_config(self.kafka, f"flywheel-serving-{uuid.uuid4().hex[:12]}"))
        consumer.assign([TopicPartition(topics.models, p, 0) for p in range(partitions)])
        self.state, self._applied, self.events_seen = ModelState(), None, 0  # refold from the start
        self._champions = {}
        return consumer

    def _loop(self, consumer: Consumer) -> None:
        while not self._stop.is_set():
            try:
                messages = consumer.consume(num_messages=500, timeout=self.poll_s)
            except KafkaException as exc:
                log.warning("models topic consume failed: %s", exc)
                self._stop.wait(1.0)
                continue
            for msg in messages:
                if msg.error():
                    continue
                self._fold(msg.value() or b"", msg.partition() or 0, msg.offset() or 0)
            self._reconcile()

    def _fold(self, value: bytes, partition: int, offset: int) -> None:
        try:
            event = ModelEvent.model_validate_json(value)
        except ValidationError as exc:
            self.metrics.bad_model_events.inc()
            log.warning("skipping a bad record at %s[%d]@%d: %s", self.settings.topics.models, partition,
                        offset, exc.errors()[0]["msg"] if exc.errors() else exc)
            return
        if event.model == self.settings.model_name:
            self.state = self.state.apply(event)
            self.events_seen += 1
            self._remember(event)

    def _remember(self, event: ModelEvent) -> None:
        if event.action == "rollback" and event.previous_version is not None:
            self._champions.pop(event.previous_version, None)
        if event.action == "retire":
            self._champions.pop(event.version, None)
        if event.action in ("promote", "rollback"):
            self._champions.pop(event.version, None)
            self._champions[event.version] = ServedVersion.of(event)

    def fallbacks(self) -> tuple[ServedVersion, ...]:
        """The champions announced before, newest first (the current one included)."""
        return tuple(reversed(self._champions.values()))

    def _reconcile(self) -> None:
        desired = Desired.of(self.state, self.fallbacks())
        if desired == self._applied or (desired.champion is None and self.runtime.deployment.champion is None):
            return
        now = time.monotonic()
        if self._failed_at is not None and desired == self._failed_desired and now - self._failed_at < self.retry_s:
            return
        if self.runtime.apply(desired):
            self._applied, self._failed_at = desired, None
        else:
            self._failed_at, self._failed_desired = now, desired

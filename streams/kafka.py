"""confluent-kafka at the boundary: client configs, topic admin, watermarks, a checked producer.

KafkaException / KafkaError never leave this module: they become :mod:`streams.exceptions` errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from core.exceptions import ConfigError
from core.kafka import KafkaConnection
from streams.exceptions import DeliveryError, KafkaUnavailable, TopicAdminError

# librdkafka's own log lines (errors and worse) go through Python logging, so they follow the process's
# logging configuration instead of being written to stderr behind its back.
_QUIET: dict[str, Any] = {"log_level": 3, "logger": logging.getLogger("streams.librdkafka")}

log = logging.getLogger(__name__)

ConsumerFactory = Callable[[dict[str, Any]], Consumer]
"""Makes a consumer from a :func:`consumer_config` (injected into the processor runner; :func:`new_consumer`)."""


def consumer_config(connection: KafkaConnection, group: str, session_timeout_ms: int = 6000,
                    **extra: Any) -> dict[str, Any]:
    return {
        **connection.client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
        "fetch.wait.max.ms": 100,
        **_QUIET,
        **extra,
    }


def producer_config(connection: KafkaConnection, **extra: Any) -> dict[str, Any]:
    return {
        **connection.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        **_QUIET,
        **extra,
    }


def admin(connection: KafkaConnection) -> AdminClient:
    try:
        return AdminClient({**connection.client_config(), **_QUIET})
    except KafkaException as exc:
        raise ConfigError(f"Kafka admin client for {connection}: {_describe(exc)}") from exc


def new_consumer(config: dict[str, Any]) -> Consumer:
    """A confluent-kafka consumer for a :func:`consumer_config`; librdkafka refusing the config is a
    :class:`ConfigError`. The default consumer factory of :class:`streams.runtime.ProcessorRunner`."""
    try:
        return Consumer(config)
    except KafkaException as exc:
        raise ConfigError(f"Kafka consumer for group {config.get('group.id')}: {_describe(exc)}") from exc


def cluster_id(connection: KafkaConnection, timeout: float = 10.0) -> str:
    """The cluster id from metadata; with the embedded broker it changes on every restart."""
    try:
        meta = admin(connection).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(str(exc), bootstrap=connection.bootstrap_servers) from exc
    return str(meta.cluster_id or "")


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def list_topics(client: AdminClient, timeout: float = 10.0) -> list[TopicInfo]:
    try:
        meta = client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(str(exc)) from exc
    return sorted(
        (TopicInfo(name, len(t.partitions)) for name, t in meta.topics.items() if not name.startswith("__")),
        key=lambda t: t.name,
    )


def create_topics(
    client: AdminClient, names: Iterable[str], partitions: int, configs: dict[str, str] | None = None,
    *, exist_ok: bool = True, timeout: float = 15.0,
) -> list[str]:
    """Create topics; return the names actually created. Existing topics are fine when ``exist_ok``."""
    wanted = [NewTopic(n, num_partitions=partitions, replication_factor=1, config=configs or {}) for n in names]
    if not wanted:
        return []
    created = []
    for name, fut in client.create_topics(wanted, request_timeout=timeout).items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if exist_ok and isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicAdminError(name, _describe(exc)) from exc
    return created


def delete_topics(client: AdminClient, names: Iterable[str], timeout: float = 15.0) -> None:
    for name, fut in client.delete_topics(list(names), request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            raise TopicAdminError(name, _describe(exc)) from exc


def describe_topic(client: AdminClient, name: str, timeout: float = 10.0) -> TopicInfo:
    try:  # all topics: a per-topic metadata request makes the embedded broker auto-create the topic
        meta = client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(str(exc)) from exc
    topic = meta.topics.get(name)
    if topic is None or topic.error is not None:
        raise TopicAdminError(name, "no such topic" if topic is None else str(topic.error))
    configs: dict[str, str] = {}
    try:
        futures = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name)])
        for fut in futures.values():
            configs = {k: str(v.value) for k, v in fut.result(timeout).items() if v.value is not None}
    except KafkaException:
        configs = {}  # the embedded broker answers DescribeConfigs partially; partitions still stand
    return TopicInfo(name, len(topic.partitions), configs)


def high_watermarks(connection: KafkaConnection, tps: list[tuple[str, int]],
                    timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """High watermark per partition, read from Fetch responses (the embedded broker's ListOffsets is
    wrong). A throwaway consumer fetches from offset 0 of each partition and reads the cached value."""
    if not tps:
        return {}
    consumer = new_consumer(consumer_config(connection, "flywheel-watermarks", **{"max.partition.fetch.bytes": 1024}))
    try:
        consumer.assign([TopicPartition(t, p, 0) for t, p in tps])
        found: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(tps) and time.monotonic() < deadline:
            consumer.consume(num_messages=len(tps), timeout=0.2)
            for t, p in tps:
                _lo, hi = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
                if hi >= 0:
                    found[(t, p)] = hi
        return found
    except KafkaException as exc:
        raise KafkaUnavailable(str(exc)) from exc
    finally:
        consumer.close()


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
            on_delivery: Any = None) -> None:
    """``producer.produce`` that waits instead of failing when the local queue is full: it serves
    delivery callbacks (which frees the queue) and tries again."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


class CheckedProducer:
    """A producer whose ``send_all`` returns only when every record is acknowledged, or raises."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._lock = threading.Lock()

    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]], timeout: float = 30.0) -> int:
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        count = 0
        with self._lock:
            try:
                for key, value in records:
                    self._produce(topic, key, value, on_delivery)
                    count += 1
                remaining = self._producer.flush(timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                permanent = isinstance(err, KafkaError) and not err.retriable()
                raise DeliveryError(topic, _describe(exc), 1, permanent=permanent) from exc
        if remaining:
            raise DeliveryError(topic, f"not acknowledged within {timeout}s", remaining)
        if errors:
            permanent = any(not e.retriable() and e.code() != KafkaError._MSG_TIMED_OUT for e in errors)
            raise DeliveryError(topic, errors[0].str(), len(errors), permanent=permanent)
        return count

    def send_nowait(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Best effort (wake-up signals): queue and return; delivery errors are only logged by the caller."""
        self._produce(topic, key, value, None)
        self._producer.poll(0)

    def _produce(self, topic: str, key: bytes | None, value: bytes, cb: Any) -> None:
        produce(self._producer, topic, value, key, cb)

    def flush(self, timeout: float = 10.0) -> int:
        return int(self._producer.flush(timeout))


def _describe(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def store_offsets(consumer: Consumer, messages: Iterable[Message]) -> None:
    """Mark ``messages`` consumed (for the next auto-commit) once their work is done; a partition a
    rebalance took away is left to its new owner, who re-reads it."""
    try:
        for msg in messages:
            if not msg.error():
                consumer.store_offsets(message=msg)
    except KafkaException as exc:
        log.info("offsets not stored: %s", exc)


def consume_or_wait(consumer: Consumer, stop: threading.Event, num_messages: int = 500,
                    timeout: float = 0.5) -> list[Message]:
    """One batch of a signal consumer's loop; a failed consume is logged and waited out (1 s, or until
    ``stop``), and gives no messages: the loop goes on and Postgres reconciliation covers the gap."""
    try:
        return list(consumer.consume(num_messages=num_messages, timeout=timeout))
    except KafkaException as exc:
        log.warning("consume failed (will retry): %s", exc)
        stop.wait(1.0)
        return []

"""Publishing from the request path without ever waiting on Kafka.

Predictions: ``publish`` puts the event in a bounded in-memory buffer and returns; one thread moves it
into confluent-kafka's own bounded queue (``queue.buffering.max.messages``). A full buffer, a full
producer queue or a failed delivery (broker away past ``message.timeout.ms``) drops the event and counts
it (``flywheel_serving_events_dropped_total{reason}``), logged at most once per ``log_every_s``.

Feedback: the :class:`~streams.producer.FeedbackProducer` contract (validation, key = prediction id,
delivery failures surface on ``flush``), except that a full producer queue raises :class:`QueueFull`
at once instead of waiting for room.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from core.kafka import KafkaConnection
from core.settings import Topics
from schemas.events import PredictionEvent, PredictionEventV2
from serving.exceptions import QueueFull
from serving.metrics import ServingMetrics
from streams.exceptions import DeliveryError
from streams.kafka import producer_config
from streams.producer import FeedbackProducer

log = logging.getLogger(__name__)


class PredictionPublisher:
    def __init__(self, kafka: KafkaConnection, topics: Topics, metrics: ServingMetrics, *, buffer_size: int = 10_000,
                 producer_queue: int = 10_000, message_timeout_ms: int = 30_000, log_every_s: float = 30.0,
                 **config: Any) -> None:
        self.topic = topics.predictions
        self.metrics = metrics
        self.log_every_s = log_every_s
        self._buffer: queue.Queue[PredictionEvent | PredictionEventV2] = queue.Queue(maxsize=buffer_size)
        self._producer = Producer(producer_config(kafka, **{
            "queue.buffering.max.messages": producer_queue, "message.timeout.ms": message_timeout_ms,
            "enable.idempotence": False,  # best effort: a retry storm must not stall newer events
            "acks": 1, **config}))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = 0.0

    # -- the request path ------------------------------------------------------------------------
    def publish(self, event: PredictionEvent | PredictionEventV2) -> None:
        """Never blocks, never raises: a full buffer drops the event (counted)."""
        try:
            self._buffer.put_nowait(event)
        except queue.Full:
            self._drop("buffer_full")

    # -- the drain thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._drain, name="flywheel-prediction-publisher", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop draining, hand what is buffered to the producer and wait up to ``timeout`` for
        acknowledgements; what is still unacknowledged then is counted as dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._move(block=False)
        remaining = self._producer.flush(timeout)
        if remaining:
            self._drop("unflushed_at_close", remaining)

    def _drain(self) -> None:
        while not self._stop.is_set():
            self._move(block=True)
            self._producer.poll(0)

    def _move(self, *, block: bool) -> None:
        try:
            event = self._buffer.get(timeout=0.1) if block else self._buffer.get_nowait()
        except queue.Empty:
            return
        while True:
            self._produce(event)
            try:
                event = self._buffer.get_nowait()
            except queue.Empty:
                return

    def _produce(self, event: PredictionEvent | PredictionEventV2) -> None:
        try:
            self._producer.produce(self.topic, value=event.to_json(), key=event.prediction_id.encode(),
                                   on_delivery=self._delivered)
        except BufferError:
            self._drop("producer_queue_full")
            self._producer.poll(0)
        except KafkaException as exc:
            self._drop("produce_error", detail=str(exc))

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.metrics.events_published.inc()
        else:
            self._drop("delivery_failed", detail=err.str())

    def _drop(self, reason: str, count: int = 1, detail: str = "") -> None:
        self.metrics.events_dropped.labels(reason).inc(count)
        with self._log_lock:
            self._unlogged += count
            now = time.monotonic()
            if now - self._logged_at < self.log_every_s:
                return
            dropped, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.warning("dropped %d prediction event(s) for %s (latest: %s%s)", dropped, self.topic, reason,
                    f": {detail}" if detail else "")


class FeedbackPublisher(FeedbackProducer):
    """A :class:`FeedbackProducer` that refuses instead of waiting when its queue is full."""

    def __init__(self, kafka: KafkaConnection, topics: Topics, *, queue_size: int = 10_000, **config: Any) -> None:
        super().__init__(kafka, topics, **{"queue.buffering.max.messages": queue_size, **config})

    def _produce(self, topic: str, value: bytes, key: bytes, delivered: Callable[..., None]) -> None:
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        except BufferError as exc:
            self._producer.poll(0)
            raise QueueFull(f"the feedback queue for {topic} is full (the broker is slow or unreachable)") from exc

    def close_quietly(self, timeout: float = 5.0) -> None:
        """Flush at shutdown; what could not be delivered is logged, not raised."""
        with contextlib.suppress(DeliveryError):
            self.flush(timeout)
            return
        log.warning("feedback not delivered at shutdown (see earlier delivery errors)")

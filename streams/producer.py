"""Producer clients for frontends and serving pods: idempotent, keyed by prediction id, delivery errors
surfaced to the caller (per-send callback, and ``flush()``/``close()`` raise what was not delivered)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from pydantic import ValidationError

from core.kafka import KafkaConnection
from core.settings import Topics
from schemas.base import Event
from schemas.events import FeedbackEvent, FeedbackEventV2, PredictionEvent, PredictionEventV2
from schemas.exceptions import InvalidEvent
from streams.exceptions import DeliveryError
from streams.kafka import produce, producer_config

log = logging.getLogger(__name__)
DeliveryCallback = Callable[[DeliveryError | None], None]
Serializer = Callable[[Event, str], bytes]
"""Turns an event into record bytes for a topic; default plain JSON (a Confluent JSONSerializer fits)."""


def _json(event: Event, _topic: str) -> bytes:
    return event.to_json()


class EventProducer:
    """Publishes prediction and feedback events, keyed by ``prediction_id`` (so a prediction and its
    feedback share a partition number)."""

    def __init__(self, kafka: KafkaConnection, topics: Topics, *, serializer: Serializer = _json,
                 flush_timeout_s: float = 10.0, **config: Any) -> None:
        self.topics = topics
        self._serialize = serializer
        self._flush_timeout = flush_timeout_s
        self._producer = Producer(producer_config(kafka, **config))
        self._failed: list[str] = []
        self._lock = threading.Lock()

    def send(self, event: FeedbackEvent | PredictionEvent | FeedbackEventV2 | PredictionEventV2,
             on_delivery: DeliveryCallback | None = None) -> None:
        topic = self.topics.feedback if isinstance(event, FeedbackEvent | FeedbackEventV2) else self.topics.predictions
        value = self._serialize(event, topic)

        def delivered(err: KafkaError | None, _msg: object) -> None:
            failure = None
            if err is not None:
                failure = DeliveryError(topic, err.str())
                with self._lock:
                    self._failed.append(err.str())
                log.warning("%s %s not delivered: %s", event.type, event.prediction_id, err.str())
            if on_delivery is not None:
                on_delivery(failure)

        try:
            self._produce(topic, value, event.prediction_id.encode(), delivered)
        except KafkaException as exc:
            raise DeliveryError(topic, str(exc)) from exc
        self._producer.poll(0)

    def _produce(self, topic: str, value: bytes, key: bytes, delivered: Callable[..., None]) -> None:
        """Queue one record; waits while librdkafka's local queue is full (a subclass may refuse instead)."""
        produce(self._producer, topic, value, key, delivered)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for outstanding deliveries; raise :class:`DeliveryError` for any that failed since the
        last flush, or that are still unacknowledged at the timeout."""
        remaining = self._producer.flush(self._flush_timeout if timeout is None else timeout)
        with self._lock:
            failed, self._failed = self._failed, []
        if remaining:
            raise DeliveryError(self.topics.prefix, "not acknowledged within the flush timeout", remaining)
        if failed:
            raise DeliveryError(self.topics.prefix, failed[0], len(failed))

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self._producer.flush(self._flush_timeout)


class FeedbackProducer(EventProducer):
    """The frontend client: ``feedback(prediction_id, label=... | thumbs=...)``; with ``model``, a schema
    version 2 event naming the model (it joins only that model's prediction)."""

    def feedback(
        self, prediction_id: str, *, label: str | None = None, thumbs: str | None = None,
        user_id: str | None = None, source: str = "api", feedback_id: str | None = None,
        on_delivery: DeliveryCallback | None = None, model: str | None = None, rating: int | None = None,
        correction: str | None = None, signal: str | None = None,
    ) -> FeedbackEvent | FeedbackEventV2:
        """``rating``, ``correction`` and ``signal`` (a generator's feedback) need ``model``."""
        fields: dict[str, object] = {
            "feedback_id": feedback_id or str(uuid.uuid4()), "prediction_id": prediction_id, "label": label,
            "thumbs": thumbs, "user_id": user_id, "source": source, "ts": datetime.now(UTC)}
        judgement = {k: v for k, v in (("rating", rating), ("correction", correction), ("signal", signal))
                     if v is not None}
        if judgement and model is None:
            raise InvalidEvent(f"{', '.join(judgement)}: needs a named model (a schema version 2 event)")
        fields.update(judgement)
        event: FeedbackEvent | FeedbackEventV2
        try:
            event = (FeedbackEvent.model_validate(fields) if model is None
                     else FeedbackEventV2.model_validate({**fields, "model": model}))
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'feedback'}: {e['msg']}" for e in exc.errors())
            raise InvalidEvent(detail) from exc
        self.send(event, on_delivery)
        return event

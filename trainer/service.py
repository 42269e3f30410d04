"""The trainer consumer: wakes on ``Landed`` / ``Curated`` signals and ``RetrainRequest`` events, and
checks Postgres on a timer and on the cron schedule even when no signal comes (signals are hints;
Postgres is the truth). Training runs in this loop; the lock in ``Trainer`` makes it single flight
across every instance, and a replayed signal finds its watermark already trained.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Consumer
from pydantic import ValidationError

from core.exceptions import FlywheelError
from core.kafka import KafkaConnection
from registry.announce import fold, read_model_events
from schemas import Curated, Landed, RetrainRequest
from streams.kafka import consume_or_wait, consumer_config, store_offsets
from trainer.config import TrainerConfig
from trainer.pipeline import Trainer
from trainer.policy import Mode, Trigger
from trainer.runs import RunResult
from trainer.schedule import Cron

log = logging.getLogger(__name__)


class TrainerService:
    def __init__(self, trainer: Trainer, config: TrainerConfig, *, kafka: KafkaConnection, group: str,
                 signal_topics: list[str], request_topic: str, session_timeout_ms: int = 6000,
                 on_result: Callable[[RunResult], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.trainer = trainer
        self.config = config
        self.kafka = kafka
        self.group = group
        self.topics = [*signal_topics, request_topic]
        self.request_topic = request_topic
        self.session_timeout_ms = session_timeout_ms
        self.on_result = on_result
        self.clock = clock
        self.cron = Cron(config.policy.full_cron) if config.policy.full_cron else None
        self.results: list[RunResult] = []

    def run(self, stop: threading.Event) -> None:
        consumer = Consumer(consumer_config(
            self.kafka, self.group, self.session_timeout_ms,
            # earliest: a signal or request produced while the group is still joining is not skipped; a
            # replayed signal is harmless, a replayed request is recognised by its id, and requests
            # older than request_max_age_s are ignored. Offsets are stored only after handling.
            **{"enable.auto.commit": True, "auto.offset.reset": "earliest", "max.poll.interval.ms": 1_800_000}))
        consumer.subscribe(self.topics)
        interval = self.config.policy.reconcile_interval_s
        next_check = 0.0  # reconcile at start
        next_cron = self.cron.next_after(self.clock()) if self.cron else None
        pending: list[RetrainRequest] = []  # requests that found the lock held: retried until they expire
        try:
            while not stop.is_set():
                wake: Trigger | None = None
                messages = consume_or_wait(consumer, stop)
                for msg in messages:
                    if msg.error():
                        continue
                    kind = self._classify(msg.topic() or "", msg.value() or b"")
                    if isinstance(kind, RetrainRequest):
                        pending.append(kind)
                    elif kind is not None:
                        wake = "signal"
                if next_cron is not None and self.clock() >= next_cron:
                    assert self.cron is not None
                    pending.append(RetrainRequest(ts=self.clock(), model=self.trainer.model_name, mode="full",
                                                  trigger="schedule", reason=f"cron {self.cron.expression}"))
                    next_cron = self.cron.next_after(self.clock())
                if time.monotonic() >= next_check:
                    wake = wake or "reconcile"
                    self._reconcile_announcements()
                    next_check = time.monotonic() + interval
                pending = [r for r in pending if not self._handle(r)]
                if wake is not None:
                    self._train(wake, None)
                if messages:
                    store_offsets(consumer, messages)
                if pending:
                    stop.wait(1.0)
        finally:
            consumer.close()

    def _handle(self, request: RetrainRequest) -> bool:
        """True when the request is done with (trained, skipped, failed, stale or not ours)."""
        age = (self.clock() - request.ts).total_seconds()
        if request.model != self.trainer.model_name:
            return True
        if age > self.config.policy.request_max_age_s:
            log.info("ignoring a %s retrain request from %.0f s ago", request.trigger, age)
            return True
        result = self._train(request.trigger, request.mode, request.request_id)
        return result is None or result.status != "busy"

    def _reconcile_announcements(self) -> None:
        try:
            announced = fold(read_model_events(self.kafka, self.trainer.announcer.topic))
            self.trainer.reconcile_announcements(announced)
        except FlywheelError as exc:  # the next reconcile retries; training does not depend on it
            log.warning("could not reconcile the models topic with the registry: %s", exc)

    def _train(self, trigger: Trigger, requested: Mode | None, request_id: str | None = None) -> RunResult | None:
        """One training attempt. An error outside a run (database or registry unreachable) is logged and
        the loop goes on: the trainer never takes the platform down with it."""
        try:
            result = self.trainer.maybe_train(trigger, requested=requested, request_id=request_id)
        except Exception:
            log.exception("training attempt (%s) failed before a run started; retrying on the next wake-up", trigger)
            return None
        self.results.append(result)
        if result.status not in ("skipped", "busy"):
            log.info("training %s (%s): %s", result.status, trigger, result.reason)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _classify(self, topic: str, value: bytes) -> RetrainRequest | Landed | Curated | None:
        """A signal, a request, or None for a record that is neither (logged, skipped: never fatal)."""
        try:
            if topic == self.request_topic:
                return RetrainRequest.model_validate_json(value)
            for cls in (Curated, Landed):
                try:
                    return cls.model_validate_json(value)
                except ValidationError:
                    continue
        except ValidationError as exc:
            log.warning("skipping a bad retrain request on %s: %s", topic, exc.errors()[0]["msg"])
            return None
        log.warning("skipping a record on %s that is neither Landed nor Curated", topic)
        return None

"""The processor runtime: batch consume -> decode -> one Postgres transaction per batch.

Exactly once into Postgres without Kafka transactions:

* each batch's rows, dead letters and the partitions' next offsets are written in ONE transaction;
* on assignment the consumer seeks to the offsets stored in Postgres (Kafka commits are for lag display);
* inside the transaction the offset rows are locked and the batch is fenced against them: records
  below the stored offset were committed by someone else and are skipped; a batch that starts above it
  (a gap) is refused and the partition is re-read from the stored offset.

A record the database itself refuses (bad bytes that passed validation) is isolated by bisection inside
the transaction and dead-lettered with reason ``sink_rejected``: a poison record never stops a
partition. Database or broker outages are retried with capped exponential backoff while the consumer
stays in its group (partitions paused); SIGTERM finishes the batch in hand or abandons it unwritten.

This module is the Kafka side (consume, shard over writers, rebalances, back-pressure, timers); the
transaction itself is :mod:`streams.sink`, the retry loop :mod:`streams._retry`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from core.db import Connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from schemas.events import DeadLetter
from schemas.exceptions import DecodeError
from streams import offsets
from streams._retry import OUTAGES, Abandoned, Backoff, retrying
from streams.base import Item, Outcome, Processor
from streams.exceptions import KafkaUnavailable, OffsetGap
from streams.kafka import CheckedProducer, ConsumerFactory, cluster_id, consumer_config, new_consumer, producer_config
from streams.metrics import StreamMetrics
from streams.sink import Batch, BatchSink, dead_letter

log = logging.getLogger(__name__)
T = TypeVar("T")
T2 = TypeVar("T2")
TP = tuple[str, int]
_CONTROL = -1  # connection slot of the main thread (assignment, housekeeping); writers use 0..n-1


def _coordinates(msg: Message) -> tuple[str, int, int]:
    """Topic, partition, offset of a consumed record (never None once ``error()`` is None)."""
    return cast(str, msg.topic()), cast(int, msg.partition()), cast(int, msg.offset())



# The GIL's switch interval for processes that run processors (CPython's default: 5 ms). A writer thread whose
# Postgres statement has returned waits for the GIL while the loop thread decodes, and its backend idles
# meanwhile; at 0.5 ms the writers get it back sooner. Measured on the 2-core AVX2 EPYC (bench/ingest.py, quiet,
# alternated with 5 ms, six runs each): the machine idle 2.4-3.6 us per consumed record (2.4-2.8 in five) vs 3.1-4.3,
# landed/raw 0.44-0.51 vs 0.44-0.48 (within that host's run-to-run noise).
SWITCH_INTERVAL_S = 0.0005


def tune_interpreter() -> None:
    """For entry points that run processors. GC: a batch keeps thousands of freshly decoded, GC-tracked
    events alive, and CPython's default gen-0 threshold (700) then runs collections that traverse them
    again and again (measured: 5.0 -> 2.7 us per decoded event). Freeze what start-up allocated and
    collect less often; the runtime creates no reference cycles on its hot path. The GIL: hand it over
    every :data:`SWITCH_INTERVAL_S` (see there)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunnerConfig:
    kafka: KafkaConnection
    dlq_topic: str
    batch_max_records: int = 5000
    batch_max_wait_s: float = 0.2
    session_timeout_ms: int = 6000
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    lag_interval_s: float = 5.0
    writers: int = 4
    max_inflight: int = 0  # 0 = two sub-batches per writer
    consumer_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: FlywheelSettings, kafka: KafkaConnection) -> RunnerConfig:
        return cls(
            kafka=kafka, dlq_topic=settings.topics.dlq,
            batch_max_records=settings.batch_max_records, batch_max_wait_s=settings.batch_max_wait_ms / 1000,
            session_timeout_ms=settings.session_timeout_ms, retry_initial_s=settings.db_retry_initial_s,
            retry_max_s=settings.db_retry_max_s, writers=settings.sink_writers,
        )


@dataclass(slots=True)
class _InFlight(Generic[T]):
    future: Future[tuple[Outcome, dict[TP, int]]]
    batch: Batch[T]
    generation: int
    slot: int


class ProcessorRunner(Generic[T]):
    """Runs one :class:`Processor` until ``stop`` is set. One instance per process/thread.

    Collaborators: ``connector`` opens the Postgres sessions (one per writer, one for the control
    thread; :func:`core.db.session_connector`), ``consumer_factory`` makes the Kafka consumer from its config
    (default: a confluent-kafka Consumer), ``producer`` publishes dead letters and wake-up signals."""

    def __init__(
        self,
        processor: Processor[T],
        config: RunnerConfig,
        connector: Connector,
        *,
        metrics: StreamMetrics | None = None,
        producer: CheckedProducer | None = None,
        consumer_factory: ConsumerFactory = new_consumer,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.processor = processor
        self.config = config
        self.connector = connector
        self.consumer_factory = consumer_factory
        self.metrics = metrics or StreamMetrics()
        self.producer = producer or CheckedProducer(producer_config(config.kafka))
        self.clock = clock
        self.sink = BatchSink(processor, self.producer, config.dlq_topic, self.metrics, clock)
        self.backoff = Backoff(config.retry_initial_s, config.retry_max_s)
        self.group = processor.group
        self.stop_event = threading.Event()
        self.batches_committed = 0
        self.first_batch_at: float | None = None  # time.perf_counter() when the first batch arrived
        self._conns: dict[int, psycopg.Connection] = {}  # slot -> connection; slot i belongs to writer i
        self._consumer: Consumer | None = None
        self._cluster = ""
        self._generation = 0
        self._paused = False
        self._next_housekeeping = 0.0
        self._next_lag = 0.0
        self._inflight: list[_InFlight[T]] = []
        self._closing = threading.Event()
        self._max_inflight = config.max_inflight or 2 * max(1, config.writers)
        self._rewound: dict[TP, int] = {}  # partition -> stored offset it was last rewound to after a gap
        # One FIFO thread + connection per writer; a partition always goes to the same writer, so its
        # batches commit in order while different partitions use several Postgres backends at once.
        self._writers = [ThreadPoolExecutor(1, thread_name_prefix=f"{self.group}-writer{i}")
                         for i in range(max(1, config.writers))]

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        if stop is not None:
            self.stop_event = stop
        self._cluster = cluster_id(self.config.kafka)
        consumer = self.consumer_factory(consumer_config(
            self.config.kafka, self.group, self.config.session_timeout_ms, **self.config.consumer_overrides))
        self._consumer = consumer
        try:
            consumer.subscribe(list(self.processor.topics), on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_revoke)
            log.info("%s: consuming %s (cluster %s)", self.group, ", ".join(self.processor.topics), self._cluster)
            for slot, writer in enumerate(self._writers):  # connected before the first batch needs them
                writer.submit(self._connect_quietly, slot)
            while not self.stop_event.is_set():
                self._wait_for_backlog()
                messages = consumer.consume(self.config.batch_max_records, timeout=self.config.batch_max_wait_s)
                if messages:
                    batch = self._decode(messages)
                    for slot, part in self._shard(batch):
                        future = self._writers[slot].submit(self._commit_retrying, part, slot, self._generation)
                        self._inflight.append(_InFlight(future, part, self._generation, slot))
                self._reap()
                self._maybe_housekeeping()
                self._maybe_update_lag()
            self._reap(block=True)  # SIGTERM: finish what is in hand (abandoned unwritten if Postgres is down)
        finally:
            self._closing.set()  # an unexpected error: writers stop retrying, queued sub-batches are dropped
            for writer in self._writers:
                writer.shutdown(wait=True, cancel_futures=True)
            self._close()

    def stop(self) -> None:
        self.stop_event.set()

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException as exc:
                log.warning("%s: consumer close: %s", self.group, exc)
            self._consumer = None
        self.producer.flush(5.0)
        for slot in list(self._conns):
            self._reset_connection(slot)

    # -- rebalance -----------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._wait_inflight()
        self._generation += 1
        self._rewound.clear()
        self.metrics.rebalances.labels(self.group).inc()
        try:  # the embedded broker gets a new cluster id when it restarts under a running processor
            self._cluster = cluster_id(self.config.kafka)
        except KafkaUnavailable as exc:
            log.warning("%s: cluster id not refreshed: %s", self.group, exc)
        try:
            stored = self._retrying(lambda: offsets.load(
                self._connection(_CONTROL), self.group, self._cluster, [(p.topic, p.partition) for p in partitions]))
        except Abandoned:  # stopping while Postgres is down: nothing will be consumed anyway
            return
        for p in partitions:
            offset = stored.get((p.topic, p.partition), offsets.NO_OFFSET)
            p.offset = offset if offset >= 0 else OFFSET_BEGINNING
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        else:  # librdkafka keeps an application pause across revoke and re-assign: undo it explicitly
            consumer.resume(partitions)
        self.metrics.assigned.labels(self.group).set(len(partitions))
        log.info("%s: assigned %s", self.group, [(p.topic, p.partition, p.offset) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._wait_inflight()
        self._generation += 1
        self.metrics.assigned.labels(self.group).set(0)
        for p in partitions:  # a pod must not keep reporting lag of partitions it no longer owns
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(self.group, p.topic, str(p.partition))
        log.info("%s: revoked %s", self.group, [(p.topic, p.partition) for p in partitions])

    # -- one batch -----------------------------------------------------------------------------
    def _shard(self, batch: Batch[T]) -> list[tuple[int, Batch[T]]]:
        """Split a batch by writer slot: partition number modulo writers (a prediction and its feedback
        are keyed alike, so they share a partition number and usually a writer)."""
        n = len(self._writers)
        slots = {p % n for _t, p in batch.spans}
        if len(slots) == 1:
            return [(slots.pop(), batch)]
        parts = {slot: Batch[T]([], [], {}, Counter(), batch.started) for slot in sorted(slots)}
        for (topic, partition), span in batch.spans.items():
            parts[partition % n].spans[(topic, partition)] = span
        for item in batch.items:
            part = parts[item.partition % n]
            part.items.append(item)
            part.consumed[item.topic] += 1
        for dead in batch.dead:
            part = parts[dead.source_partition % n]
            part.dead.append(dead)
            part.consumed[dead.source_topic] += 1
        return list(parts.items())

    def _reap(self, block: bool = False) -> None:
        """Act on finished commits in submission order: metrics and signals after a commit, a rewind
        after a gap or an abandoned batch. With ``block``, wait for everything in flight."""
        while self._inflight and (block or self._inflight[0].future.done()):
            self._settle(self._inflight.pop(0))

    def _wait_for_backlog(self) -> None:
        """Back-pressure: while writers are behind (or retrying through an outage), stay in the group
        with partitions paused until the oldest commit in flight finishes."""
        if len(self._inflight) < self._max_inflight:
            return
        oldest = self._inflight[0].future
        with contextlib.suppress(Exception):  # the usual case: a busy writer, done within the second
            oldest.exception(timeout=1.0)
        while not oldest.done() and not self.stop_event.is_set():  # an outage: pause, keep polling
            self._wait(0.5, until=oldest.done)
        self._reap()

    def _settle(self, inflight: _InFlight[T]) -> None:
        batch = inflight.batch
        try:
            outcome, next_offsets = inflight.future.result()
        except OffsetGap as gap:
            tp = (gap.topic, gap.partition)
            if inflight.generation == self._generation and self._rewound.get(tp) != gap.stored:
                log.warning("%s: %s; re-reading", self.group, gap)
                self._rewound[tp] = gap.stored  # later queued sub-batches of tp hit the same gap: seek once
                self._seek(tp, gap.stored)
            return
        except Abandoned:
            # abandoned after a rebalance (the assignment already positioned every partition at its
            # stored offset) or at shutdown: seeking here would move a partition past unwritten records
            return
        self.batches_committed += 1
        self.metrics.batch_seconds.labels(self.group).observe(time.perf_counter() - batch.started)
        self.metrics.batch_records.labels(self.group).observe(sum(batch.consumed.values()))
        for topic, n in batch.consumed.items():
            self.metrics.consumed.labels(self.group, topic).inc(n)
        self.metrics.record(self.group, outcome)
        self._after_commit(outcome, next_offsets)

    def _commit_retrying(self, batch: Batch[T], slot: int, generation: int) -> tuple[Outcome, dict[TP, int]]:
        """In writer ``slot``'s thread: commit, retrying outages with capped backoff. A rebalance since
        the batch was read, or a stop while Postgres is down, abandons it (nothing was written)."""
        return retrying(lambda: self._commit(batch, slot), self.backoff, wait=self.stop_event.wait,
                        on_outage=lambda exc: self._note_retry(exc, slot),
                        abandoned=lambda: self._generation != generation or self._closing.is_set())

    def _wait_inflight(self) -> None:
        """From a rebalance callback: give commits in flight a moment to finish (fewer records for the
        next owner to re-read); whatever is still queued afterwards is dropped by the generation bump.
        Correctness never depends on this: every commit is fenced against the stored offsets."""
        deadline = time.monotonic() + self.config.session_timeout_ms / 2000
        for inflight in self._inflight:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(Exception):
                inflight.future.exception(timeout=remaining)

    def _decode(self, messages: list[Message]) -> Batch[T]:
        started = time.perf_counter()
        if self.first_batch_at is None:
            self.first_batch_at = started
        now = self.clock()
        decode = self.processor.decode
        items: list[Item[T]] = []
        dead: list[DeadLetter] = []
        spans: dict[TP, list[int]] = {}
        consumed: Counter[str] = Counter()
        for msg in messages:
            if msg.error() is not None:
                log.warning("%s: consumer error: %s", self.group, msg.error())
                continue
            # hot path: no helper call (the stubs type these Optional; they are set when error() is None)
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            span = spans.get((topic, partition))
            if span is None:
                spans[(topic, partition)] = [offset, offset]
            else:
                span[1] = offset
            consumed[topic] += 1
            try:
                items.append(Item(topic, partition, offset, decode(topic, msg.value(), now), msg))
            except DecodeError as exc:
                dead.append(dead_letter(self.group, exc.reason, exc.detail, topic, partition, offset, msg, now))
        return Batch(items, dead, spans, consumed, started)

    def _commit(self, batch: Batch[T], slot: int = 0) -> tuple[Outcome, dict[TP, int]]:
        """One transaction on writer ``slot``'s connection (:class:`streams.sink.BatchSink`)."""
        return self.sink.commit(self._connection(slot), batch, self._cluster)

    def _after_commit(self, outcome: Outcome, next_offsets: dict[TP, int]) -> None:
        self._publish(outcome)
        if self._consumer is not None:
            try:  # for lag display in Kafka tooling only; Postgres holds the truth
                self._consumer.commit(offsets=[TopicPartition(t, p, n) for (t, p), n in next_offsets.items()],
                                      asynchronous=True)
            except KafkaException as exc:
                log.debug("%s: async offset commit: %s", self.group, exc)

    def _publish(self, outcome: Outcome) -> None:
        sig = self.processor.signal(outcome, self.clock())
        if sig is None:
            return
        try:
            self.producer.send_nowait(sig.topic, sig.key, sig.value)
        except (KafkaException, BufferError) as exc:
            self.metrics.signal_errors.labels(self.group).inc()
            log.warning("%s: wake-up signal not queued (%s); consumers will reconcile", self.group, exc)

    def _seek(self, tp: TP, offset: int) -> None:
        """Re-read a partition from ``offset`` (after a gap), if it is still ours."""
        if self._consumer is None:
            return
        if tp in {(p.topic, p.partition) for p in self._consumer.assignment()}:
            self._consumer.seek(TopicPartition(tp[0], tp[1], offset if offset >= 0 else OFFSET_BEGINNING))

    # -- retries -------------------------------------------------------------------------------
    def _retrying(self, attempt: Callable[[], T2]) -> T2:
        """Retry ``attempt`` on the control connection (runs inside rebalance callbacks: no consume())."""
        return retrying(attempt, self.backoff, wait=self.stop_event.wait,
                        on_outage=lambda exc: self._note_retry(exc, _CONTROL))

    def _note_retry(self, exc: BaseException, slot: int | None = None) -> None:
        self._reset_connection(slot)
        self.metrics.db_retries.labels(self.group).inc()
        log.warning("%s: %s; retrying", self.group, " ".join(str(exc).split()))

    def _wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Wait while staying in the group: partitions paused, callbacks served."""
        consumer = self._consumer
        end = time.monotonic() + seconds
        if consumer is None or self._paused:
            self.stop_event.wait(seconds)
            return
        self._paused = True
        consumer.pause(consumer.assignment())
        try:
            while time.monotonic() < end and not self.stop_event.is_set() and not until():
                for msg in consumer.consume(1, timeout=min(0.1, max(0.0, end - time.monotonic()))):
                    if msg.error() is None:  # arrived on a newly assigned partition: read it again later
                        consumer.seek(TopicPartition(*_coordinates(msg)))
        finally:
            self._paused = False
            consumer.resume(consumer.assignment())

    def _connection(self, slot: int = 0) -> psycopg.Connection:
        conn = self._conns.get(slot)
        if conn is None or conn.closed:
            conn = self.connector(autocommit=True)
            try:
                self.processor.prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conns[slot] = conn
        return conn

    def _connect_quietly(self, slot: int) -> None:
        """Open writer ``slot``'s session ahead of its first batch (connect + ``prepare``, which that batch would
        otherwise wait for); an outage is left to that batch's retries."""
        with contextlib.suppress(*OUTAGES):
            self._connection(slot)

    def _reset_connection(self, slot: int | None = None) -> None:
        for key in list(self._conns) if slot is None else [slot]:
            conn = self._conns.pop(key, None)
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()

    # -- timers --------------------------------------------------------------------------------
    def _maybe_housekeeping(self) -> None:
        interval = self.processor.housekeeping_interval_s
        now = time.monotonic()
        if interval <= 0 or now < self._next_housekeeping:
            return
        self._next_housekeeping = now + interval
        try:
            conn = self._connection(_CONTROL)
            with conn.transaction():
                outcome = self.processor.housekeeping(conn)
                offsets.bump_counters(conn, self.group, outcome.counts)
        except OUTAGES as exc:
            self._reset_connection(_CONTROL)
            log.warning("%s: housekeeping skipped: %s", self.group, exc)
            return
        if outcome:
            self.metrics.record(self.group, outcome)
            self._publish(outcome)

    def _maybe_update_lag(self) -> None:
        now = time.monotonic()
        if self._consumer is None or now < self._next_lag:
            return
        self._next_lag = now + self.config.lag_interval_s
        try:
            assignment = self._consumer.assignment()
            for tp, pos in zip(assignment, self._consumer.position(assignment), strict=True):
                _lo, hi = self._consumer.get_watermark_offsets(tp, cached=True)
                if hi >= 0 and pos.offset >= 0:
                    self.metrics.lag.labels(self.group, tp.topic, str(tp.partition)).set(hi - pos.offset)
        except KafkaException as exc:
            log.debug("%s: lag update: %s", self.group, exc)

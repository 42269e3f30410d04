"""The curation consumer: wakes on ``Landed`` signals and on a timer (signals are hints; Postgres is
the truth), curates every joined feedback row without a sample, and publishes a ``Curated`` signal
after each committed batch.

Every declared model (``models``, plus the default text model the service is configured with) is
curated on its own: its own rows, cursor, annotators and label set. One instance curates a model at a
time across the platform (a Postgres session-level advisory lock per model and pass; another holder
means ``busy`` for that model), and each batch also locks the model's cursor row, so even two curators without
the lock never write the same sample. The first pass after start sweeps every joined row without a
sample (whatever its id); later passes look above the watermark and at late joins by ``resolved_at``.
A bad record on the topic is logged and skipped; a database error fails the pass, which is retried with
capped exponential back-off; the loop itself never stops on either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import psycopg
from confluent_kafka import Consumer, Message
from pydantic import ValidationError

from core import db
from core.db import Connector, session_connector
from core.exceptions import FlywheelError
from core.kafka import KafkaConnection
from curation.config import CurationConfig
from curation.exceptions import CurationStoreError
from curation.metrics import CurationMetrics
from curation.pairs import PairCurator, ToxicityScorer
from curation.pipeline import BatchResult, Curator
from curation.postgres import PostgresCurationStore
from schemas import Curated, IdRange, Landed
from streams.kafka import (
    CheckedProducer,
    consume_or_wait,
    consumer_config,
    new_consumer,
    producer_config,
    store_offsets,
)
from tasks import ModelStore

if TYPE_CHECKING:
    from core.settings import FlywheelSettings

log = logging.getLogger(__name__)

LOCK_NAME = "flywheel.curation"


def lock_key(model: str) -> int:
    """The advisory lock a curator holds while it curates ``model``."""
    return db.advisory_key(f"{LOCK_NAME}:{model}")


class Publisher(Protocol):
    """What the service needs of a producer (``streams.kafka.CheckedProducer``; a list in tests)."""

    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]], timeout: float = 30.0) -> int: ...


@dataclass
class PassResult:
    outcome: Literal["curated", "idle", "busy"]
    batches: list[BatchResult] = field(default_factory=list)
    backfilled: int = 0

    def total(self, status: str) -> int:
        return sum(b.total(status) for b in self.batches)



class CurationService:
    """Collaborators are injected: ``connector`` opens its Postgres sessions (``session_connector(url)``
    for the platform's), ``consumer_factory`` builds the signal consumer, ``producer`` publishes."""

    def __init__(self, *, connector: Connector, config: CurationConfig, labels: Sequence[str],
                 kafka: KafkaConnection, group: str, landed_topic: str, curated_topic: str, default_model: str,
                 session_timeout_ms: int = 6000, producer: Publisher | None = None,
                 metrics: CurationMetrics | None = None,
                 consumer_factory: Callable[[dict[str, Any]], Consumer] = new_consumer,
                 toxicity: Callable[[], ToxicityScorer] | None = None) -> None:
        self.connector = connector
        self.toxicity_factory = toxicity or _toxicity_check
        self._toxicity: ToxicityScorer | None = None  # built when a generator is first curated
        self._generators: set[str] = set()
        self.consumer_factory = consumer_factory
        self.config = config
        self.default_model = default_model
        self.default_labels = tuple(labels)
        self._curators: dict[tuple[str, tuple[str, ...]], Curator] = {}
        self.kafka = kafka
        self.group = group
        self.landed_topic = landed_topic
        self.curated_topic = curated_topic
        self.session_timeout_ms = session_timeout_ms
        self.producer: Publisher = producer or CheckedProducer(producer_config(kafka))
        self.metrics = metrics or CurationMetrics()
        self.results: list[PassResult] = []  # every pass that curated something (tests and status read it)
        self.failures = 0
        self._stop = threading.Event()
        self._more = False  # the last pass stopped at max_pass_s with rows still pending

    @classmethod
    def from_settings(cls, settings: FlywheelSettings, kafka: KafkaConnection, db_url: str, config: CurationConfig, *,
                      metrics: CurationMetrics | None = None) -> CurationService:
        """The service of a platform: group ``<prefix>-curation``, its landed and curated topics."""
        return cls(connector=session_connector(db_url), config=config, labels=settings.labels, kafka=kafka,
                   group=f"{settings.topic_prefix}-curation", landed_topic=settings.topics.landed,
                   curated_topic=settings.topics.curated, default_model=settings.model_name,
                   session_timeout_ms=settings.session_timeout_ms, metrics=metrics)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        consumer = self.consumer_factory(consumer_config(
            self.kafka, self.group, self.session_timeout_ms,
            # earliest: a signal produced while the group is still joining is not skipped; a replayed
            # one finds nothing pending. Offsets are stored only after the signals were acted on.
            **{"enable.auto.commit": True, "auto.offset.reset": "earliest", "max.poll.interval.ms": 600_000}))
        consumer.subscribe([self.landed_topic])
        svc = self.config.service
        next_check = 0.0  # reconcile (and sweep) at start
        retry_at = 0.0  # after a failed pass, none before this (capped exponential back-off)
        backoff = svc.retry_initial_s
        sweep = True
        try:
            while not stop.is_set():
                messages = consume_or_wait(consumer, stop)
                signalled = sum(self._is_signal(m) for m in messages)
                now = time.monotonic()
                if (signalled or now >= next_check) and now >= retry_at:
                    result = self._pass(sweep=sweep)
                    if result is None:  # a pass runs again after the back-off, signal or not
                        retry_at = next_check = time.monotonic() + backoff
                        backoff = min(backoff * 2, svc.retry_max_s)
                    else:
                        sweep = sweep and self._more  # a sweep cut short goes on sweeping
                        retry_at, backoff = 0.0, svc.retry_initial_s
                        # a pass cut short by max_pass_s goes on at once
                        next_check = time.monotonic() + (0.0 if self._more else svc.reconcile_interval_s)
                if messages:
                    store_offsets(consumer, messages)
        finally:
            consumer.close()

    def _pass(self, *, sweep: bool) -> PassResult | None:
        """One pass, never raising: a failure is logged, counted and None."""
        try:
            result = self.curate_pass(sweep=sweep)
        except FlywheelError as exc:
            self.failures += 1
            self.metrics.passes.labels("failed").inc()
            log.warning("curation pass failed (retrying with back-off): %s", exc)
            return None
        except Exception:  # a bug must not take the platform down: logged with its traceback, retried
            self.failures += 1
            self.metrics.passes.labels("failed").inc()
            log.exception("curation pass failed unexpectedly (retrying with back-off)")
            return None
        self.metrics.passes.labels(result.outcome).inc()
        if result.outcome == "curated":
            self.results.append(result)
            log.info("curated %d samples: %d accepted, %d quarantined, %d rejected",
                     sum(sum(b.new.values()) for b in result.batches), result.total("accepted"),
                     result.total("quarantined"), result.total("rejected"))
        return result

    def curate_pass(self, *, sweep: bool = False) -> PassResult:
        """For every model: backfill migrated samples, then curate batches until nothing is pending (or
        ``max_pass_s`` for the whole pass), as the holder of that model's curation lock; ``busy`` when
        another session holds every lock asked for. Raises :class:`CurationStoreError` (or
        ``DatabaseUnavailable``) when Postgres fails."""
        self._more = False
        deadline = time.monotonic() + self.config.service.max_pass_s
        result = PassResult("idle")
        busy = 0
        models = self.models()
        for model, labels in models.items():
            if not self._curate_model(model, labels, result, deadline, sweep=sweep):
                busy += 1
        if busy and busy == len(models) and result.outcome == "idle":
            result.outcome = "busy"
        return result

    def models(self) -> dict[str, tuple[str, ...]]:
        """Name -> label set of every model to curate: the declared ones and the default text model."""
        try:
            with self.connector() as conn:
                specs = ModelStore(conn).all()
        except psycopg.Error as exc:
            raise CurationStoreError(" ".join(str(exc).split()) or type(exc).__name__) from exc
        self._generators = {spec.name for spec in specs if spec.task == "text-generation"}
        return {self.default_model: self.default_labels, **{spec.name: spec.labels for spec in specs}}

    def _curator(self, model: str, labels: tuple[str, ...]) -> Curator:
        """The model's curator: a generator's pairs are curated by :class:`PairCurator`."""
        key = (model, labels)
        if key not in self._curators:
            if model in self._generators:
                if self._toxicity is None:
                    self._toxicity = self.toxicity_factory()
                self._curators[key] = PairCurator(self.config, self._toxicity)
            else:
                self._curators[key] = Curator(self.config, labels)
        return self._curators[key]

    def _curate_model(self, model: str, labels: tuple[str, ...], result: PassResult, deadline: float, *,
                      sweep: bool) -> bool:
        """One model's share of a pass; False when another session holds its lock."""
        curator = self._curator(model, labels)
        try:
            with self.connector() as conn, \
                    db.try_advisory_lock(conn, lock_key(model)) as held:
                if not held:
                    return False
                store = PostgresCurationStore(conn, self.config.annotators, model=model)
                while time.monotonic() < deadline and (n := curator.backfill(store)):
                    result.backfilled += n
                while not self._stop.is_set():
                    if time.monotonic() > deadline:
                        self._more = True
                        break
                    started = time.perf_counter()
                    batch = curator.curate_batch(store, sweep=sweep)
                    if batch is None:
                        break
                    self.metrics.record(batch, time.perf_counter() - started)
                    result.batches.append(batch)
                    result.outcome = "curated"
                    self._announce(batch)
                self.metrics.lag.set(store.lag())
                return True
        except psycopg.Error as exc:  # the lock statements, or a connection that died under them
            raise CurationStoreError(" ".join(str(exc).split()) or type(exc).__name__) from exc

    def _announce(self, batch: BatchResult) -> None:
        """The Curated signal (best effort: the trainer also reconciles on its timer)."""
        event = Curated(ts=datetime.now(UTC), accepted=batch.total("accepted"),
                        quarantined=batch.total("quarantined"), rejected=batch.total("rejected"),
                        sample_ids=IdRange(first=batch.first_id, last=batch.last_id)
                        if batch.first_id is not None and batch.last_id is not None else None)
        try:
            self.producer.send_all(self.curated_topic, [(b"curation", event.to_json())], timeout=10.0)
        except FlywheelError as exc:
            self.metrics.signal_errors.inc()
            log.warning("Curated signal not delivered (the trainer reconciles): %s", exc)

    def _is_signal(self, msg: Message) -> bool:
        if msg.error():
            return False
        try:
            Landed.model_validate_json(msg.value() or b"")
        except ValidationError as exc:
            self.metrics.bad_signals.inc()
            log.warning("skipping a record on %s[%s]@%s that is not a Landed signal: %s", msg.topic(),
                        msg.partition(), msg.offset(), exc.errors()[0]["msg"] if exc.errors() else exc)
            return False
        return True


def _toxicity_check() -> ToxicityScorer:
    """The platform's toxicity check (imported when a generator is first curated: it may load a model)."""
    from curation.toxicity import ToxicityCheck  # loads its classifier: only when a generator is curated

    return ToxicityCheck()

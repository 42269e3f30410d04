"""The trainer consumer: wakes on ``Landed`` / ``Curated`` signals and ``RetrainRequest`` events, and
checks Postgres on a timer and on the cron schedule even when no signal comes (signals are hints;
Postgres is the truth). When no signal has come for ``quiet_after_s`` it asks once (trigger ``quiet``) for
a run on the samples below the threshold: the last labels of a stream that went quiet are not left waiting.
Training runs in this loop; the lock in ``Trainer`` makes it single flight across every instance, and a
replayed signal finds its watermark already trained.

Requests carry an ``action``: ``retrain`` (``Trainer.maybe_train``), ``bootstrap`` (``Trainer.bootstrap`` on
the corpus stored with the request) or ``evaluate`` (``Trainer.evaluate``). One a serving pod recorded in
``admin_requests`` is claimed there first (a replay finds it taken: it is worked on once) and its outcome
recorded there, so that any pod answers ``GET /training/{id}``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import Consumer
from pydantic import ValidationError

from core.exceptions import FlywheelError
from core.kafka import KafkaConnection
from kinds.generation import Pair, Prompt
from registry import CHALLENGER, CHAMPION
from registry.announce import fold, read_model_events
from registry.requests import AdminRequests, Claim
from schemas import Curated, Landed, RetrainRequest
from streams.kafka import consume_or_wait, consumer_config, new_consumer, store_offsets
from trainer.config import TrainerConfig
from trainer.data import CorpusRow
from trainer.pipeline import Trainer
from trainer.policy import Mode, Trigger
from trainer.runs import RunResult
from trainer.schedule import Cron

log = logging.getLogger(__name__)


class TrainerService:
    """The trainer consumer. Collaborators are injected: the ``trainer`` (its connector, registry and
    announcer), ``requests`` (the admin requests it works on), the ``clock`` and the ``consumer_factory``."""

    def __init__(self, trainer: Trainer, config: TrainerConfig, *, kafka: KafkaConnection, group: str,
                 signal_topics: list[str], request_topic: str, session_timeout_ms: int = 6000,
                 on_result: Callable[[RunResult], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 requests: AdminRequests | None = None,
                 consumer_factory: Callable[[dict[str, Any]], Consumer] = new_consumer) -> None:
        self.trainer = trainer
        self.consumer_factory = consumer_factory
        self.requests = requests or AdminRequests(trainer.connector, trainer.model_name)
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
        # the fit workers and Great Expectations warm beside the consumer: the first run does not wait on them
        threading.Thread(target=self._warm, name="trainer-warm", daemon=True).start()
        consumer = self.consumer_factory(consumer_config(
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
        quiet_after = self.config.policy.quiet_after_s
        last_signal, quiet_asked = time.monotonic(), False  # a start is new data too: pending labels are used
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
                        last_signal, quiet_asked = time.monotonic(), False
                if (wake is None and quiet_after is not None and not quiet_asked
                        and time.monotonic() - last_signal >= quiet_after):
                    wake, quiet_asked = "quiet", True  # once per quiet spell: the labels below the threshold
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

    def _warm(self) -> None:
        try:
            self.trainer.warm()
        except Exception:  # a warm-up is an optimisation: the first run pays what it could not do
            log.exception("could not warm the trainer (fit workers, Great Expectations)")

    def _handle(self, request: RetrainRequest) -> bool:
        """True when the request is done with (worked on, skipped, failed, stale, taken or not ours);
        False: try again (another trainer holds the lock, or the database is away)."""
        age = (self.clock() - request.ts).total_seconds()
        if request.model != self.trainer.model_name:
            return True
        try:
            claim = self.requests.claim(request.request_id)
        except Exception as exc:  # the database is away: the request waits (until it is stale)
            log.warning("cannot claim %s request %s: %s", request.action, request.request_id, exc)
            return age > self.config.policy.request_max_age_s
        if claim.status == "taken":
            log.debug("%s request %s is already taken", request.action, request.request_id)
            return True
        if age > self.config.policy.request_max_age_s:
            log.info("ignoring a %s %s request from %.0f s ago", request.trigger, request.action, age)
            self._finish(request, claim, "failed", outcome="expired",
                         error=f"no trainer took it within {self.config.policy.request_max_age_s:.0f} s")
            return True
        if request.action == "retrain":
            return self._retrain(request, claim)
        if claim.status == "unknown":  # its corpus or its report would have nowhere to go
            log.warning("skipping %s request %s: no admin_requests row", request.action, request.request_id)
            return True
        if request.action == "bootstrap":
            return self._bootstrap(request, claim)
        self._evaluate(request, claim)
        return True

    def _retrain(self, request: RetrainRequest, claim: Claim) -> bool:
        """``force_deploy`` comes from the request's row (written by an authenticated admin route), never
        from the event."""
        force = claim.status == "claimed" and bool(claim.params.get("force_deploy", False))
        result = self._train(request.trigger, request.mode, request.request_id, force_deploy=force)
        if result is None:
            self._finish(request, claim, "failed", error="the training attempt failed before a run started "
                                                          "(the database or the registry; see the trainer's log)")
            return True
        return self._record(request, claim, result)

    def _bootstrap(self, request: RetrainRequest, claim: Claim) -> bool:
        p = claim.params
        try:
            if self.trainer.generation is not None:  # a generator's corpus: rows of (prompt, response, domain)
                result = self.trainer.bootstrap_pairs(
                    [Pair(Prompt(str(text)), str(label)) for text, label, _domain in p["rows"]],
                    source=str(p.get("source", "api")), kind=p.get("kind"),
                    holdout_fraction=float(p.get("holdout", 0.2)), force=bool(p.get("force", False)),
                    request_id=request.request_id)
                self._observed(result, "bootstrap")
                return self._record(request, claim, result)
            rows = [CorpusRow(str(text), str(label), domain) for text, label, domain in p["rows"]]
            result = self.trainer.bootstrap(rows, source=str(p.get("source", "api")),
                                            kind=str(p.get("kind", "tfidf-logreg")),
                                            holdout_fraction=float(p.get("holdout", 0.2)),
                                            force=bool(p.get("force", False)), request_id=request.request_id)
        except Exception as exc:  # a champion without force, an unknown kind, the database: the request's failure
            log.warning("bootstrap request %s failed: %s", request.request_id, exc)
            self._finish(request, claim, "failed", error=f"{type(exc).__name__}: {exc}")
            return True
        self._observed(result, "bootstrap")
        return self._record(request, claim, result)

    def _evaluate(self, request: RetrainRequest, claim: Claim) -> None:
        registry = self.trainer.registry
        try:
            ref = request.version or (CHALLENGER if CHALLENGER in registry.aliases() else CHAMPION)
            info = registry.get(ref)
            verdicts = self.trainer.evaluate(info.version)
        except Exception as exc:  # no such version, the registry or the database away
            log.warning("evaluate request %s failed: %s", request.request_id, exc)
            self._finish(request, claim, "failed", error=f"{type(exc).__name__}: {exc}")
            return
        report = {"version": info.version, "semver": info.semver, "passed": all(v.passed for v in verdicts),
                  "verdicts": [{"gate": v.gate, "passed": v.passed, "reason": v.reason, "details": v.details}
                               for v in verdicts]}
        self._finish(request, claim, "done", outcome="evaluated", result=report)

    def _record(self, request: RetrainRequest, claim: Claim, result: RunResult) -> bool:
        """The run's outcome on the request; a ``busy`` request goes back to the queue (False: retried)."""
        if result.status == "busy":
            if claim.status == "claimed":
                self.requests.release(request.request_id)
            return False
        self._finish(request, claim, "failed" if result.status == "failed" else "done", outcome=result.status,
                     run_id=result.run_id, result={"reason": result.reason},
                     error=result.reason if result.status == "failed" else None)
        return True

    def _finish(self, request: RetrainRequest, claim: Claim, status: Literal["done", "failed"], *,
                outcome: str | None = None, run_id: uuid.UUID | None = None,
                result: dict[str, Any] | None = None, error: str | None = None) -> None:
        if claim.status != "claimed":
            return
        try:
            self.requests.finish(request.request_id, status, outcome=outcome, run_id=run_id, result=result,
                                 error=error)
        except Exception as exc:  # the work is done; only its record is missing (the run has its own)
            log.warning("cannot record the outcome of %s request %s: %s", request.action, request.request_id, exc)

    def _reconcile_announcements(self) -> None:
        try:
            announced = fold(read_model_events(self.kafka, self.trainer.announcer.topic))
            self.trainer.reconcile_announcements(announced)
        except FlywheelError as exc:  # the next reconcile retries; training does not depend on it
            log.warning("could not reconcile the models topic with the registry: %s", exc)

    def _train(self, trigger: Trigger, requested: Mode | None, request_id: str | None = None, *,
               force_deploy: bool = False) -> RunResult | None:
        """One training attempt. An error outside a run (database or registry unreachable) is logged and
        the loop goes on: the trainer never takes the platform down with it."""
        try:
            result = self.trainer.maybe_train(trigger, requested=requested, request_id=request_id,
                                              force_deploy=force_deploy)
        except Exception:
            log.exception("training attempt (%s) failed before a run started; retrying on the next wake-up", trigger)
            return None
        self._observed(result, trigger)
        return result

    def _observed(self, result: RunResult, trigger: str) -> None:
        """Every attempt's result: kept, logged unless nothing happened, handed to ``on_result``."""
        self.results.append(result)
        if result.status not in ("skipped", "busy"):
            log.info("training %s (%s): %s", result.status, trigger, result.reason)
        if self.on_result is not None:
            self.on_result(result)

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

"""The local platform that ``flywheel up`` runs: stack, migrations, topics, processors, /metrics.

``up`` records where everything listens in ``<data_dir>/stack.json`` so that other CLI commands find a
running local platform without extra configuration.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import CollectorRegistry, start_http_server

from core import db
from core.db import session_connector
from core.exceptions import FlywheelError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import fleet, migrate, models
from flywheel.endpoints import Endpoints, read_endpoints, state_file
from flywheel.exceptions import StackError
from flywheel.stack import LocalStack, embedded_postgres_user, private_dir, write_private
from schemas.codec import SchemaIdCheck
from streams import kafka, offsets
from streams.ingest import IngestProcessor
from streams.metrics import StreamMetrics
from streams.runtime import ProcessorRunner, RunnerConfig
from tasks import ModelSpec

if TYPE_CHECKING:
    from curation import CurationService
    from flywheel.lifecycle import Lifecycle

log = logging.getLogger(__name__)


class Platform:
    """Everything ``flywheel up`` starts, in order. It stops in the order that loses nothing: first what
    produces or consumes besides ingest (serving, curation, trainer), then ingest once it has landed what
    the broker holds (at most ``drain_timeout_s``), then the broker (which finishes the requests in hand),
    its storage and Postgres."""

    def __init__(self, settings: FlywheelSettings, *, on_ready: Callable[[Endpoints], None] | None = None,
                 stop_event: threading.Event | None = None, bootstrap: Mapping[str, Path] | None = None) -> None:
        """``bootstrap``: a labelled CSV per model name that its first champion is trained from when it has
        none (a tabular model's: one column per feature + ``label``; a generator's: ``prompt``, ``response``
        pairs); the default model's is
        ``FLYWHEEL_BOOTSTRAP_DATA`` unless named here."""
        self.settings = settings
        self.bootstrap = dict(bootstrap or {})
        if settings.bootstrap_data is not None:
            self.bootstrap.setdefault(settings.model_name, settings.bootstrap_data)
        self.on_ready = on_ready
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.registry = CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self._exit = contextlib.ExitStack()
        self._threads: list[threading.Thread] = []
        self._ingest_threads: list[threading.Thread] = []
        self._ingest_stop = threading.Event()  # set after the rest has stopped and ingest has drained
        self._drain: tuple[KafkaConnection, str, str, Sequence[str]] | None = None  # ingest's, once started
        self.runners: list[ProcessorRunner[Any]] = []
        self.endpoints: Endpoints | None = None
        self.lifecycle: Lifecycle | None = None
        self.trainer_ready = threading.Event()
        self.failed: list[str] = []  # components that stopped the platform with an error
        self.models: list[ModelSpec] = []
        self._model_metrics: tuple[Any, ...] = ()  # trainer, canary and drift metrics every model shares

    def __enter__(self) -> Platform:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _start(self) -> None:
        if self.stop_event.is_set():  # stopped before it started
            return
        s = self.settings
        private_dir(s.data_dir)
        running = read_endpoints(s)
        if running is not None and running.pid != os.getpid():
            raise StackError(f"a platform is already running from {s.data_dir} (pid {running.pid})")
        stack = self._exit.enter_context(LocalStack(s))
        private_dir(s.data_dir, traversable=embedded_postgres_user(stack))  # pgserver may have opened it
        migrate.upgrade(stack.database_url, default_model=s.model_name)
        with session_connector(stack.database_url)() as conn:
            self.models = models.declare(conn, s)  # a bad FLYWHEEL_MODELS_CONFIG stops `up` here
        kafka.create_topics(kafka.admin(stack.kafka), s.topics.all(), s.topic_partitions)
        metrics_url = None
        if s.metrics_port:
            try:
                server, _thread = start_http_server(s.metrics_port, addr=s.metrics_host, registry=self.registry)
            except OSError as exc:
                raise StackError(f"cannot serve /metrics on port {s.metrics_port}: {exc}") from exc
            self._exit.callback(server.shutdown)
            metrics_url = f"http://127.0.0.1:{s.metrics_port}/metrics"
        registry_url, schema_id_known = self._start_schema_registry(stack.database_url)
        self.endpoints = Endpoints(
            pid=os.getpid(), bootstrap=stack.bootstrap, database_url=stack.database_url, metrics_url=metrics_url,
            schema_registry_url=registry_url, embedded_broker=stack.broker is not None,
            embedded_postgres=stack.postgres is not None,
            serving_url=f"http://127.0.0.1:{s.serving_port}" if s.serving_port else None)
        path = state_file(s)
        write_private(path, json.dumps(asdict(self.endpoints), indent=2))  # 0600: it holds the database URL
        self._exit.callback(path.unlink, missing_ok=True)
        self._start_runner(IngestProcessor.from_settings(s, schema_id_known), stack.kafka, stack.database_url)
        curation = self._curation(stack.kafka, stack.database_url)
        self._start_thread("flywheel-curation", lambda: curation.run(self.stop_event))
        if s.run_trainer or s.serving_port:
            # imported here, before the threads that use it start: two threads importing the `serving`
            # package at once can fail with an import _DeadlockError (seen in the rainfall demo test)
            import serving.app
            import serving.canary  # noqa: F401
        if s.run_trainer:
            self._start_thread("flywheel-trainer", lambda: self._run_trainer(stack.kafka, stack.database_url))
        if s.serving_port:
            self._start_thread("flywheel-serving", lambda: self._serve(stack.kafka, stack.database_url))
        if self.on_ready is not None:
            self.on_ready(self.endpoints)

    def _start_schema_registry(self, database_url: str) -> tuple[str | None, SchemaIdCheck | None]:
        """The Confluent-compatible schema registry on ``schema_registry_port`` (0 = not served); its
        store also tells the ingest decoder which wire-format schema ids exist."""
        from schemas.registry import (
            PostgresSchemaStore,
            RegistryServer,
            ServerStartError,
            create_app,
            register_event_schemas,
        )

        store = PostgresSchemaStore(database_url)
        self._exit.callback(store.close)
        register_event_schemas(store)
        if not self.settings.schema_registry_port:
            return None, store.schema_exists
        server = RegistryServer(create_app(store), "127.0.0.1", self.settings.schema_registry_port)
        try:
            url = server.start()
        except ServerStartError as exc:
            raise StackError(f"schema registry: {exc}") from exc
        self._exit.callback(server.stop)
        return url, store.schema_exists

    def _start_runner(self, processor: IngestProcessor, kafka_conn: KafkaConnection, database_url: str) -> None:
        runner: ProcessorRunner[Any] = ProcessorRunner(
            processor, RunnerConfig.from_settings(self.settings, kafka_conn), session_connector(database_url),
            metrics=self.metrics)
        self.runners.append(runner)
        self._start_thread(processor.group, lambda: runner.run(self._ingest_stop), self._ingest_threads)
        self._drain = (kafka_conn, database_url, processor.group, processor.topics)

    def _curation(self, kafka_conn: KafkaConnection, database_url: str) -> CurationService:
        """The curation service (joined feedback -> ``samples``); its YAML (``FLYWHEEL_CURATION_CONFIG``)
        is read here, so a bad file stops ``up`` before anything runs."""
        from curation import CurationMetrics, CurationService, load_curation_config

        config = load_curation_config(self.settings.curation_config)
        return CurationService.from_settings(self.settings, kafka_conn, database_url, config,
                                             metrics=CurationMetrics(self.registry))

    def _run_trainer(self, kafka_conn: KafkaConnection, database_url: str) -> None:
        """One trainer consumer per declared model, each in its own thread (its own group, lock, policy,
        gates, canary controller); a model declared while the platform runs gets its trainer within
        ``fleet.MODEL_WATCH_S``. The default model's runs in this thread."""
        from curation.drift import DriftMetrics
        from serving.canary import CanaryMetrics
        from trainer.metrics import TrainerMetrics

        # one set for every model: the series are labelled by model, and a registry takes each metric once
        self._model_metrics = (TrainerMetrics(self.registry), CanaryMetrics(self.registry),
                               DriftMetrics(self.registry))
        fleet.run_per_model(self.settings, database_url, self.stop_event, self.models,
                            functools.partial(self._run_model, kafka_conn, database_url), name="flywheel-trainer",
                            start=self._start_thread)

    def _run_model(self, kafka_conn: KafkaConnection, database_url: str, spec: ModelSpec | None) -> None:
        """One model's trainer consumer, canary controller and drift monitor (by its task); MLflow, torch and
        Great Expectations load here, off the start-up path. ``spec`` None: the default model."""
        from flywheel.lifecycle import lifecycle
        from trainer.service import TrainerService

        default = spec is None or spec.name == self.settings.model_name
        s = self.settings if spec is None else models.settings_for(self.settings, spec)
        trainer_metrics, canary_metrics, drift_metrics = self._model_metrics
        with lifecycle(self.settings, kafka_conn, database_url, metrics=trainer_metrics, spec=spec) as lc:
            if default:
                self.lifecycle = lc
            data = self.bootstrap.get(s.model_name)
            if data is not None and lc.trainer.champion() is None:
                from trainer.data import read_labelled_csv, read_tabular_csv
                from trainer.pairs import read_pairs_csv

                log.info("%s has no champion yet: bootstrapping from %s", s.model_name, data)
                features = lc.trainer.features
                if lc.trainer.generation is not None:  # a generator: a CSV of prompt -> response pairs
                    result = lc.trainer.bootstrap_pairs(read_pairs_csv(data), source=data.name)
                else:
                    rows = (read_labelled_csv(data, s.labels) if features is None
                            else read_tabular_csv(data, features, s.labels))
                    result = lc.trainer.bootstrap(rows, source=data.name, kind=lc.config.policy.kinds[0])
                log.info("bootstrap of %s %s: %s", s.model_name, result.status, result.reason)
            service = TrainerService(lc.trainer, lc.config, kafka=kafka_conn, group=fleet.trainer_group(s, spec),
                                     signal_topics=[s.topics.landed, s.topics.curated],
                                     request_topic=s.topics.retrain, session_timeout_ms=s.session_timeout_ms)
            if default:
                self.trainer_ready.set()
            from serving.canary import controller_for, load_canary_config

            controller = controller_for(s, kafka_conn, database_url, load_canary_config(s.canary_config),
                                        actions=lc.actions, metrics=canary_metrics)
            self._start_thread(f"flywheel-canary.{s.model_name}", lambda: controller.run(self.stop_event))
            from curation.drift import load_drift_config
            from trainer.drift import drift_monitor_for

            drift = load_drift_config(s.drift_config)
            # by task: texts, or a tabular model's features; a generator has no drift monitor (its champion is
            # not a classifier the monitor can load)
            if drift.enabled and lc.trainer.generation is None:
                monitor = drift_monitor_for(lc, database_url, drift, drift_metrics)
                self._start_thread(f"flywheel-drift.{s.model_name}", lambda: monitor.run(self.stop_event))
            service.run(self.stop_event)

    def _serve(self, kafka_conn: KafkaConnection, database_url: str) -> None:
        """The serving API on ``serving_port``: it loads the champion announced on the models topic."""
        from serving.app import create_app, serve

        s = self.settings
        serve(s, self.stop_event, host=s.metrics_host,
              app=create_app(s, kafka=kafka_conn, database_url=database_url))

    def _start_thread(self, name: str, body: Callable[[], None], group: list[threading.Thread] | None = None
                      ) -> None:
        def target() -> None:
            try:
                body()
            except Exception:
                log.exception("%s stopped with an error; stopping the platform", name)
                self.failed.append(name)
                self.stop_event.set()

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        (self._threads if group is None else group).append(thread)

    def wait(self, timeout: float | None = None) -> bool:
        return self.stop_event.wait(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(30)
        self._threads.clear()
        self._drain_ingest()
        self._ingest_stop.set()
        for thread in self._ingest_threads:
            thread.join(30)
        self._ingest_threads.clear()
        self._exit.close()

    def _drain_ingest(self) -> None:
        """Let ingest land everything the broker held when the stop began, for at most ``drain_timeout_s``.
        Producers outside the platform may go on producing until the broker stops: with durable storage
        what they are acknowledged meanwhile lands at the next start, with memory storage it is lost."""
        if self._drain is None or not any(t.is_alive() for t in self._ingest_threads):
            return
        kafka_conn, database_url, group, topics = self._drain
        tps = [(t, p) for t in topics for p in range(self.settings.topic_partitions)]
        deadline = time.monotonic() + self.settings.drain_timeout_s
        left: int | None = None
        target: dict[tuple[str, int], int] = {}
        try:
            target = kafka.high_watermarks(kafka_conn, tps, timeout=2.0)
            cluster = kafka.cluster_id(kafka_conn, 2.0)
            while any(t.is_alive() for t in self._ingest_threads):
                with db.connect(database_url) as conn:
                    stored = offsets.load(conn, group, cluster, list(target))
                left = sum(max(0, mark - max(stored[tp], 0)) for tp, mark in target.items())
                if left == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        except (FlywheelError, psycopg.Error) as exc:  # the stop goes on: what is left lands at the next start
            log.warning("ingest drain: %s", exc)
        if left == 0 and len(target) == len(tps):
            log.info("ingest drained: every record the broker held at the stop has landed")
        else:
            log.warning("ingest stops with %s records not landed (drain_timeout_s %.0f): %s",
                        "an unknown number of" if left is None else left, self.settings.drain_timeout_s,
                        "they land at the next start" if self.settings.broker_storage == "durable"
                        or self.settings.kafka_bootstrap else "the memory broker loses them")

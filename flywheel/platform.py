"""The local platform that ``flywheel up`` runs: stack, migrations, topics, processors, /metrics.

``up`` records where everything listens in ``<data_dir>/stack.json`` so that other CLI commands find a
running local platform without extra configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from core.db import session_connector
from core.exceptions import ConfigError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import migrate
from flywheel.exceptions import StackError
from flywheel.stack import LocalStack, embedded_postgres_user, pid_alive, private_dir, write_private
from schemas.codec import SchemaIdCheck
from streams import kafka
from streams.ingest import IngestProcessor
from streams.metrics import StreamMetrics
from streams.runtime import ProcessorRunner, RunnerConfig

if TYPE_CHECKING:
    from curation import CurationService
    from flywheel.lifecycle import Lifecycle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where a running platform listens (written to ``stack.json``)."""

    pid: int
    bootstrap: str
    database_url: str
    metrics_url: str | None
    schema_registry_url: str | None
    embedded_broker: bool
    embedded_postgres: bool
    serving_url: str | None = None


def state_file(settings: FlywheelSettings) -> Path:
    return settings.data_dir / "stack.json"


def read_endpoints(settings: FlywheelSettings) -> Endpoints | None:
    path = state_file(settings)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        endpoints = Endpoints(**data)
    except (OSError, ValueError, TypeError):
        return None
    return endpoints if pid_alive(endpoints.pid) else None


def resolve(settings: FlywheelSettings) -> tuple[KafkaConnection, str]:
    """The Kafka connection and database URL for admin commands: settings first, else a running ``up``
    (its embedded broker is plaintext; an external one it used gets the security settings)."""
    running = read_endpoints(settings)
    database = (settings.database_url.get_secret_value() if settings.database_url else None) or (
        running.database_url if running else None)
    bootstrap = settings.kafka_bootstrap or (running.bootstrap if running else None)
    if not bootstrap or not database:
        missing = [n for n, v in (("FLYWHEEL_KAFKA_BOOTSTRAP", bootstrap), ("FLYWHEEL_DATABASE_URL", database))
                   if not v]
        raise ConfigError(
            f"no running local platform in {settings.data_dir} and {' / '.join(missing)} not set: "
            "start one with `flywheel up` or point the settings at your cluster")
    return endpoint_connection(settings, running), database


def endpoint_connection(settings: FlywheelSettings, running: Endpoints | None) -> KafkaConnection:
    """The connection to FLYWHEEL_KAFKA_BOOTSTRAP, else to the broker of a running ``up``."""
    if settings.kafka_bootstrap or running is None:
        return settings.kafka_connection()
    if running.embedded_broker:
        return KafkaConnection(bootstrap_servers=running.bootstrap)
    return settings.kafka_connection(running.bootstrap)


class Platform:
    """Everything ``flywheel up`` starts, in order, and stops in reverse order."""

    def __init__(self, settings: FlywheelSettings, *, on_ready: Callable[[Endpoints], None] | None = None,
                 stop_event: threading.Event | None = None) -> None:
        self.settings = settings
        self.on_ready = on_ready
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.registry = CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self._exit = contextlib.ExitStack()
        self._threads: list[threading.Thread] = []
        self.runners: list[ProcessorRunner[Any]] = []
        self.endpoints: Endpoints | None = None
        self.lifecycle: Lifecycle | None = None
        self.trainer_ready = threading.Event()
        self.failed: list[str] = []  # components that stopped the platform with an error

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
        migrate.upgrade(stack.database_url)
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
        if s.run_trainer:
            self._start_thread("flywheel-trainer", lambda: self._run_trainer(stack.kafka, stack.database_url))
        if s.serving_port:
            self._start_thread("flywheel-serving", lambda: self._serve(stack.kafka, stack.database_url))
        if self.on_ready is not None:
            self.on_ready(self.endpoints)

    def _start_schema_registry(self, database_url: str) -> tuple[str | None, SchemaIdCheck | None]:
        """The Confluent-compatible schema registry on ``schema_registry_port`` (0 = not served); its
        store also tells the ingest decoder which wire-format schema ids exist."""
        from schemas.registry import PostgresSchemaStore, RegistryServer, ServerStartError, create_app

        store = PostgresSchemaStore(database_url)
        self._exit.callback(store.close)
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
        self._start_thread(processor.group, lambda: runner.run(self.stop_event))

    def _curation(self, kafka_conn: KafkaConnection, database_url: str) -> CurationService:
        """The curation service (joined feedback -> ``samples``); its YAML (``FLYWHEEL_CURATION_CONFIG``)
        is read here, so a bad file stops ``up`` before anything runs."""
        from curation import CurationMetrics, CurationService, load_curation_config

        config = load_curation_config(self.settings.curation_config)
        return CurationService.from_settings(self.settings, kafka_conn, database_url, config,
                                             metrics=CurationMetrics(self.registry))

    def _run_trainer(self, kafka_conn: KafkaConnection, database_url: str) -> None:
        """The trainer consumer; MLflow, torch and Great Expectations load here, off the start-up path."""
        from flywheel.lifecycle import lifecycle
        from trainer.service import TrainerService

        s = self.settings
        with lifecycle(s, kafka_conn, database_url, metrics=self.registry) as lc:
            self.lifecycle = lc
            if s.bootstrap_data is not None and lc.trainer.champion() is None:
                from trainer.data import read_labelled_csv

                log.info("no champion yet: bootstrapping from %s", s.bootstrap_data)
                result = lc.trainer.bootstrap(read_labelled_csv(s.bootstrap_data, s.labels),
                                              source=s.bootstrap_data.name, kind=lc.config.policy.kinds[0])
                log.info("bootstrap %s: %s", result.status, result.reason)
            service = TrainerService(lc.trainer, lc.config, kafka=kafka_conn, group="flywheel-trainer",
                                     signal_topics=[s.topics.landed, s.topics.curated],
                                     request_topic=s.topics.retrain, session_timeout_ms=s.session_timeout_ms)
            self.trainer_ready.set()
            from serving.canary import CanaryMetrics, controller_for, load_canary_config

            controller = controller_for(s, kafka_conn, database_url, load_canary_config(s.canary_config),
                                        actions=lc.actions, metrics=CanaryMetrics(self.registry))
            self._start_thread("flywheel-canary", lambda: controller.run(self.stop_event))
            from curation.drift import DriftMetrics, load_drift_config
            from trainer.drift import drift_monitor_for

            drift = load_drift_config(s.drift_config)
            if drift.enabled:
                monitor = drift_monitor_for(lc, database_url, drift, DriftMetrics(self.registry))
                self._start_thread("flywheel-drift", lambda: monitor.run(self.stop_event))
            service.run(self.stop_event)

    def _serve(self, kafka_conn: KafkaConnection, database_url: str) -> None:
        """The serving API on ``serving_port``: it loads the champion announced on the models topic."""
        from serving.app import create_app, serve

        s = self.settings
        serve(s, self.stop_event, host=s.metrics_host,
              app=create_app(s, kafka=kafka_conn, database_url=database_url))

    def _start_thread(self, name: str, body: Callable[[], None]) -> None:
        def target() -> None:
            try:
                body()
            except Exception:
                log.exception("%s stopped with an error; stopping the platform", name)
                self.failed.append(name)
                self.stop_event.set()

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wait(self, timeout: float | None = None) -> bool:
        return self.stop_event.wait(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(30)
        self._threads.clear()
        self._exit.close()

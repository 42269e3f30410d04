"""Wiring of the model lifecycle from settings: the registry, the announcer, the trainer, and the admin
actions that move aliases and announce them (``promote``, ``rollback``) — one command, one event."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from core.db import Connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from kinds.base import Resources
from kinds.embeddings import Embedder, LayeredEmbeddingCache, MemoryEmbeddingCache, PostgresEmbeddingCache
from kinds.encoder import shared_encoder
from registry import ModelRegistry, Transition, VersionRef, open_registry, postgres_backend
from registry.announce import ModelAnnouncer, model_event
from schemas import ModelAction, ModelEvent, RetrainRequest
from streams.kafka import CheckedProducer, create_topics, producer_config
from streams.kafka import admin as kafka_admin
from trainer.config import TrainerConfig, load_trainer_config
from trainer.metrics import TrainerMetrics
from trainer.pipeline import Trainer


def registry_backend(settings: FlywheelSettings, database_url: str) -> str:
    if settings.registry_uri is not None:
        return settings.registry_uri.get_secret_value()
    return postgres_backend(database_url)


def open_model_registry(settings: FlywheelSettings, database_url: str) -> ModelRegistry:
    return open_registry(registry_backend(settings, database_url), artifact_root(settings), settings.model_name)


def artifact_root(settings: FlywheelSettings) -> Path:
    return (settings.data_dir / "mlartifacts").resolve()


@dataclass
class Lifecycle:
    """What the trainer and the admin commands share; close it to flush the producer."""

    settings: FlywheelSettings
    kafka: KafkaConnection
    config: TrainerConfig
    registry: ModelRegistry
    announcer: ModelAnnouncer
    trainer: Trainer

    def promote(self, ref: VersionRef, reason: str) -> ModelEvent:
        transition = self.registry.promote(ref, reason)
        return self.announcer.publish(self._event(transition, "promote", reason))

    def rollback(self, to: VersionRef | None, reason: str) -> ModelEvent:
        transition = self.registry.rollback(to, reason)
        return self.announcer.publish(self._event(transition, "rollback", reason))

    def request_retrain(self, request: RetrainRequest) -> None:
        """Ask the trainers (one of them takes it, once, by ``request_id``) on the retrain topic."""
        self.announcer.producer.send_all(self.settings.topics.retrain, [(request.model.encode(), request.to_json())])

    def _event(self, transition: Transition, action: ModelAction, reason: str) -> ModelEvent:
        previous = transition.from_version
        return model_event(transition.info, self.settings.model_name, action, 1.0, reason, previous)


def assemble(settings: FlywheelSettings, kafka: KafkaConnection, database_url: str, registry: ModelRegistry,
             producer: CheckedProducer, config: TrainerConfig | None = None,
             metrics: CollectorRegistry | None = None, resources: Resources | None = None) -> Lifecycle:
    """The lifecycle on a registry and a producer the caller owns (a serving pod's admin routes reuse
    the pod's registry); the topics it publishes to are created. The trainer's models are bound to
    ``resources`` (default: the shared MiniLM encoder with an in-memory cache). Nothing here changes
    process state."""
    config = config or load_trainer_config(settings.trainer_config)
    create_topics(kafka_admin(kafka), [settings.topics.models, settings.topics.retrain],
                  settings.topic_partitions)
    announcer = ModelAnnouncer(producer, settings.topics.models)
    resources = resources or Resources(embedder=Embedder(shared_encoder(), MemoryEmbeddingCache()))
    trainer = Trainer(connector=Connector(database_url), model_name=settings.model_name, labels=settings.labels,
                      config=config, registry=registry, announcer=announcer, resources=resources,
                      work_dir=(settings.data_dir / "runs").resolve(),
                      metrics=TrainerMetrics(metrics or CollectorRegistry()))
    return Lifecycle(settings, kafka, config, registry, announcer, trainer)


def platform_resources(database_url: str) -> Resources:
    """The trainer's resources on the platform: minilm-head embeddings through memory in front of the
    Postgres ``embeddings`` table, so a text is encoded once across trainer restarts (the encoder loads
    lazily, on the first text a head really needs)."""
    return Resources(embedder=Embedder(shared_encoder(), LayeredEmbeddingCache(
        MemoryEmbeddingCache(), PostgresEmbeddingCache(database_url))))


@contextlib.contextmanager
def lifecycle(settings: FlywheelSettings, kafka: KafkaConnection, database_url: str,
              config: TrainerConfig | None = None, metrics: CollectorRegistry | None = None,
              resources: Resources | None = None) -> Iterator[Lifecycle]:
    """Everything wired from settings (``config`` overrides the trainer config file and ``resources`` the
    platform's embedder, for tests)."""
    producer = CheckedProducer(producer_config(kafka))
    assembled = assemble(settings, kafka, database_url, open_model_registry(settings, database_url), producer,
                         config, metrics, resources or platform_resources(database_url))
    try:
        yield assembled
    finally:
        producer.flush(10.0)

"""Wiring of the model lifecycle from settings: the registry, the announcer, the trainer, and the admin
actions that move aliases and announce them (``promote``, ``rollback``: :class:`registry.actions.ModelActions`)
— one command, one event."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from core.db import Connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from curation.pairs import ToxicityScorer
from flywheel.models import default_spec, settings_for, trainer_config
from kinds.base import Resources
from kinds.base_models import load_base
from kinds.embeddings import Embedder, LayeredEmbeddingCache, MemoryEmbeddingCache, PostgresEmbeddingCache
from kinds.encoder import shared_encoder
from kinds.generation import GeneratorResources
from registry import ModelRegistry, VersionRef, open_from_settings
from registry.actions import ModelActions
from registry.announce import ModelAnnouncer
from schemas import ModelEvent, RetrainRequest
from streams.kafka import CheckedProducer, create_topics, producer_config
from streams.kafka import admin as kafka_admin
from tasks import ModelSpec, task_of
from trainer.config import TrainerConfig
from trainer.metrics import TrainerMetrics
from trainer.pipeline import Trainer


@dataclass
class Lifecycle:
    """What the trainer and the admin commands share; close it to flush the producer. Promote, rollback
    and retrain requests are :class:`registry.actions.ModelActions` (serving pods use them too)."""

    settings: FlywheelSettings
    kafka: KafkaConnection
    config: TrainerConfig
    registry: ModelRegistry
    announcer: ModelAnnouncer
    trainer: Trainer
    actions: ModelActions

    def promote(self, ref: VersionRef, reason: str) -> ModelEvent:
        return self.actions.promote(ref, reason)

    def rollback(self, to: VersionRef | None, reason: str) -> ModelEvent:
        return self.actions.rollback(to, reason)

    def request_retrain(self, request: RetrainRequest) -> None:
        """Ask the trainers (one of them takes it, once, by ``request_id``) on the retrain topic."""
        self.actions.request_retrain(request)


def assemble(settings: FlywheelSettings, kafka: KafkaConnection, database_url: str, registry: ModelRegistry,
             producer: CheckedProducer, config: TrainerConfig | None = None,
             metrics: CollectorRegistry | TrainerMetrics | None = None, resources: Resources | None = None,
             spec: ModelSpec | None = None, toxicity: Callable[[], ToxicityScorer] | None = None) -> Lifecycle:
    """The lifecycle of one model (``spec``, default: the settings' default text model) on a registry and
    a producer the caller owns (a serving pod's admin routes reuse the pod's registry); the topics it
    publishes to are created. The trainer's models are bound to ``resources`` (default: the shared MiniLM
    encoder with an in-memory cache). Nothing here changes process state."""
    spec = spec or default_spec(settings)
    config = config or trainer_config(spec, settings)
    settings = settings_for(settings, spec)
    create_topics(kafka_admin(kafka), [settings.topics.models, settings.topics.retrain],
                  settings.topic_partitions)
    announcer = ModelAnnouncer(producer, settings.topics.models)
    resources = resources or Resources(embedder=Embedder(shared_encoder(), MemoryEmbeddingCache()))
    trainer = Trainer(connector=Connector(database_url), model_name=spec.name, labels=spec.labels,
                      task=task_of(spec), features=spec.features,
                      config=config, registry=registry, announcer=announcer, resources=resources,
                      work_dir=(settings.data_dir / "runs").resolve(),
                      metrics=metrics if isinstance(metrics, TrainerMetrics)
                      else TrainerMetrics(metrics or CollectorRegistry()),
                      generator_resources=functools.partial(_generator_resources, settings.data_dir.resolve()),
                      toxicity=toxicity, description=spec.description)
    actions = ModelActions(registry, announcer, settings.model_name, settings.topics.retrain)
    return Lifecycle(settings, kafka, config, registry, announcer, trainer, actions)


def _generator_resources(data_dir: Path, base: str) -> GeneratorResources:
    """A generator's base model, prepared once into the data dir and shared by the process."""
    return GeneratorResources(base=load_base(base, data_dir))


def platform_resources(database_url: str) -> Resources:
    """The trainer's resources on the platform: minilm-head embeddings through memory in front of the
    Postgres ``embeddings`` table, so a text is encoded once across trainer restarts (the encoder loads
    lazily, on the first text a head really needs)."""
    return Resources(embedder=Embedder(shared_encoder(), LayeredEmbeddingCache(
        MemoryEmbeddingCache(), PostgresEmbeddingCache(database_url))))


@contextlib.contextmanager
def lifecycle(settings: FlywheelSettings, kafka: KafkaConnection, database_url: str,
              config: TrainerConfig | None = None, metrics: CollectorRegistry | TrainerMetrics | None = None,
              resources: Resources | None = None, spec: ModelSpec | None = None,
              toxicity: Callable[[], ToxicityScorer] | None = None) -> Iterator[Lifecycle]:
    """Everything of one model (``spec``, default: the default text model) wired from settings
    (``config`` overrides its trainer config, ``resources`` the platform's embedder and ``toxicity`` a
    generator's toxicity check, for tests).
    ``metrics``: a registry to create the trainer's metrics on, or metrics several models share (their
    series are labelled by model; a registry refuses the same metric twice)."""
    producer = CheckedProducer(producer_config(kafka))
    model_settings = settings_for(settings, spec) if spec is not None else settings
    assembled = assemble(settings, kafka, database_url, open_from_settings(model_settings, database_url), producer,
                         config, metrics, resources or platform_resources(database_url), spec, toxicity)
    try:
        yield assembled
    finally:
        producer.flush(10.0)

"""Everything a serving pod runs beside its routes, built from settings (or injected) and started /
stopped by the app's lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from kinds._threads import SpareCores
from registry import ModelRegistry
from serving.adapters import served_threads
from serving.batching import MicroBatcher, pod_embedder
from serving.first_serve import FirstServes
from serving.genpool import GenerationPool
from serving.metrics import ServingMetrics
from serving.publisher import FeedbackPublisher, PredictionPublisher
from serving.runtime import WARMUP_ROWS, WARMUP_TEXTS, ModelLoader, Runtime
from serving.watcher import ModelWatcher
from tasks import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class Services:
    """One hosted model's collaborators. ``settings`` is the model's view (its name and labels); ``spec``
    its declaration (None: the default text model as the settings describe it). The publishers, the
    micro-batcher and the generation pool may be shared by every model of the pod."""

    settings: FlywheelSettings
    metrics: ServingMetrics
    registry: ModelRegistry
    runtime: Runtime
    publisher: PredictionPublisher
    feedback: FeedbackPublisher
    watcher: ModelWatcher | None
    batcher: MicroBatcher
    generation: GenerationPool
    spec: ModelSpec | None = None
    owns_shared: bool = True  # starts and closes the publishers and the batcher (the pod's first model)
    first_serves: FirstServes | None = None  # data-to-deploy records (None: no database, e.g. some tests)
    threads: int | SpareCores = 1  # a generator's intra-op threads (serving.adapters.served_threads)

    @property
    def generate_threads(self) -> int:
        """The intra-op threads this model's generations run on: the fixed count, or what auto last gave."""
        return self.threads.last if isinstance(self.threads, SpareCores) else self.threads

    @property
    def is_default(self) -> bool:
        """The pod's default model (today's routes): the one that owns the shared publishers and batcher."""
        return self.owns_shared

    @property
    def task(self) -> str:
        return self.spec.task if self.spec is not None else "text-classification"

    @classmethod
    def build(cls, settings: FlywheelSettings, metrics: ServingMetrics, kafka: KafkaConnection, registry: ModelRegistry,
              publisher: PredictionPublisher | None = None, feedback: FeedbackPublisher | None = None,
              watch: bool = True, *, spec: ModelSpec | None = None, shared: Services | None = None) -> Services:
        """A model's services; with ``shared``, its publishers and batcher are that model's (one pod)."""
        if spec is not None:
            settings = settings.model_copy(update={"model_name": spec.name, "labels": spec.labels})
        warmup = WARMUP_TEXTS if spec is None or spec.task == "text-classification" else WARMUP_ROWS
        generates = spec is not None and spec.task == "text-generation"
        threads = served_threads(settings.generate_threads) if generates else 1  # one SpareCores per model
        loader = ModelLoader(registry, pod_embedder(settings, metrics), warmup, settings.data_dir, threads)
        runtime = Runtime(loader, metrics)
        return cls(
            settings, metrics, registry, runtime,
            publisher or (shared.publisher if shared else PredictionPublisher(kafka, settings.topics, metrics)),
            feedback or (shared.feedback if shared else FeedbackPublisher(kafka, settings.topics)),
            ModelWatcher(settings, kafka, runtime, metrics) if watch else None,
            shared.batcher if shared else MicroBatcher.of(settings, metrics),
            shared.generation if shared else GenerationPool.of(settings, metrics),
            spec, owns_shared=shared is None, first_serves=shared.first_serves if shared else None, threads=threads,
        )

    def start(self) -> None:
        if self.owns_shared:
            self.batcher.start()
            self.publisher.start()
        if self.watcher is not None:
            self.watcher.start()

    def close(self, timeout: float = 5.0) -> None:
        if self.watcher is not None:
            self.watcher.stop(timeout)
        if self.owns_shared:
            self.batcher.close(timeout)  # before the publisher: the last predictions still publish
            self.generation.close()
            self.publisher.close(timeout)
            self.feedback.close_quietly(timeout)
            if self.first_serves is not None:
                self.first_serves.close()

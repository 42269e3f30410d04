"""Everything a serving pod runs beside its routes, built from settings (or injected) and started /
stopped by the app's lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from registry import ModelRegistry
from serving.batching import MicroBatcher, pod_embedder
from serving.metrics import ServingMetrics
from serving.publisher import FeedbackPublisher, PredictionPublisher
from serving.runtime import ModelLoader, Runtime
from serving.watcher import ModelWatcher

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: FlywheelSettings
    metrics: ServingMetrics
    registry: ModelRegistry
    runtime: Runtime
    publisher: PredictionPublisher
    feedback: FeedbackPublisher
    watcher: ModelWatcher | None
    batcher: MicroBatcher

    @classmethod
    def build(cls, settings: FlywheelSettings, metrics: ServingMetrics, kafka: KafkaConnection, registry: ModelRegistry,
              publisher: PredictionPublisher | None = None, feedback: FeedbackPublisher | None = None,
              watch: bool = True) -> Services:
        runtime = Runtime(ModelLoader(registry, pod_embedder(settings, metrics)), metrics)
        return cls(
            settings, metrics, registry, runtime,
            publisher or PredictionPublisher(kafka, settings.topics, metrics),
            feedback or FeedbackPublisher(kafka, settings.topics),
            ModelWatcher(settings, kafka, runtime, metrics) if watch else None,
            MicroBatcher.of(settings, metrics),
        )

    def start(self) -> None:
        self.batcher.start()
        self.publisher.start()
        if self.watcher is not None:
            self.watcher.start()

    def close(self, timeout: float = 5.0) -> None:
        if self.watcher is not None:
            self.watcher.stop(timeout)
        self.batcher.close(timeout)  # before the publisher: the last predictions still publish
        self.publisher.close(timeout)
        self.feedback.close_quietly(timeout)

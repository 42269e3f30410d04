"""Prometheus metrics of the trainer, on an injected registry (the platform's, or a test's own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.runs = Counter("flywheel_training_runs", "Training runs by outcome",
                            ["model", "mode", "trigger", "status"], registry=r)
        self.run_seconds = Histogram("flywheel_training_run_seconds", "Duration of training runs", ["model", "mode"],
                                     buckets=(1, 2, 5, 10, 20, 45, 90, 180, 600, 1800), registry=r)
        self.verdicts = Counter("flywheel_gate_verdicts", "Gate verdicts on candidates",
                                ["model", "gate", "kind", "verdict"], registry=r)
        self.champion = Gauge("flywheel_champion_version", "MLflow version number of the champion", ["model"],
                              registry=r)
        self.announcements = Counter("flywheel_model_announcements", "Events published on the models topic",
                                     ["model", "action"], registry=r)

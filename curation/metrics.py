"""Prometheus metrics of the curation service, registered on an injected registry (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from curation.pipeline import BatchResult

_BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CurationMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.samples = Counter(
            "flywheel_curation_samples", "Samples written, by status; kind new = first verdict, recurated = a "
            "stored sample whose verdict changed", ["status", "kind"], registry=r)
        self.reasons = Counter("flywheel_curation_reasons", "Reasons on the samples written", ["reason"], registry=r)
        self.disagreements = Counter(
            "flywheel_curation_disagreements", "New samples whose user contradicts the served prediction "
            "(thumbs down included)", registry=r)
        self.batch_seconds = Histogram("flywheel_curation_batch_seconds", "Read-score-commit time per batch",
                                       buckets=_BATCH_BUCKETS, registry=r)
        self.batch_rows = Histogram("flywheel_curation_batch_rows", "Feedback rows per committed batch",
                                    buckets=(1, 10, 100, 500, 1000, 5000, 20000), registry=r)
        self.lag = Gauge("flywheel_curation_lag_rows", "Joined feedback above the watermark not curated yet",
                         registry=r)
        self.watermark = Gauge("flywheel_curation_watermark", "Highest feedback id curated", registry=r)
        self.passes = Counter("flywheel_curation_passes", "Curation passes by outcome (curated, idle, busy, failed)",
                              ["outcome"], registry=r)
        self.bad_signals = Counter("flywheel_curation_bad_signals", "Records on the landed topic that are not "
                                   "Landed signals (skipped)", registry=r)
        self.signal_errors = Counter("flywheel_curation_signal_errors", "Curated signals the broker did not "
                                     "acknowledge (the trainer reconciles on its timer)", registry=r)

    def record(self, result: BatchResult, seconds: float) -> None:
        for status, n in result.new.items():
            self.samples.labels(status, "new").inc(n)
        for status, n in result.changed.items():
            self.samples.labels(status, "recurated").inc(n)
        for reason, n in result.reasons.items():
            self.reasons.labels(reason).inc(n)
        self.disagreements.inc(result.disagreements)
        self.batch_seconds.observe(seconds)
        self.batch_rows.observe(sum(result.new.values()))
        self.watermark.set(result.watermark)

"""Prometheus metrics of a stream processor, registered on an injected registry (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.base import Outcome

_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("flywheel_stream_consumed", "Records consumed", ["group", "topic"], registry=r)
        self.landed = Counter("flywheel_stream_landed", "Rows landed in Postgres", ["group", "kind"], registry=r)
        self.duplicates = Counter(
            "flywheel_stream_duplicates", "Records recognised as duplicates", ["group", "kind"], registry=r)
        self.dead_letters = Counter(
            "flywheel_stream_dead_letters", "Records dead-lettered, by reason", ["group", "reason"], registry=r)
        self.joined = Counter("flywheel_stream_joined", "Feedback joined to its prediction", ["group"], registry=r)
        self.pending = Counter(
            "flywheel_stream_pending", "Feedback landed before its prediction (waiting)", ["group"], registry=r)
        self.orphans = Counter(
            "flywheel_stream_orphans", "Feedback whose prediction never came in time", ["group"], registry=r)
        self.replayed = Counter(
            "flywheel_stream_replayed_skipped", "Redelivered records already committed", ["group"], registry=r)
        self.db_retries = Counter(
            "flywheel_stream_db_retries", "Batch attempts retried after a database error", ["group"], registry=r)
        self.rebalances = Counter("flywheel_stream_rebalances", "Partition assignment changes", ["group"], registry=r)
        self.dlq_publish_failures = Counter(
            "flywheel_stream_dlq_publish_failures", "Dead letters the DLQ topic refused for good (kept in Postgres)",
            ["group"], registry=r)
        self.insert_retries = Counter(
            "flywheel_stream_insert_retries",
            "Batches whose INSERT without ON CONFLICT met an existing row and ran again with it", ["group", "table"],
            registry=r)
        self.signal_errors = Counter(
            "flywheel_stream_signal_errors", "Wake-up signals that could not be queued", ["group"], registry=r)
        self.batch_seconds = Histogram(
            "flywheel_stream_batch_seconds", "Decode-to-commit time per batch", ["group"],
            buckets=_BATCH_BUCKETS, registry=r)
        self.batch_records = Histogram(
            "flywheel_stream_batch_records", "Records per committed batch", ["group"],
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000), registry=r)
        self.lag = Gauge(
            "flywheel_stream_lag", "High watermark (from Fetch) minus position", ["group", "topic", "partition"],
            registry=r)
        self.assigned = Gauge("flywheel_stream_assigned_partitions", "Partitions assigned", ["group"], registry=r)

    def record(self, group: str, outcome: Outcome) -> None:
        """Add a committed outcome: ``landed:<kind>``, ``duplicates:<kind>``, ``dead_letters:<reason>``,
        ``insert_retries:<table>``, ``joined``, ``pending``, ``orphans``, ``replayed``."""
        for key, n in outcome.counts.items():
            if not n:
                continue
            name, _, label = key.partition(":")
            if name == "landed":
                self.landed.labels(group, label).inc(n)
            elif name == "duplicates":
                self.duplicates.labels(group, label).inc(n)
            elif name == "dead_letters":
                self.dead_letters.labels(group, label).inc(n)
            elif name == "insert_retries":
                self.insert_retries.labels(group, label).inc(n)
            elif name in ("joined", "pending", "orphans", "replayed"):
                metric = {"joined": self.joined, "pending": self.pending, "orphans": self.orphans,
                          "replayed": self.replayed}[name]
                metric.labels(group).inc(n)

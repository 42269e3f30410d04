"""Stream processors: a small runtime on confluent-kafka with exactly-once landing in Postgres."""

from streams.base import Item, Outcome, Processor, Signal
from streams.exceptions import DeliveryError, KafkaUnavailable, OffsetGap, StreamError, TopicAdminError
from streams.ingest import IngestProcessor
from streams.metrics import StreamMetrics
from streams.producer import EventProducer, FeedbackProducer
from streams.runtime import ProcessorRunner, RunnerConfig

__all__ = [
    "DeliveryError",
    "EventProducer",
    "FeedbackProducer",
    "IngestProcessor",
    "Item",
    "KafkaUnavailable",
    "OffsetGap",
    "Outcome",
    "Processor",
    "ProcessorRunner",
    "RunnerConfig",
    "Signal",
    "StreamError",
    "StreamMetrics",
    "TopicAdminError",
]

"""Errors of the ``streams`` package. Each carries what a caller needs to act on it."""

from __future__ import annotations

from flywheel.exceptions import FlywheelError


class StreamError(FlywheelError):
    """Base of the streams package's errors."""


class KafkaUnavailable(StreamError):
    """The broker did not answer; ``retry_after`` is a sensible wait before trying again."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"Kafka is unavailable: {detail}")
        self.retry_after = retry_after


class DeliveryError(StreamError):
    """A produced record was not acknowledged by the broker."""

    def __init__(self, topic: str, detail: str, failed: int = 1, *, permanent: bool = False) -> None:
        super().__init__(f"{failed} record(s) to {topic!r} were not delivered: {detail}")
        self.topic = topic
        self.failed = failed
        self.permanent = permanent  # the broker will refuse it again (too large, not authorised, ...)


class OffsetGap(StreamError):
    """A batch starts after the offset Postgres says comes next: records would be skipped."""

    def __init__(self, topic: str, partition: int, stored: int, first: int) -> None:
        super().__init__(f"{topic}[{partition}]: batch starts at {first} but the stored next offset is {stored}")
        self.topic = topic
        self.partition = partition
        self.stored = stored
        self.first = first


class TopicAdminError(StreamError):
    """A topic administration request failed; ``topic`` names which one."""

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(f"topic {topic!r}: {detail}")
        self.topic = topic
        self.detail = detail

"""Errors of the ``streams`` package. Each carries what a caller needs to act on it.
``KafkaUnavailable`` is the foundation's (:mod:`core.exceptions`), re-exported here."""

from __future__ import annotations

from core.exceptions import FlywheelError, KafkaUnavailable

__all__ = ["DeliveryError", "KafkaUnavailable", "OffsetGap", "StreamError", "TopicAdminError"]


class StreamError(FlywheelError):
    """Base of the streams package's errors."""


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

"""The one error root of Flywheel; every package's own exceptions derive from it."""

from __future__ import annotations


class FlywheelError(Exception):
    """Base of every error Flywheel raises on purpose."""


class ConfigError(FlywheelError):
    """The settings are inconsistent or point at something that does not exist."""


class StackError(FlywheelError):
    """A local service (broker, Postgres) could not be started, reached or stopped."""


class BrokerUnavailable(StackError):
    """The Kafka-protocol broker did not answer a metadata request in time."""

    def __init__(self, bootstrap: str, detail: str) -> None:
        super().__init__(f"Kafka broker at {bootstrap} is unreachable: {detail}")
        self.bootstrap = bootstrap


class DatabaseUnavailable(StackError):
    """Postgres could not be reached; ``retry_after`` says when trying again makes sense."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"Postgres is unreachable: {detail}")
        self.retry_after = retry_after

"""Errors of the ``schemas`` package."""

from __future__ import annotations

from core.exceptions import FlywheelError
from schemas.reasons import Reason


class SchemaError(FlywheelError):
    """Base of the schemas package's errors."""


class DecodeError(SchemaError):
    """A record could not be turned into a valid event; ``reason`` is the machine-readable code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidEvent(SchemaError, ValueError):
    """An event could not be built from the given fields (raised by clients before anything is sent)."""

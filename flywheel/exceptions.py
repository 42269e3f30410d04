"""Errors of the app layer (the local stack and ``flywheel up``)."""

from __future__ import annotations

from core.exceptions import FlywheelError


class StackError(FlywheelError):
    """A local service (broker, Postgres) could not be started, reached or stopped."""

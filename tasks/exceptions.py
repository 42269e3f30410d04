"""Errors of the task layer: a model spec that cannot be used, and an input that breaks its model's
contract (carrying the dead-letter reason the stream processors record)."""

from __future__ import annotations

from core.exceptions import FlywheelError
from schemas.reasons import Reason


class TaskError(FlywheelError):
    """Base of the task layer's errors."""


class SpecError(TaskError):
    """A model spec is invalid or names what does not exist (task, kind, label)."""


class UnknownModel(TaskError):
    """No model of that name is declared."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no model named {name!r} is declared (flywheel models list)")
        self.name = name


class InputRejected(TaskError):
    """An input or output does not match its model's contract; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

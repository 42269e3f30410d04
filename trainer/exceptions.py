"""Errors of the ``trainer`` package (the gates' are in :mod:`trainer.gates.exceptions`)."""

from __future__ import annotations

from core.exceptions import FlywheelError


class TrainerError(FlywheelError):
    """Base of the trainer package's errors: a run cannot start or finish."""

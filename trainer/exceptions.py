"""Errors of the ``trainer`` package."""

from __future__ import annotations

from pathlib import Path

from flywheel.exceptions import FlywheelError


class TrainerError(FlywheelError):
    """Base of the trainer package's errors."""


class NotFitted(TrainerError):
    """predict/save/partial_fit was called on a model that was never fitted."""


class ArtifactError(TrainerError):
    """A saved model cannot be loaded; ``path`` names the artifact directory or file."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class TamperedArtifact(ArtifactError):
    """A file of a saved model does not match the sha256 recorded in its manifest."""


class UnknownLabel(TrainerError):
    """Training data names a label outside the model's label set (incremental training keeps it)."""

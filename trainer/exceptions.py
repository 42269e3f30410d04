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


class EncoderError(TrainerError):
    """The sentence encoder's files cannot be found or loaded."""


class EncoderMismatch(ArtifactError):
    """A head meets an encoder other than the one its embeddings came from; ``expected`` is the head's
    encoder, ``actual`` the one offered. Retrain the head, or use the encoder it was trained with."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(path, f"the head was trained on encoder {expected!r}, not {actual!r}")
        self.expected = expected
        self.actual = actual


class EmbeddingCacheError(TrainerError):
    """The embedding cache's store failed (a query error, or a stored vector of the wrong size)."""

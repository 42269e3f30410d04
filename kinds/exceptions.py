"""Errors of the ``kinds`` package: the model-kind contract and its artifacts."""

from __future__ import annotations

from pathlib import Path

from core.exceptions import FlywheelError


class KindError(FlywheelError):
    """Base of the kinds package's errors."""


class NotFitted(KindError):
    """predict/save/partial_fit was called on a model that was never fitted."""


class ArtifactError(KindError):
    """A saved model cannot be loaded; ``path`` names the artifact directory or file."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class TamperedArtifact(ArtifactError):
    """A file of a saved model does not match the sha256 recorded for it (in its manifest, or by the
    registry). ``model`` and ``version`` name the registered version when the registry found it."""

    def __init__(self, path: Path, detail: str, *, model: str | None = None, version: str | None = None) -> None:
        where = "" if model is None else f"model {model!r} version {version}: "
        super().__init__(path, where + detail)
        self.model = model
        self.version = version


class UnknownLabel(KindError):
    """Training data names a label outside the model's label set (incremental training keeps it)."""


class EncoderError(KindError):
    """The sentence encoder's files cannot be found or loaded."""


class EncoderMismatch(ArtifactError):
    """A head meets an encoder other than the one its embeddings came from; ``expected`` is the head's
    encoder, ``actual`` the one offered. Retrain the head, or use the encoder it was trained with."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(path, f"the head was trained on encoder {expected!r}, not {actual!r}")
        self.expected = expected
        self.actual = actual


class EmbeddingCacheError(KindError):
    """The embedding cache's store failed (a query error, or a stored vector of the wrong size)."""


class BaseModelError(KindError):
    """A generator's base model cannot be found, converted or loaded (or its files changed since they were
    pinned); ``name`` is the base model."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"base model {name!r}: {detail}")
        self.name = name
        self.detail = detail

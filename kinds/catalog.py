"""The registry of model kinds, and loading any saved model by the kind its manifest names."""

from __future__ import annotations

from pathlib import Path

from kinds.base import ModelKind, read_manifest
from kinds.exceptions import ArtifactError
from kinds.minilm import MiniLMHead
from kinds.tfidf import TfidfLogReg

KINDS: dict[str, type[ModelKind]] = {cls.kind: cls for cls in (TfidfLogReg, MiniLMHead)}


def create(kind: str, **params: object) -> ModelKind:
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ArtifactError(Path(kind), f"unknown model kind; known: {sorted(KINDS)}") from None
    return cls(**params)


def load_model(directory: Path) -> ModelKind:
    """Verify every file against the manifest's sha256, then rebuild the model it describes."""
    manifest = read_manifest(directory)
    model = create(manifest["kind"], **manifest["params"])
    model.labels = tuple(manifest["labels"])
    model._load_files(directory)
    return model

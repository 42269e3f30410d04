"""Checking a fetched artifact against what was registered."""

from __future__ import annotations

from pathlib import Path

import trainer.exceptions
from registry.exceptions import TamperedArtifact
from registry.types import ModelVersionInfo
from trainer.base import artifact_sha256, read_manifest


def verify_artifact(info: ModelVersionInfo, directory: Path) -> None:
    """Raise :class:`TamperedArtifact` unless the manifest in ``directory`` has the registered sha256
    and every file it lists has the sha256 the manifest records."""
    try:
        digest = artifact_sha256(directory)
    except OSError as exc:
        raise TamperedArtifact(info.model, info.version, directory, f"unreadable manifest: {exc}") from exc
    if digest != info.sha256:
        raise TamperedArtifact(info.model, info.version, directory,
                               f"manifest sha256 {digest} differs from the registered {info.sha256}")
    try:
        read_manifest(directory)
    except trainer.exceptions.ArtifactError as exc:
        raise TamperedArtifact(info.model, info.version, exc.path, exc.detail) from exc

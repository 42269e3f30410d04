"""Checking a fetched artifact against what was registered."""

from __future__ import annotations

from pathlib import Path

from kinds.base import artifact_sha256, read_manifest
from kinds.exceptions import ArtifactError, TamperedArtifact
from registry.types import ModelVersionInfo


def verify_artifact(info: ModelVersionInfo, directory: Path) -> None:
    """Raise :class:`TamperedArtifact` unless the manifest in ``directory`` has the registered sha256
    and every file it lists has the sha256 the manifest records."""
    where = {"model": info.model, "version": info.version}
    try:
        digest = artifact_sha256(directory)
    except OSError as exc:
        raise TamperedArtifact(directory, f"unreadable manifest: {exc}", **where) from exc
    if digest != info.sha256:
        detail = f"manifest sha256 {digest} differs from the registered {info.sha256}"
        raise TamperedArtifact(directory, detail, **where)
    try:
        read_manifest(directory)
    except ArtifactError as exc:
        raise TamperedArtifact(exc.path, exc.detail, **where) from exc
